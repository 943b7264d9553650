"""The console's log-in session: a cookie signed with a key derived from the relay token, so no
session store is needed and rotating the token ends every session; and its CSRF token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

COOKIE = "relay_console"
LIFETIME_MS = 12 * 3600 * 1000
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True, slots=True)
class Session:
    """A verified session: when it ends (ms) and its CSRF token."""

    expires: int
    csrf: str


def _key(token: str) -> bytes:
    return hmac.new(token.encode(), b"relay console session v1", hashlib.sha256).digest()


def _mac(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _session(key: bytes, expires: int, nonce: str) -> Session:
    return Session(expires=expires, csrf=_mac(key, f"csrf.{nonce}"))


def issue(token: str, now: int) -> tuple[str, Session]:
    """A new session for someone who gave ``token``: the cookie value and the session."""
    key = _key(token)
    expires, nonce = now + LIFETIME_MS, secrets.token_urlsafe(16)
    payload = f"{expires}.{nonce}"
    return f"{payload}.{_mac(key, payload)}", _session(key, expires, nonce)


def verify(token: str, value: str | None, now: int) -> Session | None:
    """The session a cookie value carries, or None when it is missing, forged, signed under
    another token, or expired."""
    if not value:
        return None
    expires_text, _, rest = value.partition(".")
    nonce, _, mac = rest.partition(".")
    if not expires_text.isdigit() or not nonce or not mac:
        return None
    key = _key(token)
    if not hmac.compare_digest(mac, _mac(key, f"{expires_text}.{nonce}")):
        return None
    expires = int(expires_text)
    if expires <= now:
        return None
    return _session(key, expires, nonce)


def csrf_ok(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), session.csrf.encode())


def cookie_header(value: str, *, secure: bool, max_age: int | None = None) -> str:
    """The ``Set-Cookie`` value: HttpOnly, SameSite=Strict, only for ``/console``."""
    parts = [f"{COOKIE}={value}", "Path=/console", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def read_cookie(header: str | None) -> str | None:
    """This console's cookie from a ``Cookie`` header."""
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None
