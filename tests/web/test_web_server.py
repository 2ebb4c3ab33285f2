"""The [web] table, and the page's server inside a coordinator: refused beyond loopback without a secret,
off with a warning when its port is taken, on the coordinator's own loop otherwise."""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.request
from pathlib import Path

import pytest

from artifex_agent.config import ClusterConfig
from artifex_agent.coordinator.server import Coordinator
from artifex_agent.errors import ConfigError
from artifex_agent.web.server import check_web_bind


def cluster(tmp_path: Path, **web: object) -> ClusterConfig:
    return ClusterConfig.from_dict({
        "coordinator": {"listen": "127.0.0.1:0", "database": str(tmp_path / "jobs.db"),
                        "results_cache": str(tmp_path / "cache")},
        "web": web, "agents": {"gone": {"address": "127.0.0.1:1"}}})


def test_the_web_table_has_defaults_and_refuses_what_cannot_work(tmp_path: Path) -> None:
    web = ClusterConfig.from_dict({}).web
    assert web.listen == "127.0.0.1:8265" and web.session_hours > 0 and web.upload_mib >= 1
    with pytest.raises(ConfigError, match=r"\[web\] unknown key 'pasword' \(did you mean password\?\)"):
        ClusterConfig.from_dict({"web": {"pasword": "x"}})
    with pytest.raises(ConfigError, match="web: listen"):
        ClusterConfig.from_dict({"web": {"listen": "nowhere"}})
    secret = tmp_path / "web.password"
    secret.write_text("from-file\n")
    assert cluster(tmp_path, password_file=str(secret)).web.read_password("token") == "from-file"
    assert cluster(tmp_path).web.read_password("token") == "token"


def test_beyond_loopback_the_page_needs_a_password_or_the_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="refusing to serve the web page on 0.0.0.0:8265 without a login"):
        check_web_bind(cluster(tmp_path, listen="0.0.0.0:8265"))
    assert check_web_bind(cluster(tmp_path, listen="0.0.0.0:8265", password="pw")) == "pw"
    assert check_web_bind(cluster(tmp_path, listen="")) == ""
    # The coordinator refuses to start at all (exit code 3), before it opens anything.
    with pytest.raises(ConfigError, match="web page"):
        asyncio.run(Coordinator(cluster(tmp_path, listen="0.0.0.0:8265")).startup())
    assert not (tmp_path / "jobs.db").exists()


def test_the_page_runs_on_the_coordinators_loop_and_a_taken_port_only_warns(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]

        async def scenario() -> None:
            one = Coordinator(cluster(tmp_path / "one", listen="127.0.0.1:0"), grace_s=0.2)
            await one.startup()
            assert one.web is not None
            url = f"http://127.0.0.1:{one.web.port}/healthz"
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
            assert body == b"ok"
            await one.shutdown()
            two = Coordinator(cluster(tmp_path / "two", listen=f"127.0.0.1:{busy_port}"), grace_s=0.2)
            with caplog.at_level(logging.WARNING, "artifex_agent.web.server"):
                await two.startup()
            assert two.web is None and two.port  # the Jobs API serves on
            await two.shutdown()

        asyncio.run(scenario())
    assert f"web page off: cannot listen on 127.0.0.1:{busy_port} (port {busy_port})" in caplog.text
