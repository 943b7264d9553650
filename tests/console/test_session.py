"""The console's session cookie and CSRF token."""

from __future__ import annotations

from relay.console import session as sessions

TOKEN = "rly_the-token"
NOW = 1_800_000_000_000


def test_a_session_verifies_until_it_expires() -> None:
    value, issued = sessions.issue(TOKEN, NOW)
    assert sessions.verify(TOKEN, value, NOW + 1) == issued
    assert sessions.verify(TOKEN, value, issued.expires) is None
    assert issued.expires == NOW + sessions.LIFETIME_MS


def test_a_cookie_signed_under_another_token_is_refused() -> None:
    value, _ = sessions.issue(TOKEN, NOW)
    assert sessions.verify("rly_rotated", value, NOW) is None


def test_forged_and_malformed_cookies_are_refused() -> None:
    value, _ = sessions.issue(TOKEN, NOW)
    expires, nonce, mac = value.split(".")
    later = str(int(expires) + 10**9)
    for forged in (
        f"{later}.{nonce}.{mac}",  # a longer life under the old signature
        f"{expires}.other.{mac}",
        f"{expires}.{nonce}.{mac[:-2]}AA",
        f"{expires}.{nonce}",
        "garbage",
        "",
        None,
    ):
        assert sessions.verify(TOKEN, forged, NOW) is None, forged


def test_each_session_has_its_own_csrf_token() -> None:
    _, one = sessions.issue(TOKEN, NOW)
    _, two = sessions.issue(TOKEN, NOW)
    assert one.csrf != two.csrf
    assert sessions.csrf_ok(one, one.csrf)
    assert not sessions.csrf_ok(one, two.csrf)
    assert not sessions.csrf_ok(one, None)
    assert not sessions.csrf_ok(one, "")


def test_cookie_attributes() -> None:
    header = sessions.cookie_header("v", secure=False, max_age=60)
    assert header == "relay_console=v; Path=/console; HttpOnly; SameSite=Strict; Max-Age=60"
    assert sessions.cookie_header("v", secure=True).endswith("; Secure")
    assert sessions.read_cookie("a=1; relay_console=xyz; b=2") == "xyz"
    assert sessions.read_cookie("a=1") is None
    assert sessions.read_cookie(None) is None
