"""The seed's cluster (examples/cluster.toml) rendered once per module."""

from __future__ import annotations

import shutil
import subprocess
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


def assert_samba_accepts(blocks: str, tmp_path: Path) -> None:
    """testparm (where Samba is installed) reads the rendered share blocks without an unknown parameter."""
    if shutil.which("testparm"):
        path = tmp_path / "smb.conf"
        path.write_text("[global]\n   workgroup = WORKGROUP\n" + blocks)
        out = subprocess.run(["testparm", "-s", str(path)], capture_output=True, text=True)
        assert out.returncode == 0 and "Unknown parameter" not in out.stderr, out.stderr
