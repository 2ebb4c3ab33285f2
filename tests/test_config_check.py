"""`config check` checks the right things: every problem in one run, ranges, paths here, likely-meant names."""

from __future__ import annotations

from pathlib import Path

import pytest

from artifex_agent.cli.main import main
from artifex_agent.config import ClusterConfig
from artifex_agent.errors import ConfigError
from artifex_agent.local_cluster import write_cluster_toml
from artifex_agent.render import render_cluster
from tests.render.conftest import EXAMPLE


@pytest.fixture(autouse=True)
def _no_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ARTIFEX_TOKEN", "ARTIFEX_TLS_CERT", "ARTIFEX_TLS_KEY", "ARTIFEX_TLS_CA"):
        monkeypatch.delenv(name, raising=False)


def _loopback(tmp_path: Path, **agent: object) -> Path:
    for name in ("models", "outputs"):
        (tmp_path / name).mkdir(exist_ok=True)
    table = {"listen": "127.0.0.1:50051", "models_root": str(tmp_path / "models"),
             "output_root": str(tmp_path / "outputs"), **agent}
    return write_cluster_toml(tmp_path / "c.toml", {"local": table})


def test_a_valid_loopback_setup_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Once refused with "127.0.0.1 is outside [network] subnet 10.0.0.0/24": loopback has no link to render.
    assert main(["config", "check", "--config", str(_loopback(tmp_path))]) == 0
    assert "ok (1 agent(s): local 127.0.0.1:50051)" in capsys.readouterr().out


def test_every_problem_is_listed_in_one_run_with_what_was_meant(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = _loopback(tmp_path, gpu_memory_fracton=0.9, models_root=str(tmp_path / "no-models"),
                     output_root=str(tmp_path / "no-outputs"))
    path.write_text(path.read_text() + "\n[network]\nmtu = 90000\n\n[watchr]\nroot = '/x'\n"
                    f"\n[security]\ntoken_file = '{tmp_path / 'no-token'}'\n")
    assert main(["config", "check", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "6 problem(s)" in out
    assert "unknown config section [watchr] (did you mean [watcher]?)" in out
    assert "unknown key 'gpu_memory_fracton' (did you mean gpu_memory_fraction?)" in out
    assert "[network] mtu 90000 is outside 576–9216" in out
    assert f"models_root {tmp_path / 'no-models'} does not exist on this PC" in out
    assert f"output_root {tmp_path / 'no-outputs'} does not exist on this PC" in out
    # The token file's problem says how to make one.
    assert "cannot read token_file" in out and "secrets.token_urlsafe(32))\" >" in out


def test_paths_of_an_agent_on_another_pc_are_not_checked_here(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ARTIFEX_TOKEN", "t")
    # examples/cluster.toml: /data/models and P:/outputs belong to 10.0.0.1 and 10.0.0.2, not this machine.
    assert main(["config", "check", "--config", str(EXAMPLE)]) == 0
    assert "ok (2 agent(s)" in capsys.readouterr().out


def test_an_mtu_out_of_range_is_refused_at_load_and_never_rendered(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("mtu = 9000", "mtu = 90000")
    with pytest.raises(ConfigError, match="mtu 90000 is outside 576–9216"):
        ClusterConfig.from_dict(__import__("tomllib").loads(text))
    cluster = ClusterConfig.load(EXAMPLE)
    cluster.network.mtu = 90000  # set in code, past the file's check: render still refuses
    with pytest.raises(ConfigError, match="mtu 90000"):
        render_cluster(cluster)
    with pytest.raises(ConfigError, match="mtu 575"):
        ClusterConfig.from_dict({"network": {"mtu": 575}})
    assert ClusterConfig.from_dict({"network": {"mtu": 9216}}).network.mtu == 9216


def test_serve_still_stops_at_a_bad_file_naming_every_problem() -> None:
    with pytest.raises(ConfigError) as err:
        ClusterConfig.from_dict({"agents": {"a": {"max_streams": 0, "gpu_memory_fraction": 2.0}}})
    assert "max_streams" in str(err.value) and "gpu_memory_fraction" in str(err.value)


def test_tls_settings_that_cannot_work_are_each_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _loopback(tmp_path)
    path.write_text(path.read_text() + f"\n[security]\ntls_cert = '{tmp_path / 'pc1.pem'}'\n"
                                       f"tls_ca = '{tmp_path / 'ca.pem'}'\n")
    assert main(["config", "check", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "cannot read tls_cert" in out and "cannot read tls_ca" in out and "artifex-agent certs" in out
    assert "tls_cert and tls_key go together" in out
