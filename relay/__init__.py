"""relay: a self-hostable HTTP message-push relay, wire-compatible with Upstash QStash v2.

The public API: ``Client`` and ``AsyncClient`` to publish, ``Receiver`` and
``verify_signature`` to check deliveries (``relay.receiver.<framework>`` for other frameworks
than aiohttp), ``RetryLater`` and ``NonRetryable`` for handlers to steer retries.
"""

from __future__ import annotations

from relay.client import (
    AsyncClient,
    AuthError,
    BadRequest,
    Client,
    NotFound,
    RateLimited,
    RelayError,
    ServerError,
    TransportError,
)
from relay.receiver import NonRetryable, Receiver, RetryLater, verify_signature
from relay.signing import SignatureError

__version__ = "0.1.0"
__all__ = [
    "AsyncClient",
    "AuthError",
    "BadRequest",
    "Client",
    "NonRetryable",
    "NotFound",
    "RateLimited",
    "Receiver",
    "RelayError",
    "RetryLater",
    "ServerError",
    "SignatureError",
    "TransportError",
    "verify_signature",
]
