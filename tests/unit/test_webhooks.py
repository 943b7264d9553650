"""relay.webhooks: the Standard Webhooks test vector, a test per failure mode, ed25519, and the
headers every delivery carries."""

from __future__ import annotations

import base64
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from relay import webhooks
from relay.delivery import delivery_headers
from relay.models import Message
from relay.signing import SignatureError, SigningKeys, generate_keys, verify

# The vector published with the Standard Webhooks reference libraries.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _vector_headers(signature: str = VECTOR_SIGNATURE) -> dict[str, str]:
    return {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": signature,
    }


def test_sign_reproduces_the_published_vector() -> None:
    signature = webhooks.sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, secret=VECTOR_SECRET)
    assert signature == VECTOR_SIGNATURE


def test_verify_accepts_the_published_vector() -> None:
    result = webhooks.verify(
        _vector_headers(), VECTOR_BODY, secret=VECTOR_SECRET, now=VECTOR_TIMESTAMP
    )
    assert result == (VECTOR_ID, VECTOR_TIMESTAMP)


def test_the_secret_works_without_its_prefix() -> None:
    bare = VECTOR_SECRET.removeprefix("whsec_")
    assert webhooks.verify(_vector_headers(), VECTOR_BODY, secret=bare, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_named(missing: str) -> None:
    headers = _vector_headers()
    del headers[missing]
    with pytest.raises(SignatureError, match=f"^missing {missing} header$"):
        webhooks.verify(headers, VECTOR_BODY, secret=VECTOR_SECRET, now=VECTOR_TIMESTAMP)


def test_a_timestamp_that_is_not_a_number_is_refused() -> None:
    headers = {**_vector_headers(), "webhook-timestamp": "yesterday"}
    with pytest.raises(SignatureError, match="'yesterday' is not unix seconds"):
        webhooks.verify(headers, VECTOR_BODY, secret=VECTOR_SECRET, now=VECTOR_TIMESTAMP)


def test_too_old_and_too_new_have_their_own_messages() -> None:
    with pytest.raises(SignatureError, match="is too old"):
        webhooks.verify(
            _vector_headers(), VECTOR_BODY, secret=VECTOR_SECRET, now=VECTOR_TIMESTAMP + 301
        )
    with pytest.raises(SignatureError, match="is too new"):
        webhooks.verify(
            _vector_headers(), VECTOR_BODY, secret=VECTOR_SECRET, now=VECTOR_TIMESTAMP - 301
        )
    # Within the tolerance either side: fine.
    for now in (VECTOR_TIMESTAMP + 300, VECTOR_TIMESTAMP - 300):
        assert webhooks.verify(_vector_headers(), VECTOR_BODY, secret=VECTOR_SECRET, now=now)


def test_a_tampered_body_matches_no_signature() -> None:
    with pytest.raises(SignatureError, match="no webhook signature matched"):
        webhooks.verify(
            _vector_headers(), VECTOR_BODY + b" ", secret=VECTOR_SECRET, now=VECTOR_TIMESTAMP
        )


def test_unknown_versions_and_garbage_are_skipped() -> None:
    signature = "v2,abc v1,!!notbase64 v1a,AAAA " + VECTOR_SIGNATURE
    headers = _vector_headers(signature)
    assert webhooks.verify(headers, VECTOR_BODY, secret=VECTOR_SECRET, now=VECTOR_TIMESTAMP)


def test_bodies_are_bytes_not_text() -> None:
    body = b"\x00\xff\xfe not utf-8"
    secret = webhooks.generate_secret()
    headers = webhooks.headers("msg_1", 1000, body, secret=secret)
    assert webhooks.verify(headers, body, secret=secret, now=1000) == ("msg_1", 1000)


def test_ed25519_round_trip_with_only_the_public_key() -> None:
    secret_key, public_key = webhooks.generate_key_pair()
    assert secret_key.startswith("whsk_") and public_key.startswith("whpk_")
    assert webhooks.public_key(secret_key) == public_key
    headers = webhooks.headers("msg_1", 1000, b"body", secret_keys=[secret_key])
    assert headers["webhook-signature"].startswith("v1a,")
    assert webhooks.verify(headers, b"body", public_keys=[public_key], now=1000)
    with pytest.raises(SignatureError, match="no webhook signature matched"):
        webhooks.verify(headers, b"body!", public_keys=[public_key], now=1000)


def test_a_libsodium_style_64_byte_secret_key_is_accepted() -> None:
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    libsodium = "whsk_" + base64.b64encode(seed + public).decode()
    assert webhooks.public_key(libsodium) == "whpk_" + base64.b64encode(public).decode()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: webhooks.public_key("whpk_abc"), "must start with whsk_"),
        (lambda: webhooks.public_key("whsk_AAAA"), "holds 32"),
        (lambda: webhooks.check_public_key("whsk_AAAA"), "must start with whpk_"),
        (lambda: webhooks.check_secret("whsec_***"), "whsec_<base64>"),
        (lambda: webhooks.check_secret("whsec_"), "empty"),
    ],
)
def test_malformed_keys_are_configuration_errors(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


# --- on every delivery ----------------------------------------------------------------------------


def _message() -> Message:
    return Message(
        id="msg_abc",
        url="https://example.com/hook",
        method="POST",
        body=b'{"a":1}',
        headers=[("Content-Type", "application/json")],
        max_retries=3,
        timeout=30,
        not_before=0,
        created_at=0,
    )


def test_every_delivery_carries_both_signatures_made_at_the_same_time() -> None:
    secret_key, public_key = webhooks.generate_key_pair()
    pair = generate_keys()
    keys = SigningKeys(
        pair.current,
        pair.next,
        webhook_secret=webhooks.generate_secret(),
        webhook_keys=(secret_key,),
    )
    message = _message()
    headers = delivery_headers(message, keys)
    claims = verify(headers["Upstash-Signature"], keys, body=message.body, url=message.url)
    assert headers["webhook-id"] == "msg_abc"
    assert headers["webhook-timestamp"] == str(claims["iat"])
    assert abs(claims["iat"] - time.time()) < 5
    lower = {k.lower(): v for k, v in headers.items()}
    assert webhooks.verify(lower, message.body, secret=keys.webhook_secret, now=claims["iat"]) == (
        "msg_abc",
        claims["iat"],
    )
    assert webhooks.verify(lower, message.body, public_keys=[public_key], now=claims["iat"])


def test_without_a_webhook_secret_only_the_qstash_signature_is_sent() -> None:
    headers = delivery_headers(_message(), generate_keys())
    assert "Upstash-Signature" in headers
    assert not any(name.startswith("webhook-") for name in headers)
