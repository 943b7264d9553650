"""Verify a delivery, framework-free: QStash's ``Upstash-Signature`` JWT (as ``qstash.Receiver``
does) or the Standard Webhooks headers, with an optional guard against replayed requests."""

from __future__ import annotations

import heapq
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from relay import signing, webhooks
from relay.signing import SignatureError
from relay.webhooks import Headers

__all__ = ["Headers", "Receiver", "ReplayCache", "SignatureError", "Verified"]

Scheme = Literal["upstash", "webhook"]


@dataclass(frozen=True, slots=True)
class Verified:
    """What a valid signature vouches for: which scheme, the message id, and the claims (the
    JWT's, or ``{"id", "timestamp"}`` for Standard Webhooks)."""

    scheme: Scheme
    message_id: str | None
    claims: Mapping[str, Any] = field(default_factory=dict)


class ReplayCache:
    """Ids of the tokens already accepted, each kept until its token expires (after that the
    expiry check refuses a replay anyway). Bounded: when full, the entry closest to expiry goes.

    Per process: behind several workers, a replay may reach one that has not seen the token.
    Thread-safe, for threaded WSGI servers.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._until: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._until)

    def seen(self, key: str, until: float, now: float) -> bool:
        """Record ``key`` as accepted until ``until``; True if it already was (a replay)."""
        with self._lock:
            while self._expiry and self._expiry[0][0] < now:
                self._forget_first()
            if key in self._until:
                return True
            while self._expiry and len(self._until) >= self.max_entries:
                self._forget_first()
            self._until[key] = until
            heapq.heappush(self._expiry, (until, key))
            return False

    def _forget_first(self) -> None:
        # Each key is in the heap once, and leaves the dict only from here.
        _, key = heapq.heappop(self._expiry)
        del self._until[key]


class Receiver:
    """Checks delivery signatures: the ``Upstash-Signature`` JWT against the current and the next
    signing key, or the Standard Webhooks ``webhook-signature`` against the ``whsec_`` secret
    (``v1``) and ed25519 ``whpk_`` public keys (``v1a``).

    Each key defaults to its environment variable: ``QSTASH_CURRENT_SIGNING_KEY``,
    ``QSTASH_NEXT_SIGNING_KEY``, ``RELAY_WEBHOOK_SECRET``, ``RELAY_WEBHOOK_PUBLIC_KEY`` (public
    keys space- or comma-separated); at least one is required. ``clock_tolerance`` (seconds)
    forgives clock skew; ``replay_protection`` refuses a request whose token was already
    accepted (True for an in-memory `ReplayCache`, or pass your own). ``clock`` returns unix
    seconds.
    """

    def __init__(
        self,
        current_signing_key: str | None = None,
        next_signing_key: str | None = None,
        *,
        webhook_secret: str | None = None,
        webhook_public_keys: str | Sequence[str] | None = None,
        clock_tolerance: int = 0,
        replay_protection: bool | ReplayCache = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        current = _env(current_signing_key, "QSTASH_CURRENT_SIGNING_KEY")
        following = _env(next_signing_key, "QSTASH_NEXT_SIGNING_KEY")
        self._keys = tuple(k for k in (current, following) if k)
        secret = _env(webhook_secret, "RELAY_WEBHOOK_SECRET")
        self._secret = webhooks.check_secret(secret) if secret else None
        public = webhook_public_keys
        if public is None:
            public = os.environ.get("RELAY_WEBHOOK_PUBLIC_KEY", "")
        if isinstance(public, str):
            public = public.replace(",", " ").split()
        self._public_keys = tuple(webhooks.check_public_key(k) for k in public)
        if not (self._keys or self._secret or self._public_keys):
            raise ValueError(
                "no signing key: pass current_signing_key/next_signing_key (or webhook_secret, "
                "webhook_public_keys) or set QSTASH_CURRENT_SIGNING_KEY/QSTASH_NEXT_SIGNING_KEY "
                "(or RELAY_WEBHOOK_SECRET, RELAY_WEBHOOK_PUBLIC_KEY)"
            )
        if clock_tolerance < 0:
            raise ValueError("clock_tolerance must be >= 0")
        self.clock_tolerance = clock_tolerance
        self.replays: ReplayCache | None = None
        if isinstance(replay_protection, ReplayCache):
            self.replays = replay_protection
        elif replay_protection:
            self.replays = ReplayCache()
        self._clock = clock

    def verify(
        self,
        *,
        signature: str,
        body: bytes | str,
        url: str | None = None,
        clock_tolerance: int | None = None,
    ) -> dict[str, Any]:
        """Check an ``Upstash-Signature`` JWT and return its claims, or raise `SignatureError`
        saying which check failed.

        ``body`` is the raw request body (a str is hashed as UTF-8); ``url``, when given, must be
        the URL the token was issued for; ``clock_tolerance`` overrides the receiver's.
        """
        if not signature:
            raise SignatureError("missing signature")
        if not self._keys:
            raise SignatureError("no QStash signing key is configured to check Upstash-Signature")
        raw = body.encode() if isinstance(body, str) else bytes(body)
        tolerance = self.clock_tolerance if clock_tolerance is None else clock_tolerance
        claims = signing.verify(
            signature, self._keys, body=raw, url=url, clock_tolerance=tolerance, now=self._clock()
        )
        jti = claims.get("jti")
        token_id = jti if isinstance(jti, str) else signature.rpartition(".")[2]
        self._check_replay(f"jti {token_id}", float(claims["exp"]) + tolerance)
        return claims

    def verify_webhook(self, *, headers: Headers, body: bytes) -> tuple[str, int]:
        """Check the Standard Webhooks headers (a case-insensitive mapping, or lower-case names)
        and return the delivery's ``(webhook-id, webhook-timestamp)``."""
        if not (self._secret or self._public_keys):
            raise SignatureError("no webhook secret or public key is configured")
        tolerance = webhooks.TOLERANCE + self.clock_tolerance
        msg_id, timestamp = webhooks.verify(
            headers,
            body,
            secret=self._secret,
            public_keys=self._public_keys,
            now=self._clock(),
            tolerance=tolerance,
        )
        # Retries share the webhook-id but not the timestamp: only a replay repeats both.
        self._check_replay(f"webhook {msg_id} at {timestamp}", float(timestamp + tolerance))
        return msg_id, timestamp

    def verify_request(self, *, headers: Headers, body: bytes, url: str | None) -> Verified:
        """Verify a request by whichever scheme it carries and this receiver holds keys for.

        ``headers`` is a case-insensitive mapping (every framework's header object is) or has
        lower-case names. An ``Upstash-Signature`` is checked when QStash keys are configured,
        never skipped for the webhook headers: those do not sign the URL, so ``url`` (None to
        skip the check) applies to the JWT only.
        """
        token = headers.get("upstash-signature")
        if token and self._keys:
            claims = self.verify(signature=token, body=body, url=url)
            return Verified("upstash", headers.get("upstash-message-id"), claims)
        if headers.get(webhooks.H_SIGNATURE) and (self._secret or self._public_keys):
            msg_id, timestamp = self.verify_webhook(headers=headers, body=body)
            return Verified("webhook", msg_id, {"id": msg_id, "timestamp": timestamp})
        expected = []
        if self._keys:
            expected.append("Upstash-Signature")
        if self._secret or self._public_keys:
            expected.append(webhooks.H_SIGNATURE)
        raise SignatureError(f"missing {' or '.join(expected)} header")

    def _check_replay(self, key: str, until: float) -> None:
        if self.replays is not None and self.replays.seen(key, until, self._clock()):
            raise SignatureError(f"replayed request: {key} was already accepted")


def _env(given: str | None, env: str) -> str | None:
    return given if given is not None else os.environ.get(env) or None
