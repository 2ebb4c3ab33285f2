"""`up` starts this PC's agents from the cluster file and waits for them; `down` stops them cleanly."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from artifex_agent.cli import up
from artifex_agent.cli.main import COMMANDS
from artifex_agent.config import ClusterConfig
from artifex_agent.local_cluster import write_cluster_toml
from tests.test_metrics import free_port


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "artifex_agent", *args], capture_output=True, text=True,
                          timeout=timeout, env={"COLUMNS": "240", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                                                "HF_HUB_OFFLINE": "1"})


def _config(tmp_path: Path, agents: dict[str, int]) -> Path:
    tables = {name: {"listen": f"127.0.0.1:{port}", "models_root": str(tmp_path / "models"),
                     "output_root": str(tmp_path / "out" / name), "torch_threads": 1}
              for name, port in agents.items()}
    return write_cluster_toml(tmp_path / "cluster.toml", tables, security={"insecure": True})


def test_up_plans_only_what_listens_on_this_machine(tmp_path: Path) -> None:
    # Planning only: nothing is started and nothing dials the other PC's address.
    text = _config(tmp_path, {"here": 50051}).read_text()
    text += '\n[agents.pc2]\nlisten = "0.0.0.0:50051"\naddress = "10.0.0.2:50051"\n'
    text += '\n[coordinator]\nlisten = "127.0.0.1:50050"\n'
    (tmp_path / "cluster.toml").write_text(text)
    config = tmp_path / "cluster.toml"
    cluster = ClusterConfig.load(config)
    comps = up.plan(cluster, config, None)
    assert [(c.kind, c.name) for c in comps][0] == ("agent", "here")
    assert "pc2" not in [c.name for c in comps]
    assert comps[0].args == ["serve", "--config", str(config), "--name", "here"]
    coordinator = [c for c in comps if c.kind == "coordinator"]
    assert coordinator == ([] if "coordinator" not in COMMANDS else
                           [up.Component("coordinator", "coordinator", ["coordinator", "--config", str(config)],
                                         "127.0.0.1:50050")])
    # Naming an agent starts just that one.
    assert [c.name for c in up.plan(cluster, config, ["here"])] == ["here"]
    assert up.is_local("0.0.0.0:1", "127.0.0.1:1", set()) and not up.is_local("10.0.0.2:1", "", {"10.0.0.1"})


@pytest.mark.slow
def test_up_starts_the_local_agents_and_down_stops_them(tmp_path: Path) -> None:
    ports = {"pc1": free_port(), "pc2": free_port()}
    config, state = _config(tmp_path, ports), tmp_path / "state"
    up = cli("up", "--config", str(config), "--state-dir", str(state), "--timeout", "90")
    assert "agent pc1" in up.stdout and "agent pc2" in up.stdout, up.stdout + up.stderr
    assert up.stdout.count("✓ ready") == 2, up.stdout
    # Then the health table (whose verdict depends on this machine: no GPU here).
    assert "artifex-agent health" in up.stdout and up.returncode in (0, 4), up.stdout + up.stderr
    records = {p.name: json.loads(p.read_text()) for p in (state / "run").glob("*.pid")}
    assert set(records) == {"agent-pc1.pid", "agent-pc2.pid"}
    procs = {name: psutil.Process(r["pid"]) for name, r in records.items()}
    for name, port in ports.items():
        assert records[f"agent-{name}.pid"]["address"] == f"127.0.0.1:{port}"
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass

    again = cli("up", "--config", str(config), "--state-dir", str(state), "--no-health")
    assert again.returncode == 0 and again.stdout.count("already running") == 2, again.stdout

    down = cli("down", "--state-dir", str(state))
    assert down.returncode == 0 and down.stdout.count("✓ stopped") == 2, down.stdout + down.stderr
    for proc in procs.values():
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    assert not list((state / "run").glob("*.pid"))
    # The agents shut down gracefully (their own last log line), not by a kill.
    assert "agent pc1 stopped" in (state / "logs" / "agent-pc1.log").read_text()
    assert "nothing to stop" in cli("down", "--state-dir", str(state)).stdout


@pytest.mark.slow
def test_up_reports_an_agent_that_cannot_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config, state = _config(tmp_path, {"busy": port}), tmp_path / "state"
        up = cli("up", "--config", str(config), "--state-dir", str(state), "--no-health")
    assert up.returncode == 4, up.stdout + up.stderr
    assert "exited with 3 (configuration error" in up.stdout and "cannot listen" in up.stdout
    assert not list((state / "run").glob("*.pid"))
