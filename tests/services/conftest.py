"""Two real agents (child processes on 127.0.0.1) shared by the service tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from artifex_agent.local_cluster import LocalCluster

TOKEN = "test-token-7d1f"


@pytest.fixture(scope="session")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Agents 'gen' and 'post' with a shared token, serving the tiny two-expert model."""
    with LocalCluster(tmp_path_factory.mktemp("pair"), token=TOKEN) as cluster:
        yield cluster


def outputs(cluster: LocalCluster, agent: str = "post") -> Path:
    return cluster.workdir / "outputs" / agent
