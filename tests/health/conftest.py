"""Two real agents on loopback for the health tests (CPU, shared token)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from artifex_agent.local_cluster import LocalCluster
from tests.processes import started

TOKEN = "health-token-3c1a"


@pytest.fixture(scope="session")
def health_pair(tmp_path_factory: pytest.TempPathFactory, models_root: Path) -> Iterator[LocalCluster]:
    """Agents 'gen' and 'post' on 127.0.0.1 with the tiny models; device cpu (no GPU demanded)."""
    workdir = tmp_path_factory.mktemp("health-pair")
    # The session's tiny checkpoints, not a second build (the agents only read them).
    (workdir / "models").symlink_to(models_root, target_is_directory=True)
    agents = {"gen": {"prefer": ["generate"], "device": "cpu"}, "post": {"prefer": ["post"], "device": "cpu"}}
    with started(LocalCluster(workdir, agents=agents, token=TOKEN)) as cluster:
        yield cluster
