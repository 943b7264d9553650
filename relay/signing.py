"""QStash-compatible `Upstash-Signature` tokens: HS256 JWTs over the delivered body.

The token is signed with the UTF-8 bytes of the signing-key string itself (``sig_…``), as QStash
does; receivers try the current key, then the next one, so a rotation never breaks a receiver.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from relay.clock import random_id

ISSUER = "Upstash"
TOKEN_LIFETIME = 300  # seconds; QStash tokens live five minutes
_HEADER = b'{"alg":"HS256","typ":"JWT"}'


class SignatureError(Exception):
    """A signature that does not verify; the message says which check failed."""


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """What a relay signs deliveries with. QStash's pair: the current key (used to sign) and the
    next key (accepted too, promoted on rotation). Standard Webhooks: the ``whsec_`` secret and
    the ed25519 ``whsk_`` keys, each of which signs every delivery (two during a rotation)."""

    current: str
    next: str
    webhook_secret: str | None = None
    webhook_keys: tuple[str, ...] = ()

    def rotated(self) -> SigningKeys:
        """current ← next, and a fresh next."""
        return replace(self, current=self.next, next=generate_key())


def generate_key(prefix: str = "sig_", length: int = 28) -> str:
    """A random key shaped like QStash's: ``sig_`` + 28 base58 characters."""
    return random_id(prefix, length)


def generate_keys() -> SigningKeys:
    return SigningKeys(current=generate_key(), next=generate_key())


def fingerprint(keys: SigningKeys) -> str:
    """A short digest naming a key pair (current, next) without revealing it."""
    return hashlib.sha256(f"{keys.current}\0{keys.next}".encode()).hexdigest()[:16]


def rotation_record(initial: SigningKeys, rotated: SigningKeys) -> str:
    """What a rotation stores: the pair now in force and the initial pair it descends from."""
    return json.dumps(
        {"current": rotated.current, "next": rotated.next, "from": fingerprint(initial)}
    )


def apply_rotation(initial: SigningKeys, record: str | None) -> SigningKeys:
    """The keys in force: ``initial`` (configured, or from the AWS stack's secret) with the
    stored rotation applied — unless that rotation descends from another initial pair: the
    operator has replaced the keys since, and the new ones win."""
    if not record:
        return initial
    stored = json.loads(record)
    if not isinstance(stored, dict) or stored.get("from") != fingerprint(initial):
        return initial
    return replace(initial, current=stored["current"], next=stored["next"])


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def body_hash(body: bytes) -> str:
    """The ``body`` claim: base64url SHA-256 of the raw bytes, ``=``-padded as QStash sends it."""
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode("ascii")


_ENCODED_HEADER = b64url(_HEADER)
# Token ids: unique per process start, then a counter (no system call per signature).
_JTI_PREFIX = "jwt_" + secrets.token_hex(8)
_jti_counter = itertools.count()


def sign(
    key: str,
    *,
    url: str,
    body: bytes,
    now: int | None = None,
    jti: str | None = None,
    lifetime: int = TOKEN_LIFETIME,
) -> str:
    """Make the ``Upstash-Signature`` JWT for one request to ``url`` carrying ``body``."""
    iat = int(time.time()) if now is None else now
    claims = {
        "iss": ISSUER,
        "sub": url,
        "iat": iat,
        "nbf": 0,  # as hosted QStash does: immune to clock skew between relay and receiver
        "exp": iat + lifetime,
        "jti": jti or f"{_JTI_PREFIX}{next(_jti_counter):x}",
        "body": body_hash(body),
    }
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{_ENCODED_HEADER}.{payload}"
    mac = hmac.new(key.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def verify(
    token: str,
    keys: SigningKeys | tuple[str, ...] | list[str],
    *,
    body: bytes,
    url: str | None = None,
    clock_tolerance: int = 0,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a token against each key in turn and return its claims, or raise SignatureError.

    ``url``, when given, must equal the token's ``sub`` claim.
    """
    candidates = [keys.current, keys.next] if isinstance(keys, SigningKeys) else list(keys)
    try:
        header_b64, payload_b64, sig_b64 = token.split(".")
        header = json.loads(_b64url_decode(header_b64))
        claims = json.loads(_b64url_decode(payload_b64))
        signature = _b64url_decode(sig_b64)
    except (ValueError, TypeError) as exc:
        raise SignatureError("signature is not a well-formed JWT") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise SignatureError("signature algorithm must be HS256")
    if not isinstance(claims, dict):
        raise SignatureError("signature payload is not a JSON object")
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    if not any(
        hmac.compare_digest(hmac.new(k.encode(), signing_input, hashlib.sha256).digest(), signature)
        for k in candidates
        if k
    ):
        raise SignatureError("signature does not match the current or the next signing key")
    _check_claims(claims, body=body, url=url, clock_tolerance=clock_tolerance, now=now)
    return claims


def _check_claims(
    claims: dict[str, Any], *, body: bytes, url: str | None, clock_tolerance: int, now: float | None
) -> None:
    current = time.time() if now is None else now
    if claims.get("iss") != ISSUER:
        raise SignatureError(f"issuer must be {ISSUER!r}, got {claims.get('iss')!r}")
    exp = claims.get("exp")
    if not isinstance(exp, int | float):
        raise SignatureError("token has no expiry (exp)")
    if current > exp + clock_tolerance:
        raise SignatureError(f"token expired at {int(exp)} (now {int(current)})")
    nbf = claims.get("nbf", 0)
    if isinstance(nbf, int | float) and current < nbf - clock_tolerance:
        raise SignatureError(f"token not valid before {int(nbf)} (now {int(current)})")
    if url is not None and not same_url(claims.get("sub"), url):
        raise SignatureError(
            f"URL mismatch: token is for {claims.get('sub')!r}, request is {url!r}"
        )
    claimed = claims.get("body")
    if not isinstance(claimed, str):
        raise SignatureError("token has no body hash")
    if not hmac.compare_digest(claimed.rstrip("="), body_hash(body).rstrip("=")):
        raise SignatureError("body hash does not match the request body")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def same_url(signed: object, url: str) -> bool:
    """Whether the token's ``sub`` and the request URL name the same resource: equal, or equal
    once scheme and host are lower-cased and a default port or an empty path are spelled out
    (an HTTP client leaves ``:443`` out of the Host header the receiver rebuilds its URL from)."""
    if not isinstance(signed, str):
        return False
    return signed == url or _normal(signed) == _normal(url)


def _normal(url: str) -> tuple[str, str, int | None, str, str]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return (url, "", None, "", "")
    scheme = parts.scheme.lower()
    return (
        scheme,
        (parts.hostname or "").lower(),
        port or _DEFAULT_PORTS.get(scheme),
        parts.path or "/",
        parts.query,
    )
