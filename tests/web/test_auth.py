"""Login, the session cookie and CSRF: the Auth object itself, and through the app's routes."""

from __future__ import annotations

import stat
from pathlib import Path

from artifex_agent.web.auth import COOKIE, Auth
from tests.web.pages import PASSWORD, pages


def test_a_session_cookie_cannot_be_forged_reused_after_expiry_or_across_a_password_change(tmp_path: Path) -> None:
    key = tmp_path / "web" / "session.key"
    auth = Auth("secret", key, session_hours=1)
    cookie = auth.new_session(now=1000.0)
    session = auth.session(cookie, now=1001.0)
    assert session is not None and session.expires == 1000 + 3600
    assert auth.session(cookie, now=1000.0 + 3601) is None  # expired
    expires, nonce, signature = cookie.split(".")
    assert auth.session(f"{int(expires) + 3600}.{nonce}.{signature}", now=1001.0) is None  # extended by hand
    assert auth.session(f"{expires}.{nonce}.{'0' * len(signature)}", now=1001.0) is None
    assert auth.session("", now=1001.0) is None and auth.session("a.b", now=1001.0) is None
    # The key survives a restart (same file): the browser stays logged in.
    assert Auth("secret", key, session_hours=1).session(cookie, now=1001.0) == session
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # A new password logs everyone out.
    assert Auth("another", key, session_hours=1).session(cookie, now=1001.0) is None


def test_csrf_tokens_belong_to_one_session(tmp_path: Path) -> None:
    auth = Auth("secret", tmp_path / "k", session_hours=1)
    one = auth.session(auth.new_session())
    two = auth.session(auth.new_session())
    assert one is not None and two is not None
    assert auth.csrf_ok(one, auth.csrf_token(one))
    assert not auth.csrf_ok(one, auth.csrf_token(two))
    assert not auth.csrf_ok(one, "") and not auth.csrf_ok(one, None)
    assert auth.password_ok("secret") and not auth.password_ok("secret ") and not auth.password_ok("")


def test_login_sets_an_httponly_strict_cookie_and_refuses_a_wrong_password(tmp_path: Path) -> None:
    with pages(tmp_path) as p:
        assert p.client.get("/", follow_redirects=False).headers["location"] == "/login?next=/"
        assert p.client.get("/events").status_code == 401  # not a page: no redirect
        wrong = p.client.post("/login", data={"password": "guess", "next": "/"}, follow_redirects=False)
        assert wrong.status_code == 401 and "wrong password" in wrong.text
        assert COOKIE not in wrong.cookies
        for off_site in ("//evil.example/x", "/\t/evil.example", "/\\evil.example", "https://evil.example"):
            ok = p.client.post("/login", data={"password": PASSWORD, "next": off_site}, follow_redirects=False)
            assert ok.status_code == 303 and ok.headers["location"] == "/", off_site  # never off-site
        ok = p.client.post("/login", data={"password": PASSWORD, "next": "/jobs/x?y=1"}, follow_redirects=False)
        assert ok.headers["location"] == "/jobs/x?y=1"
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert p.client.get("/").status_code == 200


def test_every_state_change_needs_the_csrf_token(tmp_path: Path) -> None:
    with pages(tmp_path) as p:
        token = p.login()
        form = {"prompt": "a fox", "model": "m", "size": "64x64", "frames": "5", "steps": "1", "guidance": "1",
                "seed": "1", "upscale": "1", "codec": "h264", "split": "none", "priority": "0"}
        assert p.client.post("/submit", data=form, follow_redirects=False).status_code == 403
        assert p.client.post("/submit", data={**form, "csrf": "x" * 43}, follow_redirects=False).status_code == 403
        reply = p.client.post("/submit", data={**form, "csrf": token}, follow_redirects=False)
        assert reply.status_code == 303
        job = reply.headers["location"]
        for action in ("cancel", "retry", "priority"):
            assert p.client.post(f"{job}/{action}", data={"priority": "3"}, follow_redirects=False).status_code == 403
        # The header works too (for scripts); the job is still queued: nothing above reached the queue.
        assert p.client.post(f"{job}/priority", data={"priority": "3"}, headers={"x-csrf-token": token},
                             follow_redirects=False).status_code == 303
        assert p.client.post("/logout", follow_redirects=False).status_code == 403
        out = p.client.post("/logout", data={"csrf": token}, follow_redirects=False)
        assert out.status_code == 303 and COOKIE in out.headers["set-cookie"]


def test_without_a_password_only_loopback_host_names_are_served(tmp_path: Path) -> None:
    with pages(tmp_path, password="") as p:
        assert p.client.get("/").status_code == 200  # open on loopback: no login
        # A DNS-rebinding page reaches 127.0.0.1 under its own name: refused.
        assert p.client.get("/", headers={"host": "evil.example:8265"}).status_code == 400
