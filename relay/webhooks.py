"""Standard Webhooks signatures: the ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature`` headers every delivery carries beside QStash's ``Upstash-Signature``.

``v1`` is HMAC-SHA256 keyed with a shared ``whsec_`` secret; ``v1a`` is ed25519, signed with a
``whsk_`` secret key whose ``whpk_`` public key is all a receiver holds. Both sign
``{id}.{timestamp}.{body}`` over the raw body bytes. A delivery carries one signature per key,
space-separated, so that during a rotation receivers holding the old or the new key both verify.
Keys are base64 after their prefix: the secret's random bytes, the ed25519 key's 32 raw bytes.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from relay.signing import SignatureError

SECRET_PREFIX = "whsec_"
SECRET_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"
H_ID = "webhook-id"
H_TIMESTAMP = "webhook-timestamp"
H_SIGNATURE = "webhook-signature"
TOLERANCE = 300  # seconds either side of now, as the Standard Webhooks libraries allow


class Headers(Protocol):
    """Request headers looked up by name: every framework's header object (case-insensitive),
    or a dict with lower-case names."""

    def get(self, key: str, /) -> str | None: ...


def generate_secret() -> str:
    """A fresh ``whsec_`` secret: 32 random bytes (the spec asks for 24 to 64)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def generate_key_pair() -> tuple[str, str]:
    """A fresh ed25519 pair: the ``whsk_`` secret key the relay signs with, and its ``whpk_``
    public key for receivers."""
    raw = Ed25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()
    )
    secret_key = SECRET_KEY_PREFIX + base64.b64encode(raw).decode("ascii")
    return secret_key, public_key(secret_key)


def public_key(secret_key: str) -> str:
    """The ``whpk_`` public key of a ``whsk_`` secret key (ValueError if it is not one)."""
    raw = _private_key(secret_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    """What is signed: ``{id}.{timestamp}.`` and the raw body bytes, never a re-encoded text."""
    return f"{msg_id}.{timestamp}.".encode() + body


def sign(
    msg_id: str,
    timestamp: int,
    body: bytes,
    *,
    secret: str | None = None,
    secret_keys: Sequence[str] = (),
) -> str:
    """The ``webhook-signature`` value: ``v1,…`` for the secret, then ``v1a,…`` per ed25519 key."""
    content = signed_content(msg_id, timestamp, body)
    signatures = []
    if secret:
        mac = hmac.new(_secret_bytes(secret), content, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(mac).decode("ascii"))
    for key in secret_keys:
        signature = _private_key(key).sign(content)
        signatures.append("v1a," + base64.b64encode(signature).decode("ascii"))
    return " ".join(signatures)


def headers(
    msg_id: str,
    timestamp: int,
    body: bytes,
    *,
    secret: str | None = None,
    secret_keys: Sequence[str] = (),
) -> dict[str, str]:
    """The three Standard Webhooks headers of one delivery attempt."""
    return {
        H_ID: msg_id,
        H_TIMESTAMP: str(timestamp),
        H_SIGNATURE: sign(msg_id, timestamp, body, secret=secret, secret_keys=secret_keys),
    }


def verify(
    headers: Headers,
    body: bytes,
    *,
    secret: str | None = None,
    public_keys: Sequence[str] = (),
    now: float,
    tolerance: int = TOLERANCE,
) -> tuple[str, int]:
    """Check the Standard Webhooks headers (looked up by lower-case name) of a request and
    return its ``(id, timestamp)``, or raise `SignatureError` naming the check that failed.

    ``v1`` signatures are checked against ``secret``, ``v1a`` against each of ``public_keys``;
    other versions are skipped, as the spec asks.
    """
    values = {}
    for name in (H_ID, H_TIMESTAMP, H_SIGNATURE):
        value = headers.get(name)
        if not value:
            raise SignatureError(f"missing {name} header")
        values[name] = value
    msg_id, raw_timestamp, signature = values[H_ID], values[H_TIMESTAMP], values[H_SIGNATURE]
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise SignatureError(f"webhook-timestamp {raw_timestamp!r} is not unix seconds") from None
    if timestamp < now - tolerance:
        raise SignatureError(
            f"webhook timestamp {timestamp} is too old (now {int(now)}, tolerance {tolerance}s)"
        )
    if timestamp > now + tolerance:
        raise SignatureError(
            f"webhook timestamp {timestamp} is too new (now {int(now)}, tolerance {tolerance}s)"
        )
    content = signed_content(msg_id, timestamp, body)
    expected = hmac.new(_secret_bytes(secret), content, hashlib.sha256).digest() if secret else b""
    for versioned in signature.split():
        version, _, encoded = versioned.partition(",")
        try:
            given = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        if version == "v1" and expected and hmac.compare_digest(expected, given):
            return msg_id, timestamp
        if version == "v1a" and any(_ed25519_valid(k, given, content) for k in public_keys):
            return msg_id, timestamp
    raise SignatureError("no webhook signature matched the webhook secret or public keys")


def _ed25519_valid(key: str, signature: bytes, content: bytes) -> bool:
    try:
        _public_key(key).verify(signature, content)
    except InvalidSignature:
        return False
    return True


def _decode(value: str, prefix: str, what: str) -> bytes:
    text = value.strip()
    text = text.removeprefix(prefix)
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ValueError(f"{what} must be {prefix}<base64>") from None


@functools.lru_cache(maxsize=64)
def _secret_bytes(secret: str) -> bytes:
    key = _decode(secret, SECRET_PREFIX, "a webhook secret")
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


@functools.lru_cache(maxsize=64)
def _private_key(secret_key: str) -> Ed25519PrivateKey:
    if not secret_key.strip().startswith(SECRET_KEY_PREFIX):
        raise ValueError(f"an ed25519 secret key must start with {SECRET_KEY_PREFIX}")
    raw = _decode(secret_key, SECRET_KEY_PREFIX, "an ed25519 secret key")
    # 32 bytes is the seed; libsodium-style 64-byte keys are the seed followed by the public key.
    if len(raw) not in (32, 64):
        raise ValueError("an ed25519 secret key holds 32 (or 64) bytes")
    return Ed25519PrivateKey.from_private_bytes(raw[:32])


@functools.lru_cache(maxsize=64)
def _public_key(key: str) -> Ed25519PublicKey:
    if not key.strip().startswith(PUBLIC_KEY_PREFIX):
        raise ValueError(f"an ed25519 public key must start with {PUBLIC_KEY_PREFIX}")
    raw = _decode(key, PUBLIC_KEY_PREFIX, "an ed25519 public key")
    if len(raw) != 32:
        raise ValueError("an ed25519 public key holds 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def check_secret(secret: str) -> str:
    """``secret`` if it is a usable ``whsec_`` secret, else ValueError (for start-up checks)."""
    _secret_bytes(secret)
    return secret


def check_public_key(key: str) -> str:
    """``key`` if it is a usable ``whpk_`` public key, else ValueError (for start-up checks)."""
    _public_key(key)
    return key
