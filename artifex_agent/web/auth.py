"""Login, the session cookie and CSRF tokens: stateless, signed with a key kept in the coordinator's state folder.

A session is `expiry.nonce.signature` in an HttpOnly, SameSite=Strict cookie. Nothing is held in memory, so a
page stays logged in across a coordinator restart (its event stream just reconnects). The signing key is derived
from a random secret on disk and the login password: changing the password logs every browser out.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from artifex_agent.newfile import replacing

logger = logging.getLogger(__name__)

COOKIE = "artifex_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Session:
    """A logged-in browser: until when, and the nonce its CSRF token is derived from."""

    expires: int
    nonce: str


class Auth:
    """Checks the password, issues and verifies session cookies and their CSRF tokens."""

    def __init__(self, password: str, secret_file: Path, session_hours: float) -> None:
        self._password = password
        self.session_s = int(session_hours * 3600)
        self._key = hmac.new(_secret(secret_file), password.encode(), hashlib.sha256).digest()

    @property
    def enabled(self) -> bool:
        """False when no password or token is configured (loopback only: the server refuses otherwise)."""
        return bool(self._password)

    def same_password(self, password: str) -> bool:
        return hmac.compare_digest(password.encode(), self._password.encode())

    def password_ok(self, given: str) -> bool:
        return self.enabled and hmac.compare_digest(given.encode(), self._password.encode())

    def new_session(self, now: float | None = None) -> str:
        """A cookie value for a fresh login."""
        expires = int((now or time.time()) + self.session_s)
        body = f"{expires}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._sign('session', body)}"

    def session(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie proves (None: absent, forged or expired); anyone when no password is set."""
        if not self.enabled:
            return Session(0, "open")
        if not cookie or cookie.count(".") != 2:
            return None
        expires, nonce, signature = cookie.split(".")
        if not expires.isdigit() or not hmac.compare_digest(signature, self._sign("session", f"{expires}.{nonce}")):
            return None
        if int(expires) < (now or time.time()):
            return None
        return Session(int(expires), nonce)

    def csrf_token(self, session: Session) -> str:
        """The token every state-changing request of this session must carry (form field or header)."""
        return self._sign("csrf", session.nonce)

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token(session))

    def _sign(self, purpose: str, body: str) -> str:
        return hmac.new(self._key, f"{purpose}:{body}".encode(), hashlib.sha256).hexdigest()[:43]


def _secret(path: Path) -> bytes:
    """The random signing secret in `path`, created (mode 0600) the first time."""
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    data = secrets.token_bytes(32)
    with replacing(path, 0o600) as f:
        f.write(data)
    logger.info("web: new session key in %s (browsers log in again)", path)
    return data
