"""The Windows service wrapper's supervisor: runs `artifex-agent serve`, stops it cleanly, sees exit 3.

pywin32 itself exists only on Windows; the part that starts, watches and stops the child is the
same code everywhere (CTRL_BREAK there, SIGTERM here), so it is tested here with a real agent.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

from artifex_agent.local_cluster import write_cluster_toml

ROOT = Path(__file__).resolve().parents[1]


def _service_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("artifex_service", ROOT / "windows_service" / "artifex_service.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_supervisor_stops_the_agent_gracefully(tmp_path: Path) -> None:
    svc = _service_module()
    config = write_cluster_toml(tmp_path / "cluster.toml", {"pc2": {
        "listen": "127.0.0.1:0", "models_root": str(tmp_path / "models"), "output_root": str(tmp_path / "out"),
        "torch_threads": 1}})
    port_file = tmp_path / "port"
    env = svc.child_env(tmp_path)
    assert env["ARTIFEX_HOME"] == str(tmp_path) and "ARTIFEX_TOKEN" not in env
    sup = svc.Supervisor(["serve", "--config", str(config), "--port-file", str(port_file)], tmp_path / "agent.log",
                         env, python=sys.executable)
    sup.start()
    deadline = time.monotonic() + 60
    while not port_file.exists():
        assert sup.poll() is None, (tmp_path / "agent.log").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert sup.stop(timeout=30) == "stopped"
    assert sup.poll() == 0
    assert "agent pc2 stopped" in (tmp_path / "agent.log").read_text()
    assert sup.stop() == "not running"


def test_supervisor_sees_a_configuration_error_as_exit_3(tmp_path: Path) -> None:
    svc = _service_module()
    sup = svc.Supervisor(["serve", "--config", str(tmp_path / "missing.toml")], tmp_path / "agent.log",
                         python=sys.executable)
    sup.start()
    deadline = time.monotonic() + 30
    while sup.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sup.poll() == svc.CONFIG_ERROR
    assert "does not exist" in (tmp_path / "agent.log").read_text()


def test_token_file_reaches_the_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = _service_module()
    monkeypatch.delenv("ARTIFEX_TOKEN", raising=False)
    (tmp_path / "token").write_text("s3cret\n")
    assert svc.child_env(tmp_path)["ARTIFEX_TOKEN"] == "s3cret"
    assert svc.main(["artifex_service.py", "agent", "install"]) == 2  # no pywin32 here: a clear refusal
