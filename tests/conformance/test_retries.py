"""Retries: QStash's default backoff, a custom expression, Retry-After, the 489, the DLQ."""

from __future__ import annotations

import asyncio

from aiohttp import web

from relay.clock import ManualClock
from relay.retry import default_backoff_ms
from relay.server import EmbeddedRelay
from tests.conftest import Api, Receiver


async def _next_delivery(api: Api, message_id: str) -> int:
    retry = next(e for e in await api.events(messageId=message_id) if e["state"] == "RETRY")
    return int(retry["nextDeliveryTime"] - retry["time"])


async def test_default_backoff_then_delivered(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    receiver.respond("/flaky", 500, 503, 200)
    message_id = await api.publish(receiver.url("/flaky"), "x")
    await receiver.wait_for(1, "/flaky")
    await api.wait_state(message_id, "RETRY")
    assert await _next_delivery(api, message_id) == default_backoff_ms(1) == 12_182
    clock.advance(12_181)
    relay.worker.notify()
    clock.advance(1)
    relay.worker.notify()
    second = (await receiver.wait_for(2, "/flaky"))[1]
    assert second.headers["Upstash-Retried"] == "1"
    clock.advance(default_backoff_ms(2))
    relay.worker.notify()
    third = (await receiver.wait_for(3, "/flaky"))[2]
    assert third.headers["Upstash-Retried"] == "2"
    await api.wait_state(message_id, "DELIVERED")
    states = await api.states(message_id)
    assert states == ["CREATED", "ACTIVE", "RETRY", "ACTIVE", "RETRY", "ACTIVE", "DELIVERED"]


async def test_custom_retry_delay_expression(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    receiver.respond("/expr", 500)
    message_id = await api.publish(
        receiver.url("/expr"),
        "x",
        headers={"Upstash-Retries": "2", "Upstash-Retry-Delay": "pow(2, retried) * 1000 + 7"},
    )
    await api.wait_state(message_id, "RETRY")
    assert await _next_delivery(api, message_id) == 1_007
    clock.advance(1_007)
    relay.worker.notify()
    await receiver.wait_for(2, "/expr")
    events = [e for e in await api.events(messageId=message_id) if e["state"] == "RETRY"]
    await api.wait_state(message_id, "ACTIVE")
    while len(events) < 2:
        events = [e for e in await api.events(messageId=message_id) if e["state"] == "RETRY"]
    assert events[0]["nextDeliveryTime"] - events[0]["time"] == 2_007  # newest first: retried=1


async def test_retry_after_is_honoured(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    receiver.respond(
        "/busy", lambda r: web.Response(status=429, headers={"Retry-After": "42"}), 200
    )
    message_id = await api.publish(receiver.url("/busy"), "x")
    await api.wait_state(message_id, "RETRY")
    assert await _next_delivery(api, message_id) == 42_000
    clock.advance(42_000)
    relay.worker.notify()
    await api.wait_state(message_id, "DELIVERED")


async def test_retry_after_over_a_day_is_ignored(
    relay: EmbeddedRelay, api: Api, receiver: Receiver
) -> None:
    receiver.respond("/slow", lambda r: web.Response(status=503, headers={"Retry-After": "90000"}))
    message_id = await api.publish(receiver.url("/slow"), "x")
    await api.wait_state(message_id, "RETRY")
    assert await _next_delivery(api, message_id) == default_backoff_ms(1)


async def test_non_retryable_489_fails_at_once(api: Api, receiver: Receiver) -> None:
    receiver.respond(
        "/nope",
        lambda r: web.Response(
            status=489, text="bad input", headers={"Upstash-NonRetryable-Error": "true"}
        ),
    )
    message_id = await api.publish(receiver.url("/nope"), "x", headers={"Upstash-Retries": "5"})
    await api.wait_state(message_id, "FAILED")
    assert len(receiver.at("/nope")) == 1
    _status, dlq = await api.call("GET", "/v2/dlq", params={"messageId": message_id})
    [entry] = dlq["messages"]
    assert entry["responseStatus"] == 489
    assert entry["responseBody"] == "bad input"


async def test_489_without_the_header_is_retried(api: Api, receiver: Receiver) -> None:
    receiver.respond("/489", 489)
    message_id = await api.publish(receiver.url("/489"), "x")
    await api.wait_state(message_id, "RETRY")


async def test_exhausted_message_goes_to_dlq(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    receiver.respond("/down", lambda r: web.Response(status=500, text="boom"))
    message_id = await api.publish(
        receiver.url("/down"),
        "payload",
        headers={"Upstash-Retries": "2", "Upstash-Retry-Delay": "10"},
    )
    for attempt in (1, 2, 3):
        await receiver.wait_for(attempt, "/down")
        clock.advance(10)
        relay.worker.notify()
    await api.wait_state(message_id, "FAILED")
    assert len(receiver.at("/down")) == 3
    status, dlq = await api.call("GET", "/v2/dlq")
    [entry] = [m for m in dlq["messages"] if m["messageId"] == message_id]
    assert entry["responseStatus"] == 500 and entry["responseBody"] == "boom"
    assert entry["body"] == "payload" and entry["maxRetries"] == 2
    status, got = await api.call("GET", f"/v2/dlq/{entry['dlqId']}")
    assert status == 200 and got["messageId"] == message_id
    status, _ = await api.call("DELETE", f"/v2/dlq/{entry['dlqId']}")
    assert status == 200
    status, _ = await api.call("GET", f"/v2/dlq/{entry['dlqId']}")
    assert status == 404


async def test_timeout_counts_as_a_failure(api: Api, receiver: Receiver) -> None:
    async def hang(_: object) -> web.Response:
        await asyncio.sleep(2.5)
        return web.Response()

    receiver.respond("/hang", hang)
    message_id = await api.publish(
        receiver.url("/hang"), "x", headers={"Upstash-Timeout": "1s", "Upstash-Retries": "0"}
    )
    await api.wait_state(message_id, "FAILED", timeout=10)
    [failed] = [e for e in await api.events(messageId=message_id) if e["state"] == "FAILED"]
    assert "timed out" in failed["error"]
