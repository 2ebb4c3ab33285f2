"""SIGHUP reads the page's login secret again (Coordinator.reload): a new password logs every browser out,
the old one no longer works, and a file that would leave a page beyond loopback open is refused."""

from __future__ import annotations

import asyncio
import http.client
import logging
import urllib.parse
from pathlib import Path

import pytest

from artifex_agent.config import ClusterConfig
from artifex_agent.coordinator.server import Coordinator
from artifex_agent.local_cluster import write_cluster_toml
from tests.coordinator.conftest import free_port


def _write(path: Path, tmp: Path, listen: str, **web: object) -> ClusterConfig:
    write_cluster_toml(path, {"gone": {"address": "127.0.0.1:1"}},
                       coordinator={"listen": "127.0.0.1:0", "database": str(tmp / "jobs.db"),
                                    "results_cache": str(tmp / "cache")},
                       web={"listen": listen, **web})
    return ClusterConfig.load(path)


def _request(port: int, method: str, path: str, body: str = "", cookie: str = "") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"content-type": "application/x-www-form-urlencoded"} if body else {}
    if cookie:
        headers["cookie"] = cookie
    conn.request(method, path, body=body or None, headers=headers)
    reply = conn.getresponse()
    reply.read()
    conn.close()
    return reply


def _login(port: int, password: str) -> str:
    """The session cookie a login with `password` gets; "" when refused."""
    reply = _request(port, "POST", "/login", urllib.parse.urlencode({"password": password, "next": "/"}))
    cookie = reply.getheader("set-cookie") or ""
    return cookie.split(";", 1)[0] if reply.status == 303 and cookie else ""


def test_a_changed_password_logs_everyone_out_and_only_the_new_one_works(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cluster.toml"
    port = free_port()
    listen = f"127.0.0.1:{port}"

    async def scenario() -> None:
        coordinator = Coordinator(_write(path, tmp_path, listen, password="first secret"), grace_s=0.2)
        await coordinator.startup()
        try:
            cookie = await asyncio.to_thread(_login, port, "first secret")
            assert cookie and (await asyncio.to_thread(_request, port, "GET", "/", "", cookie)).status == 200
            # The same file again: nothing changes, the browser stays logged in.
            coordinator.reload()
            assert (await asyncio.to_thread(_request, port, "GET", "/", "", cookie)).status == 200
            _write(path, tmp_path, listen, password="second secret")
            coordinator.reload()
            assert (await asyncio.to_thread(_request, port, "GET", "/events", "", cookie)).status == 401
            assert not await asyncio.to_thread(_login, port, "first secret")
            fresh = await asyncio.to_thread(_login, port, "second secret")
            assert fresh and (await asyncio.to_thread(_request, port, "GET", "/", "", fresh)).status == 200
        finally:
            await coordinator.shutdown()

    with caplog.at_level(logging.INFO, "artifex_agent.web.server"):
        asyncio.run(scenario())
    assert "login secret changed (every browser logs in again)" in caplog.text


def test_beyond_loopback_a_reload_that_leaves_no_secret_keeps_the_old_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cluster.toml"
    port = free_port()

    async def scenario() -> None:
        # 0.0.0.0 with a password: allowed; the test talks to it over loopback.
        coordinator = Coordinator(_write(path, tmp_path, f"0.0.0.0:{port}", password="kept"), grace_s=0.2)
        await coordinator.startup()
        try:
            _write(path, tmp_path, f"0.0.0.0:{port}")  # no password, no password_file, no token
            coordinator.reload()
            assert await asyncio.to_thread(_login, port, "kept")
            assert (await asyncio.to_thread(_request, port, "GET", "/events")).status == 401
        finally:
            await coordinator.shutdown()

    with caplog.at_level(logging.ERROR, "artifex_agent.web.server"):
        asyncio.run(scenario())
    assert f"the web page on 0.0.0.0:{port} would have no login secret; its login stays as it was" in caplog.text
