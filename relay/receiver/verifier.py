"""Verify the ``Upstash-Signature`` of a delivery, framework-free (like ``qstash.Receiver``)."""

from __future__ import annotations

import os
from typing import Any

from relay import signing
from relay.signing import SignatureError

__all__ = ["Receiver", "SignatureError"]


class Receiver:
    """Checks delivery signatures against the current and the next signing key.

    Keys default to env ``QSTASH_CURRENT_SIGNING_KEY`` / ``QSTASH_NEXT_SIGNING_KEY``; at least one
    is required. Accepting the next key too keeps receivers working across a key rotation.
    """

    def __init__(
        self, current_signing_key: str | None = None, next_signing_key: str | None = None
    ) -> None:
        current = _key(current_signing_key, "QSTASH_CURRENT_SIGNING_KEY")
        following = _key(next_signing_key, "QSTASH_NEXT_SIGNING_KEY")
        self._keys = tuple(k for k in (current, following) if k)
        if not self._keys:
            raise ValueError(
                "no signing key: pass current_signing_key/next_signing_key or set "
                "QSTASH_CURRENT_SIGNING_KEY/QSTASH_NEXT_SIGNING_KEY"
            )

    def verify(
        self,
        *,
        signature: str,
        body: bytes | str,
        url: str | None = None,
        clock_tolerance: int = 0,
    ) -> dict[str, Any]:
        """Return the token's claims, or raise `SignatureError` saying which check failed.

        ``body`` is the raw request body (a str is hashed as UTF-8); ``url``, when given, must be
        the URL the token was issued for; ``clock_tolerance`` is in seconds.
        """
        if not signature:
            raise SignatureError("missing signature")
        raw = body.encode() if isinstance(body, str) else bytes(body)
        return signing.verify(
            signature, self._keys, body=raw, url=url, clock_tolerance=clock_tolerance
        )


def _key(given: str | None, env: str) -> str | None:
    return given if given is not None else os.environ.get(env) or None
