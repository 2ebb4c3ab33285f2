"""`artifex-agent config render|show|check` on the seed's cluster file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from artifex_agent.cli.main import main
from tests.render.conftest import EXAMPLE


def test_render_writes_every_pc_and_an_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "render", "--config", str(EXAMPLE), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "wrote 15 files" in out and "pc2/  windows, 10.0.0.2/24 on 'Ethernet 2'" in out
    assert (tmp_path / "out/pc1/nfs/exports").is_file() and (tmp_path / "out/pc2/powershell/network.ps1").is_file()


def test_check_names_what_would_not_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARTIFEX_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.artifex/token here
    assert main(["config", "check", "--config", str(EXAMPLE)]) == 1
    assert "cannot read token_file" in capsys.readouterr().out
    monkeypatch.setenv("ARTIFEX_TOKEN", "t")
    assert main(["config", "check", "--config", str(EXAMPLE)]) == 0
    assert "ok (2 agent(s): pc1 10.0.0.1:50051, pc2 10.0.0.2:50051)" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace('listen = "10.0.0.2:50051"', 'listen = "10.0.0.1:50051"')
                   .replace("[agents.pc2]\nplatform = \"windows\"", "[agents.pc2]\nplatform = \"linux\""))
    assert main(["config", "check", "--config", str(bad)]) == 1
    assert "agents.pc2 and agents.pc1 both use 10.0.0.1:50051" in capsys.readouterr().out


def test_show_fills_in_defaults_and_hides_the_token(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[security]\ntoken = "secret"\n')
    assert main(["config", "show", "--config", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["security"]["token"] == "(set)" and data["network"]["mtu"] == 9000
    assert data["agents"]["local"]["listen"] == "127.0.0.1:50051"
    assert main(["config", "show", "--config", str(path)]) == 0
    assert "[agents.local]" in capsys.readouterr().out
