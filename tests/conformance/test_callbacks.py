"""Callbacks after every attempt, the failure callback after the last: new signed messages."""

from __future__ import annotations

import base64
import json

from aiohttp import web

from relay.clock import ManualClock
from relay.server import EmbeddedRelay
from relay.signing import verify
from tests.conftest import Api, Receiver


async def test_callback_body_after_delivery(
    relay: EmbeddedRelay, api: Api, receiver: Receiver
) -> None:
    receiver.respond("/job", lambda r: web.Response(text="done!", headers={"X-Out": "1"}))
    message_id = await api.publish(
        receiver.url("/job"),
        "in",
        headers={
            "Upstash-Callback": receiver.url("/cb"),
            "Upstash-Callback-Forward-X-Cb": "yes",
            "Upstash-Forward-X-Src": "s",
        },
    )
    [callback] = await receiver.wait_for(1, "/cb")
    body = json.loads(callback.body)
    assert body["status"] == 200
    assert base64.b64decode(body["body"]) == b"done!"
    assert body["header"]["X-Out"] == ["1"]
    assert body["sourceMessageId"] == message_id
    assert body["url"] == receiver.url("/job")
    assert body["method"] == "POST"
    assert body["retried"] == 0 and body["maxRetries"] == 3
    assert base64.b64decode(body["sourceBody"]) == b"in"
    assert body["sourceHeader"] == {"X-Src": ["s"]}
    assert isinstance(body["createdAt"], int) and isinstance(body["notBefore"], int)
    # the callback is a message of its own: signed for its URL, with its own id, forwarded headers
    assert callback.headers["X-Cb"] == "yes"
    assert callback.headers["Content-Type"] == "application/json"
    assert callback.headers["Upstash-Message-Id"] != message_id
    verify(
        callback.headers["Upstash-Signature"],
        relay.service.keys,
        body=callback.body,
        url=callback.url,
    )
    # compact JSON, as JSON.stringify writes it (the workflow SDKs verify re-serialized bodies)
    assert callback.body == json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


async def test_callback_after_every_attempt_and_failure_callback_once(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    receiver.respond("/bad", lambda r: web.Response(status=500, text="nope"))
    message_id = await api.publish(
        receiver.url("/bad"),
        "payload",
        headers={
            "Upstash-Retries": "1",
            "Upstash-Retry-Delay": "1000",
            "Upstash-Callback": receiver.url("/cb"),
            "Upstash-Failure-Callback": receiver.url("/fcb"),
            "Upstash-Failure-Callback-Forward-X-Why": "failed",
        },
    )
    await receiver.wait_for(1, "/cb")
    clock.advance(1000)
    relay.worker.notify()
    callbacks = await receiver.wait_for(2, "/cb")
    assert [json.loads(c.body)["retried"] for c in callbacks] == [0, 1]
    [failure] = await receiver.wait_for(1, "/fcb")
    body = json.loads(failure.body)
    assert body["status"] == 500
    assert base64.b64decode(body["body"]) == b"nope"
    assert body["sourceMessageId"] == message_id
    assert base64.b64decode(body["sourceBody"]) == b"payload"
    assert body["retried"] == 1 and body["maxRetries"] == 1
    status, entry = await api.call("GET", f"/v2/dlq/{body['dlqId']}")
    assert status == 200 and entry["messageId"] == message_id
    assert failure.headers["X-Why"] == "failed"
    verify(
        failure.headers["Upstash-Signature"], relay.service.keys, body=failure.body, url=failure.url
    )
    await api.wait_state(message_id, "FAILED")
    assert len(receiver.at("/fcb")) == 1


async def test_callback_options_apply_to_the_callback(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    receiver.respond("/cb", 500)
    await api.publish(
        receiver.url("/ok"),
        "x",
        headers={
            "Upstash-Callback": receiver.url("/cb"),
            "Upstash-Callback-Retries": "0",
            "Upstash-Callback-Method": "PUT",
        },
    )
    [callback] = await receiver.wait_for(1, "/cb")
    assert callback.method == "PUT"
    callback_id = callback.headers["Upstash-Message-Id"]
    await api.wait_state(callback_id, "FAILED")


async def test_failure_callback_after_non_retryable(api: Api, receiver: Receiver) -> None:
    receiver.respond(
        "/489", lambda r: web.Response(status=489, headers={"Upstash-NonRetryable-Error": "true"})
    )
    await api.publish(
        receiver.url("/489"), "x", headers={"Upstash-Failure-Callback": receiver.url("/fcb")}
    )
    [failure] = await receiver.wait_for(1, "/fcb")
    assert json.loads(failure.body)["status"] == 489
