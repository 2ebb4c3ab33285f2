"""The seed's cluster (examples/cluster.toml) rendered once per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from artifex_agent.config import ClusterConfig
from artifex_agent.render import render_cluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cluster.toml"


@pytest.fixture(scope="module")
def example() -> ClusterConfig:
    return ClusterConfig.load(EXAMPLE)


@pytest.fixture(scope="module")
def rendered(example: ClusterConfig) -> dict[str, str]:
    """Relative path -> content."""
    return {f.path: f.content for f in render_cluster(example)}


def body(text: str) -> list[str]:
    """The lines that are not comments or blank."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
