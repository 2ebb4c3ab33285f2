"""What the command-line tests share: a coordinator whose agents are all down (its jobs stay queued), and a
pair of agents for direct mode with a real MP4."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifex_agent.cli.main import main
from artifex_agent.launcher import ChildProcess, wait_serving
from artifex_agent.local_cluster import LocalCluster, free_port, write_cluster_toml
from tests.processes import held, started


class LoneCoordinator:
    """`artifex-agent coordinator` with one configured agent that never answers: every job stays queued."""

    def __init__(self, workdir: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        coordinator = {"listen": self.address, "database": str(workdir / "jobs.db"),
                       "results_cache": str(workdir / "cache"), "batch_size": 1, "batch_timeout_s": 0.0,
                       "health_interval_s": 0.5}
        self.config = write_cluster_toml(workdir / "cluster.toml", {"a": {"address": f"127.0.0.1:{free_port()}"}},
                                         coordinator=coordinator, web={"listen": ""})
        self.child = ChildProcess(["coordinator", "--config", str(self.config), "--port-file",
                                   str(workdir / "coordinator.port")], workdir / "coordinator.log",
                                  workdir / "coordinator.port")

    def submit(self, prompt: str = "a fox") -> str:
        """A queued job's id (`submit` in process, as a user runs it)."""
        return self.cli("submit", prompt, "--size", "16x16", "--frames", "5", "--steps", "1", "--seed", "1")

    def cli(self, *argv: str) -> str:
        """Run `artifex-agent ARGV --config ...` in this process; its stdout (exit 0 asserted)."""
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main([*argv, "--config", str(self.config)])
        assert code == 0, (argv, out.getvalue())
        return out.getvalue().strip()

    def run(self, *argv: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """`artifex-agent ARGV --config ...` as its own process."""
        return subprocess.run([sys.executable, "-m", "artifex_agent", *argv, "--config", str(self.config)],
                              capture_output=True, text=True, timeout=60, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="session")
def lone_coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoneCoordinator]:
    c = LoneCoordinator(tmp_path_factory.mktemp("lone"))
    c.child.start()
    with held(lambda: [c.child]):
        c.child.wait_port()
        asyncio.run(wait_serving(c.address, "", timeout=20))
        yield c


@pytest.fixture(scope="session")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Agents 'gen' and 'post' (direct mode: frames go from one to the other over gRPC, as between two PCs)."""
    with started(LocalCluster(tmp_path_factory.mktemp("pair"))) as cluster:
        yield cluster


def interrupt(proc: subprocess.Popen[str]) -> None:
    """Ctrl+C as a terminal sends it."""
    proc.send_signal(signal.SIGINT)
