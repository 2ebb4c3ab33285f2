"""Session fixtures shared by the whole suite: the tiny Wan2.2 checkpoints, built once, offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing in the tests may reach a hub: a download attempt must fail at once, not hang.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# Model folder names under `models_root`, by tiny checkpoint variant.
TINY_MODELS = {
    "t2v": "wan2.2-tiny-t2v",
    "t2v-a14b": "wan2.2-tiny-t2v-a14b",
    "i2v-a14b": "wan2.2-tiny-i2v-a14b",
    "ti2v": "wan2.2-tiny-ti2v",
}


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models root holding every tiny checkpoint variant (read-only by convention: copy before changing)."""
    import torch

    from artifex_agent.engines.checkpoint import ensure_tiny_checkpoint

    # Two shared cores: more torch threads only contend.
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    for variant, name in TINY_MODELS.items():
        ensure_tiny_checkpoint(root, name, variant=variant)  # type: ignore[arg-type]
    return root
