"""Receiving deliveries: verify the signature a relay (or QStash) attaches to each of them.

`Receiver` is the framework-free verifier. Each framework has its own ``verify_signature``:
``relay.receiver.aiohttp`` (also exported here), ``.flask``, ``.starlette`` (FastAPI too),
``.django`` and ``.aws_lambda``. A guarded handler may raise `RetryLater` or `NonRetryable`.
"""

from __future__ import annotations

from relay.receiver.aiohttp import RELAY_BODY, RELAY_DELIVERY, RELAY_JSON, verify_signature
from relay.receiver.guard import Delivery, NonRetryable, RetryLater
from relay.receiver.verifier import Receiver, ReplayCache, Verified
from relay.signing import SignatureError

__all__ = [
    "RELAY_BODY",
    "RELAY_DELIVERY",
    "RELAY_JSON",
    "Delivery",
    "NonRetryable",
    "Receiver",
    "ReplayCache",
    "RetryLater",
    "SignatureError",
    "Verified",
    "verify_signature",
]
