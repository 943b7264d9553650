"""relay.receiver's framework-free parts: `Receiver.verify_request` (either scheme), the replay
cache, and the guard every adapter shares (URL policy, body parsing, handler signals)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from relay import webhooks
from relay.receiver import NonRetryable, Receiver, ReplayCache, RetryLater
from relay.receiver.guard import Delivery, Guard, GuardOptions, Incoming, Reply
from relay.signing import SignatureError, generate_keys, sign

URL = "https://example.com/hook?x=1"
BODY = b'{"order_id":42}'
NOW = 1_700_000_000


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "QSTASH_CURRENT_SIGNING_KEY",
        "QSTASH_NEXT_SIGNING_KEY",
        "RELAY_WEBHOOK_SECRET",
        "RELAY_WEBHOOK_PUBLIC_KEY",
    ):
        monkeypatch.delenv(name, raising=False)


# --- Receiver.verify_request ------------------------------------------------------------------


def test_missing_header_names_what_this_receiver_expects() -> None:
    keys, secret = generate_keys(), webhooks.generate_secret()
    cases = [
        (Receiver(keys.current, keys.next), "missing Upstash-Signature header"),
        (Receiver(webhook_secret=secret), "missing webhook-signature header"),
        (
            Receiver(keys.current, keys.next, webhook_secret=secret),
            "missing Upstash-Signature or webhook-signature header",
        ),
    ]
    for receiver, message in cases:
        with pytest.raises(SignatureError, match=f"^{message}$"):
            receiver.verify_request(headers={}, body=BODY, url=URL)


def test_a_failing_jwt_never_falls_back_to_the_webhook_signature() -> None:
    # The webhook headers sign no URL: falling back would skip the URL check.
    keys, secret = generate_keys(), webhooks.generate_secret()
    receiver = Receiver(keys.current, keys.next, webhook_secret=secret, clock=Clock())
    headers = {
        "upstash-signature": sign(keys.current, url=URL, body=BODY, now=NOW),
        **webhooks.headers("msg_1", NOW, BODY, secret=secret),
    }
    with pytest.raises(SignatureError, match="URL mismatch"):
        receiver.verify_request(headers=headers, body=BODY, url="https://example.com/other")
    assert receiver.verify_request(headers=headers, body=BODY, url=URL).scheme == "upstash"


def test_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    secret_key, public_key = webhooks.generate_key_pair()
    monkeypatch.setenv(
        "RELAY_WEBHOOK_PUBLIC_KEY", f"{webhooks.generate_key_pair()[1]},{public_key}"
    )
    headers = webhooks.headers("msg_1", NOW, BODY, secret_keys=[secret_key])
    verified = Receiver(clock=Clock()).verify_request(headers=headers, body=BODY, url=None)
    assert (verified.scheme, verified.message_id) == ("webhook", "msg_1")


def test_no_key_at_all_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="no signing key"):
        Receiver()


def test_a_malformed_public_key_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="whpk_"):
        Receiver(webhook_public_keys="sig_notakey")


def test_clock_tolerance_widens_the_webhook_window() -> None:
    secret, clock = webhooks.generate_secret(), Clock()
    headers = webhooks.headers("msg_1", NOW, BODY, secret=secret)
    clock.now = NOW + 310
    with pytest.raises(SignatureError, match="too old"):
        Receiver(webhook_secret=secret, clock=clock).verify_request(
            headers=headers, body=BODY, url=None
        )
    tolerant = Receiver(webhook_secret=secret, clock=clock, clock_tolerance=10)
    assert tolerant.verify_request(headers=headers, body=BODY, url=None)


def test_replay_protection_refuses_the_same_token_but_not_a_retry() -> None:
    keys, clock = generate_keys(), Clock()
    receiver = Receiver(keys.current, keys.next, replay_protection=True, clock=clock)
    first = sign(keys.current, url=URL, body=BODY, now=NOW)
    receiver.verify(signature=first, body=BODY, url=URL)
    with pytest.raises(
        SignatureError, match=r"^replayed request: jti jwt_\w+ was already accepted$"
    ):
        receiver.verify(signature=first, body=BODY, url=URL)
    # A retry of the same message comes with a new token.
    receiver.verify(signature=sign(keys.current, url=URL, body=BODY, now=NOW), body=BODY, url=URL)


def test_a_webhook_retry_is_not_a_replay() -> None:
    secret, clock = webhooks.generate_secret(), Clock()
    receiver = Receiver(webhook_secret=secret, replay_protection=True, clock=clock)
    receiver.verify_webhook(headers=webhooks.headers("msg_1", NOW, BODY, secret=secret), body=BODY)
    retry = webhooks.headers("msg_1", NOW + 12, BODY, secret=secret)
    receiver.verify_webhook(headers=retry, body=BODY)
    with pytest.raises(SignatureError, match="replayed request: webhook msg_1 at"):
        receiver.verify_webhook(headers=retry, body=BODY)


def test_replay_cache_forgets_expired_tokens_and_stays_bounded() -> None:
    cache = ReplayCache(max_entries=2)
    assert not cache.seen("a", until=10, now=0)
    assert cache.seen("a", until=10, now=5)
    assert not cache.seen("a", until=30, now=11)  # expired, so forgotten; a new token now
    assert not cache.seen("b", until=40, now=12)
    assert not cache.seen("c", until=50, now=12)  # full: "a" (first to expire) makes room
    assert len(cache) == 2
    assert cache.seen("c", until=50, now=13) and cache.seen("b", until=40, now=13)


def test_a_shared_replay_cache_can_be_passed_in() -> None:
    keys, cache = generate_keys(), ReplayCache()
    token = sign(keys.current, url=URL, body=BODY)
    Receiver(keys.current, keys.next, replay_protection=cache).verify(signature=token, body=BODY)
    with pytest.raises(SignatureError, match="replayed"):
        Receiver(keys.current, keys.next, replay_protection=cache).verify(
            signature=token, body=BODY
        )


# --- the guard ----------------------------------------------------------------------------------


class Order(BaseModel):
    order_id: int


def _guard(**options: Any) -> tuple[Guard[str], str]:
    keys = generate_keys()
    opts: GuardOptions[str] = {"receiver": Receiver(keys.current, keys.next), **options}
    return Guard(opts), keys.current


def _incoming(token: str, seen: str = URL, **headers: str) -> Incoming:
    return Incoming(seen, {"upstash-signature": token, **headers}, BODY)


def test_the_url_policy_in_order_of_precedence() -> None:
    guard, _ = _guard()
    seen = "http://10.0.0.5:8000/hook?x=1"
    forwarded = {"x-forwarded-proto": "https, http", "x-forwarded-host": "example.com, proxy"}
    assert guard.url_for("request", Incoming(seen, forwarded, b"")) == seen
    assert Guard({"trust_forwarded": True}).url_for("r", Incoming(seen, forwarded, b"")) == URL
    assert (
        Guard({"public_url": "https://example.com/"}).url_for("r", Incoming(seen, {}, b"")) == URL
    )
    assert (
        Guard({"url": "https://fixed/"}).url_for("r", Incoming(seen, {}, b"")) == "https://fixed/"
    )
    assert Guard({"url": lambda r: r + "!"}).url_for("r", Incoming(seen, {}, b"")) == "r!"
    assert Guard({"check_url": False, "url": "x"}).url_for("r", Incoming(seen, {}, b"")) is None


def test_public_url_keeps_a_path_prefix() -> None:
    guard = Guard[str]({"public_url": "https://example.com/app/"})
    assert guard.url_for("r", Incoming("http://app:80/hook", {}, b"")) == (
        "https://example.com/app/hook"
    )


def test_skipping_the_url_check_is_explicit() -> None:
    guard, key = _guard(check_url=False)
    token = sign(key, url="https://public.example/hook", body=BODY)
    assert isinstance(guard.check("r", _incoming(token)), Delivery)


def test_check_returns_a_delivery_with_the_parsed_body() -> None:
    guard, key = _guard(model=Order)
    token = sign(key, url=URL, body=BODY)
    delivery = guard.check("r", _incoming(token, **{"upstash-message-id": "msg_1"}))
    assert isinstance(delivery, Delivery)
    assert (delivery.data, delivery.message_id, delivery.retried) == (
        Order(order_id=42),
        "msg_1",
        0,
    )


def test_json_is_parsed_only_for_json_content_types() -> None:
    guard, key = _guard()
    token = sign(key, url=URL, body=BODY)
    json_typed = guard.check("r", _incoming(token, **{"content-type": "application/json; x=1"}))
    text = guard.check("r", _incoming(token, **{"content-type": "text/plain"}))
    assert isinstance(json_typed, Delivery) and json_typed.data == {"order_id": 42}
    assert isinstance(text, Delivery) and text.data is None


def test_refusals_are_replies_never_exceptions() -> None:
    guard, _ = _guard()
    assert guard.check("r", _incoming("garbage")) == Reply(
        401, "signature is not a well-formed JWT"
    )
    other = sign(generate_keys().current, url=URL, body=BODY)
    refused = guard.check("r", _incoming(other))
    assert isinstance(refused, Reply) and refused.status == 401


def test_an_unconfigured_receiver_is_a_server_error(caplog: pytest.LogCaptureFixture) -> None:
    refused = Guard[str]({}).check("r", _incoming("x"))
    assert isinstance(refused, Reply) and refused.status == 500
    assert refused.error.startswith("receiver is not configured: no signing key")


def test_unknown_options_fail_at_decoration() -> None:
    with pytest.raises(TypeError, match="unknown verify_signature option"):
        Guard({"recevier": None})  # type: ignore[typeddict-unknown-key]


def test_handler_signals_become_the_answers_the_relay_understands() -> None:
    assert RetryLater(2.5).reply() == Reply(503, "retry later (3s)", {"Retry-After": "3"})
    assert RetryLater(60, "busy").reply().error == "retry later (60s): busy"
    assert NonRetryable("bad order").reply() == Reply(
        489, "bad order", {"Upstash-NonRetryable-Error": "true"}
    )
    with pytest.raises(ValueError):
        RetryLater(-1)
