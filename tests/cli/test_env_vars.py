"""ARTIFEX_<FLAG> values a flag cannot take: named with their value, --help always works, other commands unaffected."""

from __future__ import annotations

from pathlib import Path

import pytest

from artifex_agent.cli.main import main
from artifex_agent.errors import ExitCode


def test_a_bad_number_names_the_variable_and_its_value(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ARTIFEX_FRAMES", "abc")
    assert main(["submit", "a fox"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "ARTIFEX_FRAMES='abc'" in err and "--frames" in err and "whole number" in err
    assert "Traceback" not in err


def test_help_works_whatever_the_environment(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in {"ARTIFEX_FRAMES": "abc", "ARTIFEX_GRACE": "soon", "ARTIFEX_WAIT": "maybe",
                        "ARTIFEX_LIMIT": "x", "ARTIFEX_LOG_FORMAT": "xml"}.items():
        monkeypatch.setenv(name, value)
    for argv in (["--help"], ["submit", "--help"], ["serve", "-h"], ["jobs", "--help"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 0, argv
        assert "usage: artifex-agent" in capsys.readouterr().out


def test_only_the_command_that_reads_the_variable_complains(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ARTIFEX_FRAMES", "abc")
    # `jobs` has no --frames: it goes on, to the (missing) cluster file.
    assert main(["jobs", "--config", str(tmp_path / "none.toml")]) == ExitCode.STARTUP_FAILURE
    assert "ARTIFEX_FRAMES" not in capsys.readouterr().err


@pytest.mark.parametrize(("name", "value", "says"), [
    ("ARTIFEX_WAIT", "maybe", "true/false"),              # a switch
    ("ARTIFEX_CODEC", "mpeg2", "h264"),                   # a choice: argparse does not check defaults
    ("ARTIFEX_SIZE", "big", "WIDTHxHEIGHT"),              # the flag's own parser
    ("ARTIFEX_GUIDANCE", "high", "a number"),             # a flag whose default is left to the preset
    ("ARTIFEX_LOG_FORMAT", "xml", "text, json"),          # a top-level flag
])
def test_each_kind_of_bad_value_is_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                         name: str, value: str, says: str) -> None:
    monkeypatch.setenv(name, value)
    assert main(["submit", "a fox"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert f"{name}={value!r}" in err and says in err, err


def test_a_flag_on_the_command_line_wins_over_a_bad_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ARTIFEX_LIMIT", "lots")
    assert main(["jobs", "--limit", "5", "--config", str(tmp_path / "none.toml")]) == ExitCode.STARTUP_FAILURE
    assert "ARTIFEX_LIMIT" not in capsys.readouterr().err


def test_a_good_variable_still_sets_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from artifex_agent.cli.main import build_parser

    monkeypatch.setenv("ARTIFEX_FRAMES", "17")
    monkeypatch.setenv("ARTIFEX_WAIT", "yes")
    args = build_parser().parse_args(["submit", "a fox"])
    assert args.frames == 17 and args.wait is True
