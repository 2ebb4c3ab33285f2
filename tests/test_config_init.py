"""`artifex-agent config init [--local]`: a cluster file that works as written, and a 0600 token."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from artifex_agent.cli.main import main
from artifex_agent.config import ClusterConfig
from artifex_agent.config_init import nvidia_gpu_present
from artifex_agent.health import system
from artifex_agent.health.checks import HealthContext
from artifex_agent.local_cluster import free_port


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("ARTIFEX_HOME", str(home))
    monkeypatch.delenv("ARTIFEX_TOKEN", raising=False)
    return home


def test_init_local_writes_a_file_that_config_check_passes(tmp_path: Path, home: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cluster.toml"
    assert main(["config", "init", "--local", "--out", str(out)]) == 0
    assert "token:" in capsys.readouterr().out
    token = home / "token"
    if sys.platform != "win32":
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
    cluster = ClusterConfig.load(out)
    assert cluster.security.secrets.token == token.read_text().strip() and len(cluster.security.secrets.token) >= 32
    agent = cluster.agent()
    # device auto where NVML sees a GPU; on a PC without one "cpu", so health does not demand a GPU.
    assert (agent.listen, agent.device) == ("127.0.0.1:50051", "auto" if nvidia_gpu_present() else "cpu")
    assert cluster.coordinator.listen == "127.0.0.1:50050" and {"coordinator", "watcher"} <= cluster.sections
    assert main(["config", "check", "--config", str(out)]) == 0
    assert ": ok (1 agent(s): local 127.0.0.1:50051)" in capsys.readouterr().out


def test_init_keeps_an_existing_token_and_file_unless_forced(tmp_path: Path, home: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cluster.toml"
    assert main(["config", "init", "--out", str(out)]) == 0
    first = (home / "token").read_text()
    assert main(["config", "init", "--out", str(out)]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["config", "init", "--out", str(out), "--force"]) == 0
    assert (home / "token").read_text() == first
    # The two-PC template: agents on 10.0.0.1/2 (not this PC), a token: config check passes here too.
    cluster = ClusterConfig.load(out)
    assert [a.dial_address for a in cluster.agents] == ["10.0.0.1:50051", "10.0.0.2:50051"]
    assert main(["config", "check", "--config", str(out)]) == 0


def test_health_on_one_machine_suggests_starting_the_process_not_a_firewall_rule(tmp_path: Path, home: Path) -> None:
    out = tmp_path / "cluster.toml"
    assert main(["config", "init", "--local", "--out", str(out)]) == 0
    cluster = ClusterConfig.load(out)
    cluster.agent().listen = f"127.0.0.1:{free_port()}"  # nothing listens there
    rows = asyncio.run(system.ports(HealthContext(cluster, connect_timeout=1.0)))
    row = next(r for r in rows if r.name == "port local")
    # Was: "start the process, or open N/tcp in the firewall (ufw allow from 10.0.0.0/24 ...)" for 127.0.0.1.
    assert not row.ok and "ufw" not in row.fix and "start the process" in row.fix


@pytest.mark.slow
def test_init_local_then_up_and_health_pass_on_one_machine(tmp_path: Path, home: Path, models_root: Path) -> None:
    out = tmp_path / "cluster.toml"
    assert main(["config", "init", "--local", "--out", str(out)]) == 0
    # Free ports instead of 50051/50050 (other runs may hold those); the session's tiny models as the models root.
    out.write_text(out.read_text().replace(":50051", f":{free_port()}").replace(":50050", f":{free_port()}"))
    (home / "models").rmdir()
    (home / "models").symlink_to(models_root, target_is_directory=True)
    state = tmp_path / "state"
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "240",
           "ARTIFEX_HOME": str(home)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "artifex_agent", *args], capture_output=True, text=True,
                              timeout=180, env=env)

    try:
        up = cli("up", "--config", str(out), "--state-dir", str(state), "--timeout", "120")
        # Agent, coordinator and watcher started; health: no RTT or GPU failure, no firewall advice.
        assert up.stdout.count("✓ ready") == 3, up.stdout + up.stderr
        assert up.returncode == 0 and "healthy: all" in up.stdout, up.stdout + up.stderr
        # ("healthy" counts the coordinator and watcher rows: the file configures both, so they are required.)
        assert "heartbeat" in up.stdout and up.stdout.count("SERVING at") == 2 and "ufw" not in up.stdout
    finally:
        cli("down", "--state-dir", str(state))
