"""Receiving deliveries: verify the ``Upstash-Signature`` a relay (or QStash) attaches to them."""

from __future__ import annotations

from relay.receiver.aiohttp import RELAY_BODY, RELAY_JSON, verify_signature
from relay.receiver.verifier import Receiver
from relay.signing import SignatureError

__all__ = ["RELAY_BODY", "RELAY_JSON", "Receiver", "SignatureError", "verify_signature"]
