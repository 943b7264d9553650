"""Real relay deliveries verified by other people's verifiers — the official `qstash.Receiver`,
the `standardwebhooks` library, the TypeScript SDK's `Receiver` run with node — and relay's own
verifier on tokens and signatures it did not make. ed25519 (`v1a`) signatures across a key
rotation."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import qstash
import qstash.errors
import standardwebhooks

from relay import webhooks
from relay.backends.sqlite import SqliteBackend
from relay.clock import ManualClock
from relay.config import Settings
from relay.protocol import DEV_WEBHOOK_SECRET
from relay.receiver import Receiver
from relay.server import EmbeddedRelay
from relay.signing import SignatureError, generate_keys
from tests.conftest import Api, Received
from tests.conftest import Receiver as Recorder
from tests.receiver.harness import JSON, ORDER_BODY

NODE_DIR = Path(__file__).parent.parent / "node"


async def _delivery(api: Api, receiver: Recorder, path: str = "/hook?x=1") -> Received:
    await api.publish(receiver.url(path), ORDER_BODY, JSON)
    [delivery] = await receiver.wait_for(1)
    return delivery


# --- the official verifiers accept relay deliveries ---------------------------------------------


async def test_official_qstash_receiver_accepts_a_relay_delivery(
    relay: EmbeddedRelay, api: Api, receiver: Recorder
) -> None:
    delivery = await _delivery(api, receiver)
    keys = relay.service.keys
    official = qstash.Receiver(current_signing_key=keys.current, next_signing_key=keys.next)
    signature = delivery.headers["Upstash-Signature"]
    official.verify(signature=signature, body=delivery.body.decode(), url=receiver.url("/hook?x=1"))
    with pytest.raises(qstash.errors.SignatureError):
        official.verify(signature=signature, body=delivery.body.decode() + " ")


async def test_standardwebhooks_library_accepts_a_relay_delivery(
    relay: EmbeddedRelay, api: Api, receiver: Recorder
) -> None:
    delivery = await _delivery(api, receiver)
    secret = relay.service.keys.webhook_secret
    assert secret == DEV_WEBHOOK_SECRET
    wh = standardwebhooks.Webhook(secret)
    assert wh.verify(delivery.body, delivery.headers) == json.loads(ORDER_BODY)
    assert delivery.headers["webhook-id"] == delivery.headers["Upstash-Message-Id"]
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        wh.verify(delivery.body.replace(b"42", b"43"), delivery.headers)


async def test_typescript_sdk_receiver_accepts_a_relay_delivery(
    relay: EmbeddedRelay, api: Api, receiver: Recorder
) -> None:
    delivery = await _delivery(api, receiver)
    keys = relay.service.keys
    request = {
        "signature": delivery.headers["Upstash-Signature"],
        "body": delivery.body.decode(),
        "url": receiver.url("/hook?x=1"),
        "current": keys.current,
        "next": keys.next,
    }
    assert _node_verify(request) == {"valid": True}
    tampered = _node_verify({**request, "body": request["body"] + " "})
    assert tampered["valid"] is False and "body hash does not match" in tampered["error"]
    elsewhere = _node_verify({**request, "url": receiver.url("/elsewhere")})
    assert elsewhere["valid"] is False


def _node_verify(request: dict[str, str]) -> dict[str, Any]:
    if not (NODE_DIR / "node_modules" / "@upstash" / "qstash").is_dir() or not shutil.which("node"):
        message = "tests/node is not installed: `make test` runs npm ci there"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        ["node", str(NODE_DIR / "verify.mjs")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --- relay's verifier accepts what others sign --------------------------------------------------


def test_relay_receiver_accepts_a_pyjwt_token_in_qstash_format() -> None:
    keys = generate_keys()
    url, body = "https://example.com/hook", b'{"hello":"world"}'
    now = int(time.time())
    claims = {
        "iss": "Upstash",
        "sub": url,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "jwt_pyjwt",
        "body": base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode(),
    }
    token = jwt.encode(claims, keys.next, algorithm="HS256")
    headers = {"upstash-signature": token, "upstash-message-id": "msg_1"}
    verified = Receiver(keys.current, keys.next).verify_request(headers=headers, body=body, url=url)
    assert (verified.scheme, verified.message_id, verified.claims["jti"]) == (
        "upstash",
        "msg_1",
        "jwt_pyjwt",
    )


def test_relay_receiver_accepts_the_standardwebhooks_library_signature() -> None:
    secret = webhooks.generate_secret()
    body = '{"type":"order.placed"}'
    signed_at = int(time.time())
    wh = standardwebhooks.Webhook(secret)
    signature = wh.sign("msg_lib", _utc(signed_at), body)
    headers = {"webhook-id": "msg_lib", "webhook-timestamp": str(signed_at)}
    headers["webhook-signature"] = signature
    verified = Receiver(webhook_secret=secret).verify_request(
        headers=headers, body=body.encode(), url=None
    )
    assert verified.scheme == "webhook"
    assert verified.claims == {"id": "msg_lib", "timestamp": signed_at}


def _utc(seconds: int) -> datetime:
    # The library reads a naive datetime as UTC.
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


async def test_relay_receiver_with_only_the_webhook_secret_accepts_a_relay_delivery(
    relay: EmbeddedRelay, api: Api, receiver: Recorder
) -> None:
    delivery = await _delivery(api, receiver)
    verifier = Receiver(webhook_secret=DEV_WEBHOOK_SECRET, replay_protection=True)
    verified = verifier.verify_request(
        headers=_lower(delivery.headers), body=delivery.body, url=None
    )
    assert verified.scheme == "webhook"
    assert verified.message_id == delivery.headers["Upstash-Message-Id"]
    with pytest.raises(SignatureError, match="replayed request: webhook msg_"):
        verifier.verify_request(headers=_lower(delivery.headers), body=delivery.body, url=None)


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


# --- ed25519 across a rotation ------------------------------------------------------------------


@pytest.fixture
async def rotating_relay(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedRelay, list[str]]]:
    """A relay in the middle of an ed25519 rotation: it signs with the old and the new key."""
    pairs = [webhooks.generate_key_pair() for _ in range(2)]
    settings = Settings(
        port=0,
        db=str(tmp_path / "relay.db"),
        poll_interval_seconds=0.05,
        webhook_ed25519_keys=" ".join(secret for secret, _ in pairs),
    )
    relay = EmbeddedRelay(
        settings, dev=True, backend=SqliteBackend(tmp_path / "relay.db"), clock=ManualClock()
    )
    await relay.start()
    try:
        yield relay, [public for _, public in pairs]
    finally:
        await relay.stop()


async def test_ed25519_signatures_verify_with_the_old_or_the_new_public_key(
    rotating_relay: tuple[EmbeddedRelay, list[str]], receiver: Recorder
) -> None:
    relay, (old, new) = rotating_relay
    async with aiohttp.ClientSession() as session:
        delivery = await _delivery(Api(relay, session), receiver)
    versions = [s.split(",")[0] for s in delivery.headers["webhook-signature"].split()]
    assert versions == ["v1", "v1a", "v1a"]
    headers, body = _lower(delivery.headers), delivery.body
    for public in (old, new):  # a receiver that holds only the public key: no secret at all
        verifier = Receiver(webhook_public_keys=public)
        assert verifier.verify_request(headers=headers, body=body, url=None).scheme == "webhook"
    stranger = Receiver(webhook_public_keys=[webhooks.generate_key_pair()[1]])
    with pytest.raises(SignatureError, match="no webhook signature matched"):
        stranger.verify_request(headers=headers, body=body, url=None)
    # The standardwebhooks library skips the v1a signatures and checks v1.
    standardwebhooks.Webhook(relay.service.keys.webhook_secret or "").verify(body, headers)
