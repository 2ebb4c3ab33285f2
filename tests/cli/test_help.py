"""The parser a new user meets: no abbreviations, the right usage on a typo, defaults shown in --help."""

from __future__ import annotations

import pytest

from artifex_agent.cli.main import build_parser, main
from artifex_agent.errors import ExitCode


def test_abbreviations_are_refused_everywhere() -> None:
    for argv in (["submit", "a fox", "--frame", "17"], ["jobs", "--lim", "3"], ["config", "show", "--js"],
                 ["--log-f", "json", "jobs"]):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(argv)
        assert exited.value.code == ExitCode.USAGE, argv


def test_an_unknown_flag_prints_the_usage_of_its_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["submit", "a fox", "--modle", "x"])
    err = capsys.readouterr().err
    assert err.startswith("usage: artifex-agent submit ") and "artifex-agent submit: error:" in err
    assert "unrecognized arguments: --modle x" in err
    with pytest.raises(SystemExit):
        main(["config", "show", "--bogus"])
    assert capsys.readouterr().err.startswith("usage: artifex-agent config show ")


def test_submit_help_shows_defaults_and_that_they_need_a_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["submit", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for shown in ("--size SIZE WIDTHxHEIGHT (default: 1280x720)", "(default: wan2.2-t2v-a14b)", "(default: 81)",
                  "--codec {h264,hevc,h265,av1,vp9} video codec of the output (default: h264)"):
        assert shown in out
    assert "need a CUDA GPU" in out and "artifex-agent demo" in out
