"""relay.signing and relay.receiver.Receiver: a test per failure mode, and interop with QStash."""

from __future__ import annotations

import base64
import hashlib
import time

import jwt
import pytest
import qstash
import qstash.errors

from relay.receiver import Receiver
from relay.signing import (
    SignatureError,
    SigningKeys,
    apply_rotation,
    body_hash,
    generate_keys,
    rotation_record,
    sign,
    verify,
)

URL = "https://example.com/hook?x=1"
BODY = b'{"hello":"world"}'


@pytest.fixture
def keys() -> SigningKeys:
    return generate_keys()


def test_round_trip_returns_claims(keys: SigningKeys) -> None:
    token = sign(keys.current, url=URL, body=BODY)
    claims = verify(token, keys, body=BODY, url=URL)
    assert claims["iss"] == "Upstash"
    assert claims["sub"] == URL
    assert claims["exp"] - claims["iat"] == 300
    assert claims["nbf"] == 0
    assert claims["jti"].startswith("jwt_")


def test_body_claim_known_answer() -> None:
    # SHA-256 of the empty string, base64url with padding, as QStash sends it.
    assert body_hash(b"") == "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU="


def test_url_is_optional(keys: SigningKeys) -> None:
    token = sign(keys.current, url=URL, body=BODY)
    assert verify(token, keys, body=BODY)["sub"] == URL


def test_wrong_key_is_refused(keys: SigningKeys) -> None:
    token = sign(generate_keys().current, url=URL, body=BODY)
    with pytest.raises(SignatureError, match="does not match the current or the next signing key"):
        verify(token, keys, body=BODY, url=URL)


def test_next_key_is_accepted(keys: SigningKeys) -> None:
    token = sign(keys.next, url=URL, body=BODY)
    assert verify(token, keys, body=BODY, url=URL)["sub"] == URL


def test_expired_token_is_refused(keys: SigningKeys) -> None:
    token = sign(keys.current, url=URL, body=BODY, now=int(time.time()) - 301)
    with pytest.raises(SignatureError, match="token expired"):
        verify(token, keys, body=BODY, url=URL)


def test_clock_tolerance_accepts_a_just_expired_token(keys: SigningKeys) -> None:
    token = sign(keys.current, url=URL, body=BODY, now=1_000)
    assert verify(token, keys, body=BODY, now=1_310, clock_tolerance=10)
    with pytest.raises(SignatureError, match="token expired"):
        verify(token, keys, body=BODY, now=1_311, clock_tolerance=10)


def test_wrong_url_is_refused(keys: SigningKeys) -> None:
    token = sign(keys.current, url=URL, body=BODY)
    with pytest.raises(SignatureError, match="URL mismatch"):
        verify(token, keys, body=BODY, url="https://example.com/other")


def test_tampered_body_is_refused(keys: SigningKeys) -> None:
    token = sign(keys.current, url=URL, body=BODY)
    with pytest.raises(SignatureError, match="body hash does not match"):
        verify(token, keys, body=BODY + b" ", url=URL)


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b", "a.b.c.d", "!!!.???.***"])
def test_not_a_jwt_is_refused(keys: SigningKeys, token: str) -> None:
    with pytest.raises(SignatureError, match="not a well-formed JWT"):
        verify(token, keys, body=BODY, url=URL)


def test_wrong_issuer_is_refused(keys: SigningKeys) -> None:
    token = _pyjwt_token(keys.current, iss="Someone")
    with pytest.raises(SignatureError, match="issuer must be 'Upstash'"):
        verify(token, keys, body=BODY, url=URL)


# --- interop with the official Python SDK and PyJWT ---------------------------------------------


def test_official_qstash_receiver_accepts_relay_tokens(keys: SigningKeys) -> None:
    receiver = qstash.Receiver(current_signing_key=keys.current, next_signing_key=keys.next)
    token = sign(keys.current, url=URL, body=BODY)
    receiver.verify(signature=token, body=BODY.decode(), url=URL)  # raises on failure


