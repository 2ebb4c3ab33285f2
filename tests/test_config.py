"""The cluster file: defaults that work on one machine, clear errors for what cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest

from artifex_agent.config import ClusterConfig, is_loopback
from artifex_agent.errors import ConfigError
from artifex_agent.transport.security import call_metadata, channel_credentials


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cluster.toml"
    p.write_text(text)
    return p


def test_no_file_gives_a_single_loopback_agent() -> None:
    cfg = ClusterConfig.load(None)
    assert [a.name for a in cfg.agents] == ["local"]
    assert is_loopback(cfg.agent().listen)


def test_two_agents_from_the_seed_layout(tmp_path: Path) -> None:
    cfg = ClusterConfig.load(_write(tmp_path, """
[security]
token = "s3cret"
[agents.pc1]
listen = "10.0.0.1:50051"
prefer = ["generate"]
models_root = "/data/models"
[agents.pc2]
listen = "10.0.0.2:50051"
prefer = ["post"]
output_root = "renders"
"""))
    assert cfg.agent("pc1").models_root == Path("/data/models")
    assert cfg.agent("pc2").output_root == tmp_path / "renders"  # relative to the file
    assert cfg.security.secrets.token == "s3cret"
    with pytest.raises(ConfigError, match="pass --name"):
        cfg.agent()
    with pytest.raises(ConfigError, match="no agent named 'pc3'"):
        cfg.agent("pc3")


@pytest.mark.parametrize("text, words", [
    ("[agents.a]\nlisten = 'nope'", "host:port"),
    ("[agents.a]\nroles = ['render']", "unknown stage"),
    ("[agents.a]\nlisten_port = 1", "unknown key"),
    ("[agentz.a]\n", "unknown config section"),
    ("[agents.a]\ngpu_memory_fraction = 1.5", "within 0..1"),
    ("[agents.a]\ncpu_offload = 'yes'", "true or false"),
    ("[coordinator]\nbatch_size = 0", "at least 1"),
    ("[agents.a]\nmax_streams = 0", "max_streams must be"),
    ("[agents.a]\nstream_memory_mib = 1.5", "stream_memory_mib must be"),
    ("[agents.a]\nstream_idle_s = 0", "stream_idle_s must be above 0"),
    ("[agents.a]\nstream_idle_s = 90\nstream_deadline_s = 60", "at most stream_deadline_s"),
    ("[agents.a]\nstream_idle_s = 'soon'", "must be a number"),
    ("[agents\n", "not valid TOML"),
])
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        ClusterConfig.load(_write(tmp_path, text))


def test_stream_limits_have_working_defaults_and_can_be_set(tmp_path: Path) -> None:
    default = ClusterConfig.load(None).agent()
    assert (default.max_streams, default.stream_memory_mib, default.stream_idle_s) == (32, 256, 60.0)
    cfg = ClusterConfig.load(_write(tmp_path, "[agents.a]\nmax_streams = 8\nstream_memory_mib = 256\n"
                                              "stream_idle_s = 5\nstream_deadline_s = 600\n"))
    a = cfg.agent()
    assert (a.max_streams, a.stream_memory_mib, a.stream_idle_s, a.stream_deadline_s) == (8, 256, 5, 600)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        ClusterConfig.load(tmp_path / "nope.toml")


def test_token_from_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tok").write_text("from-file\n")
    path = _write(tmp_path, f"[security]\ntoken_file = '{tmp_path / 'tok'}'\n")
    monkeypatch.delenv("ARTIFEX_TOKEN", raising=False)
    assert ClusterConfig.load(path).security.secrets.token == "from-file"
    monkeypatch.setenv("ARTIFEX_TOKEN", "from-env")
    assert ClusterConfig.load(path).security.secrets.token == "from-env"


def test_token_file_edited_after_load_is_seen_only_after_a_reload(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARTIFEX_TOKEN", raising=False)
    (tmp_path / "tok").write_text("old\n")
    cfg = ClusterConfig.load(_write(tmp_path, f"[security]\ntoken_file = '{tmp_path / 'tok'}'\n"))
    (tmp_path / "tok").write_text("new\n")
    assert cfg.security.secrets.token == "old"
    # What a new client would send: the config's token, not the file's.
    assert call_metadata(cfg.security.secrets.token) == (("authorization", "Bearer old"),)
    assert cfg.security.resolve().token == "new" and cfg.security.secrets.token == "new"


def test_a_missing_token_file_fails_where_the_token_is_needed_not_at_load(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARTIFEX_TOKEN", raising=False)
    cfg = ClusterConfig.load(_write(tmp_path, f"[security]\ntoken_file = '{tmp_path / 'nope'}'\n"))
    with pytest.raises(ConfigError, match="cannot read token_file"):
        cfg.security.secrets  # noqa: B018 - the read is the point


def test_tls_files_are_read_once_per_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ARTIFEX_TLS_CERT", "ARTIFEX_TLS_KEY", "ARTIFEX_TLS_CA"):
        monkeypatch.delenv(name, raising=False)
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_bytes(b"first " + name.encode())
    paths = "".join(f"tls_{key} = '{tmp_path / key}.pem'\n" for key in ("cert", "key", "ca"))
    cfg = ClusterConfig.load(_write(tmp_path, f"[security]\n{paths}"))
    # Replaced on disk (a new inode, as certbot or `certs` would): a config that read the files
    # again for each channel would see the second version.
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / "next").write_bytes(b"second " + name.encode())
        (tmp_path / "next").replace(tmp_path / name)
    first = cfg.security.secrets
    assert (first.tls_cert, first.tls_key, first.tls_ca) == (b"first cert.pem", b"first key.pem", b"first ca.pem")
    assert channel_credentials(cfg.security) is channel_credentials(cfg.security)  # built once, shared
    assert cfg.security.resolve().tls_cert == b"second cert.pem"


def test_lora_budget_is_a_whole_number_of_mib() -> None:
    cfg = ClusterConfig.from_dict({"agents": {"pc1": {"lora_budget_mib": 2048}}})
    assert cfg.agent("pc1").lora_budget_mib == 2048
    for bad in (-1, 1.5):
        with pytest.raises(ConfigError, match="lora_budget_mib"):
            ClusterConfig.from_dict({"agents": {"pc1": {"lora_budget_mib": bad}}})
    with pytest.raises(ConfigError, match=r"\[presets.fast\] unknown key"):
        ClusterConfig.from_dict({"presets": {"fast": {"stepz": 4}}})
