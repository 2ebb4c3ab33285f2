"""`artifex-agent submit --split ... --decode-on ...` in direct mode, against two real agents."""

from __future__ import annotations

from pathlib import Path

import pytest

from artifex_agent.cli.main import main
from artifex_agent.local_cluster import LocalCluster, write_cluster_toml
from tests.split.conftest import TOKEN


def _config(duo: LocalCluster, tmp_path: Path) -> Path:
    """A cluster file naming the agents' real ports (LocalCluster's own says port 0)."""
    agents = {name: {"listen": duo.address(name)} for name in ("a", "b")}
    return write_cluster_toml(tmp_path / "cluster.toml", agents, security={"token": TOKEN})


def _submit(duo: LocalCluster, tmp_path: Path, *flags: str) -> int:
    return main(["submit", "--config", str(_config(duo, tmp_path)), "--generate-on", "a", "--post-on", "b",
                 "--model", duo.model, "--size", "32x32", "--frames", "5", "--steps", "4", "--guidance", "3",
                 "--seed", "2", "--no-progress", *flags, "a red fox running"])


@pytest.mark.parametrize("split, decode_on, words", [
    ("experts", "post", "expert split on a + b"),
    ("cfg", "generate", "CFG-parallel on a + b"),
    ("auto", "generate", "CFG-parallel on a + b"),
])
def test_submit_runs_one_job_on_both_agents(duo: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture,
                                            split: str, decode_on: str, words: str) -> None:
    name = f"cli/{split}-{decode_on}"
    assert _submit(duo, tmp_path, "--split", split, "--decode-on", decode_on, "--output", name) == 0
    out = capsys.readouterr().out
    assert words in out
    assert (duo.workdir / "outputs" / "b" / f"{name}.mp4").is_file()


def test_submit_refuses_cfg_parallel_without_guidance(duo: LocalCluster, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    assert _submit(duo, tmp_path, "--split", "cfg", "--guidance", "1", "--output", "cli/nope") == 1
    assert "CFG-parallel needs guidance > 1" in capsys.readouterr().err