def test_official_qstash_receiver_refuses_tampered_relay_tokens(keys: SigningKeys) -> None:
    receiver = qstash.Receiver(current_signing_key=keys.current, next_signing_key=keys.next)
    token = sign(keys.current, url=URL, body=BODY)
    with pytest.raises(qstash.errors.SignatureError):
        receiver.verify(signature=token, body=BODY.decode() + " ", url=URL)


def test_relay_verify_accepts_pyjwt_tokens_in_qstash_format(keys: SigningKeys) -> None:
    token = _pyjwt_token(keys.current)
    claims = verify(token, keys, body=BODY, url=URL)
    assert claims["sub"] == URL


def test_relay_verify_accepts_unpadded_body_claim(keys: SigningKeys) -> None:
    token = _pyjwt_token(keys.current, body=body_hash(BODY).rstrip("="))
    assert verify(token, keys, body=BODY, url=URL)


def _pyjwt_token(key: str, **overrides: object) -> str:
    now = int(time.time())
    digest = hashlib.sha256(BODY).digest()
    claims: dict[str, object] = {
        "iss": "Upstash",
        "sub": URL,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "jwt_interop",
        "body": base64.urlsafe_b64encode(digest).decode(),
        **overrides,
    }
    return jwt.encode(claims, key, algorithm="HS256")


# --- Receiver -------------------------------------------------------------------------------------


def test_receiver_verifies_str_and_bytes_bodies(keys: SigningKeys) -> None:
    receiver = Receiver(keys.current, keys.next)
    token = sign(keys.current, url=URL, body=BODY)
    assert receiver.verify(signature=token, body=BODY, url=URL)["sub"] == URL
    assert receiver.verify(signature=token, body=BODY.decode(), url=URL)["sub"] == URL


def test_receiver_reads_keys_from_env(keys: SigningKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QSTASH_CURRENT_SIGNING_KEY", keys.current)
    monkeypatch.setenv("QSTASH_NEXT_SIGNING_KEY", keys.next)
    token = sign(keys.next, url=URL, body=BODY)
    assert Receiver().verify(signature=token, body=BODY, url=URL)


def test_receiver_without_keys_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QSTASH_CURRENT_SIGNING_KEY", raising=False)
    monkeypatch.delenv("QSTASH_NEXT_SIGNING_KEY", raising=False)
    with pytest.raises(ValueError, match="no signing key"):
        Receiver()


def test_receiver_refuses_a_missing_signature(keys: SigningKeys) -> None:
    with pytest.raises(SignatureError, match="missing signature"):
        Receiver(keys.current, keys.next).verify(signature="", body=BODY)


def test_receiver_refuses_a_wrong_key(keys: SigningKeys) -> None:
    token = sign(generate_keys().current, url=URL, body=BODY)
    with pytest.raises(SignatureError, match="does not match"):
        Receiver(keys.current, keys.next).verify(signature=token, body=BODY, url=URL)


def test_a_stored_rotation_applies_to_the_pair_it_descends_from(keys: SigningKeys) -> None:
    once = keys.rotated()
    twice = once.rotated()
    record = rotation_record(keys, twice)  # rotated twice, from the same initial pair
    assert apply_rotation(keys, record) == twice
    assert apply_rotation(keys, None) == keys
    # the initial keys were replaced since (settings, the AWS secret): the new ones win
    replaced = generate_keys()
    assert apply_rotation(replaced, record) == replaced
    assert keys.current not in record and keys.next not in record  # only a digest of them


def test_a_rotation_keeps_the_webhook_keys(keys: SigningKeys) -> None:
    initial = SigningKeys(keys.current, keys.next, "whsec_c2VjcmV0", ("whsk_x",))
    rotated = apply_rotation(initial, rotation_record(initial, initial.rotated()))
    assert rotated.current == initial.next
    assert (rotated.webhook_secret, rotated.webhook_keys) == ("whsec_c2VjcmV0", ("whsk_x",))
