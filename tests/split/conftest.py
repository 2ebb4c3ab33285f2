"""Fixtures for split jobs: the tiny two-expert checkpoint (built once) and two real agents serving it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifex_agent.local_cluster import DEMO_MODEL, LocalCluster
from tests.processes import started

TOKEN = "split-token-5e2a"
# Same folder name on both agents, other weights on 'b': a mismatched peer.
ODD = "wan2.2-tiny-odd"
# Only agent 'a' has it: 'b' cannot decode its latents.
ONLY_A = "wan2.2-tiny-only-a"
# A one-expert model (Wan2.1 / TI2V-5B style): CFG-parallel works, an expert split does not.
ONE_EXPERT = "wan2.2-tiny-t2v"
# LoRAs in both agents' loras/ folders, for the high-noise and the low-noise expert.
HIGH_LORA, LOW_LORA = "split-high", "split-low"


@pytest.fixture(scope="session")
def a14b_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models root with the tiny two-expert checkpoint and a one-expert one (the split tests need no other)."""
    import torch

    from artifex_agent.engines.checkpoint import ensure_tiny_checkpoint

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("a14b-models")
    ensure_tiny_checkpoint(root, DEMO_MODEL, variant="t2v-a14b")
    ensure_tiny_checkpoint(root, ONE_EXPERT, variant="t2v")
    from tests.lora_fixture import write_tiny_lora

    for seed, name in enumerate((HIGH_LORA, LOW_LORA), start=1):
        write_tiny_lora(root / "loras" / f"{name}.safetensors", root / DEMO_MODEL / "transformer", seed=seed)
    return root


@pytest.fixture(scope="session")
def odd_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same architecture as the tiny two-expert checkpoint, other random weights."""
    from artifex_agent.engines.checkpoint import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("odd") / ODD, variant="t2v-a14b", seed=1)


@pytest.fixture(scope="session")
def duo(tmp_path_factory: pytest.TempPathFactory, a14b_root: Path, odd_model: Path) -> Iterator[LocalCluster]:
    """Agents 'a' and 'b' in their own processes, each with a models root of links to the shared checkpoints."""
    work = tmp_path_factory.mktemp("duo")
    roots = {name: work / f"models-{name}" for name in ("a", "b")}
    for root in roots.values():
        root.mkdir()
        for model in (DEMO_MODEL, ONE_EXPERT):
            (root / model).symlink_to(a14b_root / model, target_is_directory=True)
        shutil.copytree(a14b_root / "loras", root / "loras")
    (roots["a"] / ODD).symlink_to(a14b_root / DEMO_MODEL, target_is_directory=True)
    (roots["a"] / ONLY_A).symlink_to(a14b_root / DEMO_MODEL, target_is_directory=True)
    (roots["b"] / ODD).symlink_to(odd_model, target_is_directory=True)
    # LocalCluster finds its checkpoint under workdir/models and builds nothing.
    (work / "models").symlink_to(roots["a"], target_is_directory=True)
    with started(LocalCluster(work, agents={"a": {}, "b": {"models_root": str(roots["b"])}}, token=TOKEN)) as cluster:
        yield cluster
