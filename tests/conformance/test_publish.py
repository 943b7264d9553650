"""Publish → durable store → signed delivery, over real HTTP, on every backend."""

from __future__ import annotations

import json

from relay.clock import ManualClock
from relay.server import EmbeddedRelay
from relay.signing import verify
from tests.conftest import Api, Receiver


async def test_delivers_body_and_headers_byte_for_byte(
    relay: EmbeddedRelay, api: Api, receiver: Receiver
) -> None:
    body = bytes(range(256)) * 4
    message_id = await api.publish(
        receiver.url("/job"),
        body,
        headers={
            "Content-Type": "application/octet-stream",
            "Upstash-Forward-X-Trace": "abc",
            "Upstash-Method": "PUT",
        },
    )
    [got] = await receiver.wait_for(1, "/job")
    assert got.method == "PUT"
    assert got.body == body
    assert got.headers["Content-Type"] == "application/octet-stream"
    assert got.headers["X-Trace"] == "abc"
    assert got.headers["Upstash-Message-Id"] == message_id
    assert got.headers["Upstash-Retried"] == "0"
    assert got.headers["User-Agent"] == "Upstash-QStash"
    claims = verify(got.headers["Upstash-Signature"], relay.service.keys, body=body, url=got.url)
    assert claims["sub"] == receiver.url("/job")
    await api.wait_state(message_id, "DELIVERED")


async def test_destination_query_string_survives(api: Api, receiver: Receiver) -> None:
    destination = receiver.url("/q") + "?a=1&b=two%20words"
    message_id = await api.publish(destination, "x")
    [got] = await receiver.wait_for(1, "/q")
    assert got.url == destination
    status, message = await api.call("GET", f"/v2/messages/{message_id}")
    assert status == 200 and message["url"] == destination


async def test_qstash_token_query_parameter_is_auth_and_not_forwarded(
    relay: EmbeddedRelay, api: Api, receiver: Receiver
) -> None:
    url = f"{relay.url}/v2/publish/{receiver.url('/t')}?keep=1&qstash_token={relay.service.token}"
    async with api.session.post(url, data="x") as response:
        assert response.status == 201
    [got] = await receiver.wait_for(1, "/t")
    assert got.url == receiver.url("/t") + "?keep=1"


async def test_no_body_and_no_content_type(api: Api, receiver: Receiver) -> None:
    await api.publish(receiver.url("/empty"))
    [got] = await receiver.wait_for(1, "/empty")
    assert got.body == b""
    assert "Content-Type" not in got.headers


async def test_delay_waits_for_the_clock(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    message_id = await api.publish(receiver.url("/later"), "x", headers={"Upstash-Delay": "2m"})
    _status, message = await api.call("GET", f"/v2/messages/{message_id}")
    assert message["notBefore"] == message["createdAt"] + 120_000
    clock.advance(119_000)
    relay.worker.notify()
    await api.wait_state(message_id, "CREATED")
    assert receiver.at("/later") == []
    clock.advance(1_000)
    relay.worker.notify()
    await receiver.wait_for(1, "/later")


async def test_not_before_wins_over_delay(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    at = clock.now_ms() // 1000 + 3600
    message_id = await api.publish(
        receiver.url("/nb"), "x", headers={"Upstash-Not-Before": str(at), "Upstash-Delay": "1s"}
    )
    _status, message = await api.call("GET", f"/v2/messages/{message_id}")
    assert message["notBefore"] == at * 1000


async def test_message_get_shape(api: Api, receiver: Receiver) -> None:
    message_id = await api.publish(
        receiver.url("/shape"),
        json.dumps({"a": 1}),
        headers={
            "Content-Type": "application/json",
            "Upstash-Retries": "5",
            "Upstash-Label": "billing",
            "Upstash-Delay": "1d",
        },
    )
    status, message = await api.call("GET", f"/v2/messages/{message_id}")
    assert status == 200
    assert message["messageId"] == message_id
    assert message["method"] == "POST"
    assert message["maxRetries"] == 5
    assert message["body"] == '{"a": 1}'
    assert message["header"] == {"Content-Type": ["application/json"]}
    assert message["label"] == "billing"
    assert message["state"] == "CREATED"


async def test_unknown_message_is_404(api: Api) -> None:
    status, answer = await api.call("GET", "/v2/messages/msg_nope")
    assert status == 404 and "not found" in answer["error"]
