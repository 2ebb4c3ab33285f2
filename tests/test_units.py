"""The systemd units verify without a word, and every PowerShell script parses."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from artifex_agent.config import ClusterConfig
from artifex_agent.errors import ExitCode
from artifex_agent.render import render_cluster

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted((ROOT / "systemd").glob("*.service"))
INSTALLED = "/opt/artifex-agent/.venv/bin/artifex-agent"
SCRIPTS = sorted((ROOT / "windows_service").glob("*.ps1"))


def _rendered(suffix: str) -> dict[str, str]:
    cluster = ClusterConfig.load(ROOT / "examples" / "cluster.toml")
    return {f.path: f.content for f in render_cluster(cluster) if f.path.endswith(suffix)}


def _directives(text: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", text, flags=re.M)


def test_units_exist_for_agent_coordinator_and_watcher() -> None:
    assert [u.name for u in UNITS] == ["artifex-agent.service", "artifex-coordinator.service",
                                       "artifex-watcher.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_restarts_on_failure_but_not_on_config_errors(unit: Path) -> None:
    text = unit.read_text()
    assert _directives(text, "Restart") == ["on-failure"]
    assert _directives(text, "RestartPreventExitStatus") == [str(int(ExitCode.STARTUP_FAILURE))]
    assert _directives(text, "ProtectSystem") == ["strict"]
    assert _directives(text, "NoNewPrivileges") == ["yes"]
    assert "/data/projects" in " ".join(_directives(text, "ReadWritePaths"))
    command = _directives(text, "ExecStart")[0].split()
    assert command[0] == INSTALLED
    assert command[1] == {"artifex-agent": "serve", "artifex-coordinator": "coordinator",
                          "artifex-watcher": "watch"}[unit.stem]
    # `systemctl reload` = SIGHUP = re-read the token and TLS files (the watcher has no reload).
    reload = ["/bin/kill -HUP $MAINPID"] if unit.stem != "artifex-watcher" else []
    assert _directives(text, "ExecReload") == reload


def test_agent_unit_hardening_leaves_the_gpu_reachable() -> None:
    text = (ROOT / "systemd" / "artifex-agent.service").read_text()
    assert "char-nvidia* rw" in _directives(text, "DeviceAllow")
    assert _directives(text, "DevicePolicy") == ["closed"]
    assert not _directives(text, "PrivateDevices")  # it would hide /dev/nvidia*
    assert not _directives(text, "MemoryDenyWriteExecute")  # CUDA's JIT needs W+X pages
    assert "modprobe@nvidia_uvm.service" in " ".join(_directives(text, "After"))


def _verify(unit_text: str, name: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # verify checks that ExecStart exists: point it at this checkout's entry point and scripts.
    entry = Path(sys.executable).with_name("artifex-agent")
    stub = tmp_path / "stub.sh"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    text = unit_text.replace(INSTALLED, str(entry)).replace("/usr/local/sbin/artifex-network-tune.sh", str(stub))
    path = tmp_path / name
    path.write_text(text)
    return subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, cwd=tmp_path)


needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (apt install systemd)")


@needs_systemd
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies_without_any_output(unit: Path, tmp_path: Path) -> None:
    # verify exits 0 on warnings, so any output at all fails.
    out = _verify(unit.read_text(), unit.name, tmp_path)
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


@needs_systemd
def test_rendered_network_tune_unit_verifies_without_any_output(tmp_path: Path) -> None:
    [(path, text)] = _rendered(".service").items()
    out = _verify(text, Path(path).name, tmp_path)
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


@needs_systemd
def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    out = _verify("[Service]\nExecStart=/bin/true\nRestartt=always\n", "broken.service", tmp_path)
    assert out.stdout + out.stderr


def _powershell_errors(source: bytes) -> list[str]:
    tree_sitter = pytest.importorskip("tree_sitter", reason="tree-sitter is not installed (the dev extra has it)")
    grammar = pytest.importorskip("tree_sitter_powershell",
                                  reason="tree-sitter-powershell is not installed (the dev extra has it)")
    tree = tree_sitter.Parser(tree_sitter.Language(grammar.language())).parse(source)
    errors: list[str] = []

    def walk(node: object) -> None:
        if node.is_error or node.is_missing:  # type: ignore[attr-defined]
            row = node.start_point[0] + 1  # type: ignore[attr-defined]
            errors.append(f"line {row}: {source.splitlines()[row - 1].decode(errors='replace')}")
        for child in node.children:  # type: ignore[attr-defined]
            walk(child)

    walk(tree.root_node)
    return errors


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.name)
def test_windows_service_scripts_parse(script: Path) -> None:
    assert _powershell_errors(script.read_bytes()) == []


@pytest.mark.parametrize("path", sorted(_rendered(".ps1")), ids=str)
def test_rendered_powershell_parses(path: str) -> None:
    assert _powershell_errors(_rendered(".ps1")[path].encode()) == []


def test_the_powershell_check_catches_a_broken_script() -> None:
    assert _powershell_errors(b"if ($x {\n  Write-Host 'no closing paren'\n")
