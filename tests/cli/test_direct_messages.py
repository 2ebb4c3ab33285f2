"""Direct mode (--generate-on/--post-on) and `demo` as a new user meets them: what an error says, where it
starts, and progress bars that end full."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from artifex_agent.cli.main import main
from artifex_agent.errors import ExitCode
from artifex_agent.local_cluster import DEMO_MODEL, LocalCluster, free_port, write_cluster_toml


def test_an_agent_that_is_down_is_named_with_where_and_what_to_check(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    config = write_cluster_toml(tmp_path / "cluster.toml", {"pc1": {"listen": f"127.0.0.1:{port}"},
                                                            "pc2": {"listen": f"127.0.0.1:{free_port()}"}})
    code = main(["submit", "a fox", "--config", str(config), "--generate-on", "pc1", "--post-on", "pc2"])
    err = capsys.readouterr().err
    assert code == ExitCode.FAILURE
    # No blank line first (an empty progress display used to print one), and no gRPC internals.
    assert err.startswith(f"artifex-agent submit: agent 'pc1' at 127.0.0.1:{port} is not reachable"), err
    assert "UNAVAILABLE" not in err and "failed to connect to all addresses" not in err
    assert "artifex-agent serve --name pc1" in err and "[agents.pc1]" in err and "health" in err


def test_demo_refuses_a_bad_frame_count_before_starting_agents(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workdir = tmp_path / "demo"
    assert main(["demo", "--frames", "16", "--workdir", str(workdir)]) == ExitCode.FAILURE
    err = capsys.readouterr().err
    assert err.startswith("artifex-agent demo: ") and "frames" in err
    assert not workdir.exists(), "the demo built or started something before refusing"


def test_direct_mode_progress_bars_end_full(pair: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    """The post agent's progress is thinned (a few events a second): a short clip used to end at 0/17."""
    code = main(["submit", "a fox", "--config", str(pair.config_path), "--generate-on", "gen", "--post-on", "post",
                 "--model", DEMO_MODEL, "--size", "16x16", "--frames", "17", "--steps", "2", "--guidance", "1",
                 "--seed", "3"])
    out, err = capsys.readouterr()
    assert code == ExitCode.OK, err
    assert "frames: 17" in out
    bars = dict(re.findall(r"(denoising|streaming|upscale\+encode)\W.*?(\d+/\d+)", err))
    assert bars == {"denoising": "2/2", "streaming": "17/17", "upscale+encode": "17/17"}, err
