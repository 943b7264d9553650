"""relay.client against a running relay: publish, batch, messages, errors, and delivery all the
way to a receiver that checks the signature with relay.receiver."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
from aiohttp import web

from relay.client import (
    AsyncClient,
    AuthError,
    BadRequest,
    Client,
    DlqPage,
    NotFound,
    PublishResult,
    TransportError,
    UrlGroup,
)
from relay.client import Endpoint as GroupEndpoint
from relay.receiver import RELAY_BODY, RELAY_JSON, verify_signature
from relay.receiver import Receiver as SignatureReceiver
from relay.server import EmbeddedRelay
from tests.conftest import Receiver as Destination

T = TypeVar("T")


async def in_thread(call: Callable[[], T]) -> T:
    """Run a blocking client call off the event loop that serves the in-process relay."""
    return await asyncio.to_thread(call)


def sync_client(relay: EmbeddedRelay, **kwargs: Any) -> Client:
    return Client(relay.url, relay.service.token, **kwargs)


@pytest.fixture
async def client(relay: EmbeddedRelay) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(relay.url, relay.service.token) as c:
        yield c


class Endpoint:
    """A destination guarded by `verify_signature`, recording what its handler was given."""

    def __init__(self) -> None:
        self.base = ""
        self.got: list[tuple[str, dict[str, str], bytes, Any]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.got.append(
            (request.path_qs, dict(request.headers), request[RELAY_BODY], request[RELAY_JSON])
        )
        self.arrived.set()
        return web.json_response({"ok": True})

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.got) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def endpoint(relay: EmbeddedRelay) -> AsyncIterator[Endpoint]:
    keys = relay.service.keys
    guard = verify_signature(receiver=SignatureReceiver(keys.current, keys.next))
    ep = Endpoint()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", guard(ep.handle))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    ep.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield ep
    finally:
        await runner.cleanup()


async def test_publish_is_delivered_signed_with_forwarded_headers(
    client: AsyncClient, endpoint: Endpoint
) -> None:
    result = await client.publish(
        endpoint.base + "/hook",
        b"hello",
        content_type="text/plain",
        headers={"X-Order": "42"},
    )
    assert isinstance(result, PublishResult)
    assert result.message_id.startswith("msg_")
    assert not result.deduplicated
    await endpoint.wait_for(1)
    path, headers, body, parsed = endpoint.got[0]
    assert (path, body, parsed) == ("/hook", b"hello", None)
    assert headers["X-Order"] == "42"
    assert headers["Content-Type"] == "text/plain"
    assert headers["Upstash-Message-Id"] == result.message_id


async def test_destination_query_survives_the_raw_path(
    client: AsyncClient, endpoint: Endpoint
) -> None:
    # The signature's `sub` is the destination with its query, so this also proves the query
    # reached the relay intact: verify_signature compares it with the URL it was called on.
    await client.publish_json(endpoint.base + "/hook?a=1&b=two%20words", {"n": 1})
    await endpoint.wait_for(1)
    path, _, body, parsed = endpoint.got[0]
    assert path == "/hook?a=1&b=two%20words"
    assert (body, parsed) == (b'{"n":1}', {"n": 1})


async def test_sync_client_round_trip(relay: EmbeddedRelay, endpoint: Endpoint) -> None:
    # The relay runs on this event loop, so the blocking client runs in a thread.
    def scenario() -> tuple[Any, ...]:
        with sync_client(relay) as c:
            published = c.publish_json(endpoint.base + "/sync", {"k": "v"}, delay=3600)
            assert isinstance(published, PublishResult)
            message = c.messages.get(published.message_id)
            c.messages.cancel(published.message_id)
            return published, message

    published, message = await in_thread(scenario)
    assert message.message_id == published.message_id
    assert message.url == endpoint.base + "/sync"
    assert message.method == "POST"
    assert message.not_before is not None and message.created_at is not None
    assert message.not_before - message.created_at >= 3_600_000 - 1_000
    assert message.body_bytes == b'{"k":"v"}'


async def test_deduplication_id_answers_the_first_message(client: AsyncClient) -> None:
    url = "https://example.com/dedup"
    first = await client.publish(url, b"x", delay=3600, deduplication_id="order-7")
    second = await client.publish(url, b"x", delay=3600, deduplication_id="order-7")
    assert isinstance(first, PublishResult) and isinstance(second, PublishResult)
    assert second.deduplicated
    assert second.message_id == first.message_id


async def test_content_based_deduplication(client: AsyncClient) -> None:
    url = "https://example.com/cbd"
    first = await client.publish(url, b"same", delay=3600, content_based_deduplication=True)
    second = await client.publish(url, b"same", delay=3600, content_based_deduplication=True)
    assert isinstance(second, PublishResult) and isinstance(first, PublishResult)
    assert (second.deduplicated, second.message_id) == (True, first.message_id)


async def test_message_carries_the_options(client: AsyncClient) -> None:
    published = await client.publish(
        "https://example.com/opts",
        b"\x00\xff",
        method="PUT",
        delay="2m",
        retries=1,
        retry_delay="1000 * (1 + retried)",
        callback="https://example.com/cb",
        failure_callback="https://example.com/fcb",
        label="billing",
    )
    assert isinstance(published, PublishResult)
    message = await client.messages.get(published.message_id)
    assert message.method == "PUT"
    assert message.max_retries == 1
    assert message.retry_delay_expression == "1000 * (1 + retried)"
    assert message.callback == "https://example.com/cb"
    assert message.failure_callback == "https://example.com/fcb"
    assert message.label == "billing"
    assert message.body_bytes == b"\x00\xff"
    await client.messages.cancel(published.message_id)


async def test_batch_is_delivered_in_order(client: AsyncClient, endpoint: Endpoint) -> None:
    results = await client.batch(
        [
            {"destination": endpoint.base + "/b1", "body": "one", "headers": {"X-N": "1"}},
            {"destination": endpoint.base + "/b2", "body": b"two"},
        ]
    )
    assert [type(r) for r in results] == [PublishResult, PublishResult]
    await endpoint.wait_for(2)
    got = sorted((path, body, headers.get("X-N")) for path, headers, body, _ in endpoint.got)
    assert got == [("/b1", b"one", "1"), ("/b2", b"two", None)]


async def test_batch_json_sets_json_bodies(client: AsyncClient, endpoint: Endpoint) -> None:
    await client.batch_json([{"destination": endpoint.base + "/j", "body": {"a": [1, 2]}}])
    await endpoint.wait_for(1)
    _, headers, body, parsed = endpoint.got[0]
    assert headers["Content-Type"] == "application/json"
    assert (body, parsed) == (b'{"a":[1,2]}', {"a": [1, 2]})


async def test_unknown_message_is_not_found(client: AsyncClient) -> None:
    with pytest.raises(NotFound) as caught:
        await client.messages.get("msg_doesnotexist")
    assert caught.value.status == 404
    assert "msg_doesnotexist" in caught.value.message
    with pytest.raises(NotFound):
        await client.messages.cancel("msg_doesnotexist")


async def test_wrong_token_is_an_auth_error(relay: EmbeddedRelay) -> None:
    async with AsyncClient(relay.url, "not-the-token") as c:
        with pytest.raises(AuthError) as caught:
            await c.publish("https://example.com/x", b"x")
    assert caught.value.status == 401
    assert "token" in caught.value.message


async def test_invalid_option_is_a_bad_request_not_retried(relay: EmbeddedRelay) -> None:
    async with AsyncClient(relay.url, relay.service.token, backoff=5) as c:
        with pytest.raises(BadRequest) as caught:
            async with asyncio.timeout(3):  # a retry would sleep 5 s
                await c.publish("https://example.com/x", b"x", delay="soon")
    assert caught.value.status == 400
    assert "soon" in caught.value.message


async def test_unreachable_relay_is_a_transport_error_after_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there
    async with AsyncClient(f"http://127.0.0.1:{port}", "t", retries=2, backoff=0.01) as c:
        with pytest.raises(TransportError):
            await c.publish("https://example.com/x")


async def test_env_configuration(relay: EmbeddedRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QSTASH_URL", relay.url + "/")
    monkeypatch.setenv("QSTASH_TOKEN", relay.service.token)
    async with AsyncClient() as c:
        result = await c.publish("https://example.com/env", b"x", delay=60)
    assert isinstance(result, PublishResult)


# --- logs, DLQ and keys ---------------------------------------------------------------------------


async def test_events_filter_and_page_with_a_cursor(client: AsyncClient) -> None:
    first = await client.publish("https://example.com/e1", b"x", delay=3600, label="a")
    second = await client.publish("https://example.com/e2", b"x", delay=3600)
    assert isinstance(first, PublishResult) and isinstance(second, PublishResult)
    page = await client.events.list(message_id=first.message_id)
    assert [(e.message_id, e.state, e.url) for e in page.events] == [
        (first.message_id, "CREATED", "https://example.com/e1")
    ]
    [event] = page.events
    assert event.method == "POST" and event.max_retries == 3 and event.label == "a"
    assert event.next_delivery_time is not None and event.next_delivery_time > event.time
    assert page.cursor is None

    ids = [first.message_id, second.message_id]
    newest = await client.events.list(message_ids=ids, state="CREATED", count=1)
    assert [e.message_id for e in newest.events] == [second.message_id]
    assert newest.cursor is not None
    older = await client.events.list(message_ids=ids, cursor=newest.cursor, count=1)
    assert [e.message_id for e in older.events] == [first.message_id]
    by_path = await client.events.list(path=["/e2", "/nowhere"], host="example.com")
    assert [e.message_id for e in by_path.events] == [second.message_id]
    assert (await client.events.list(caller_ip="10.9.9.9", flow_control_key="k")).events == []
    with pytest.raises(TypeError, match="unknown filter"):
        await client.events.list(messageId="x")  # type: ignore[call-arg]


async def test_dlq_list_get_delete(client: AsyncClient, receiver: Destination) -> None:
    receiver.respond(
        "/dead",
        lambda _: web.json_response(
            {"error": "gone"}, status=489, headers={"Upstash-NonRetryable-Error": "true"}
        ),
    )
    ids = []
    for n in range(3):
        result = await client.publish(receiver.url("/dead"), f"body {n}")
        assert isinstance(result, PublishResult)
        ids.append(result.message_id)
    page = await _dlq_when(client, 3, url=receiver.url("/dead"))
    assert {m.message_id for m in page.messages} == set(ids)
    one = await client.dlq.get(page.messages[0].dlq_id)
    assert (one.response_status, one.url, one.error) == (489, receiver.url("/dead"), "HTTP 489")
    assert one.response_body == '{"error": "gone"}'
    assert one.response_header["Upstash-NonRetryable-Error"] == ["true"]
    assert one.body_bytes is not None and one.body_bytes.startswith(b"body ")
    assert one.failed_at is not None

    await client.dlq.delete(one.dlq_id)
    with pytest.raises(NotFound):
        await client.dlq.get(one.dlq_id)
    rest = [m.dlq_id for m in page.messages if m.dlq_id != one.dlq_id]
    assert await client.dlq.delete_many(rest) == 2
    assert (await client.dlq.list()).messages == []


async def _dlq_when(client: AsyncClient, count: int, **filters: Any) -> DlqPage:
    async with asyncio.timeout(10):
        while True:
            page = await client.dlq.list(**filters)
            if len(page.messages) >= count:
                return page
            await asyncio.sleep(0.02)


async def test_keys(client: AsyncClient, relay: EmbeddedRelay) -> None:
    keys = await client.keys.get()
    assert (keys.current, keys.next) == (relay.service.keys.current, relay.service.keys.next)


async def test_sync_client_logs_dlq_and_keys(relay: EmbeddedRelay) -> None:
    def scenario() -> tuple[Any, ...]:
        with sync_client(relay) as c:
            result = c.publish("https://example.com/s", b"x", delay=60)
            assert isinstance(result, PublishResult)
            events = c.events.list(message_id=result.message_id)
            dlq = c.dlq.list(count=10)
            with pytest.raises(NotFound):
                c.dlq.delete("1-1")
            return events, dlq, c.keys.get(), c.dlq.delete_many(["1-1"])

    events, dlq, keys, deleted = await in_thread(scenario)
    assert [e.state for e in events.events] == ["CREATED"]
    assert (dlq.messages, dlq.cursor, deleted) == ([], None, 0)
    assert keys.current == relay.service.keys.current


async def test_cancel_many(client: AsyncClient) -> None:
    ids = []
    for n in range(3):
        result = await client.publish(f"https://example.com/c{n}", b"x", delay=3600)
        assert isinstance(result, PublishResult)
        ids.append(result.message_id)
    assert await client.messages.cancel_many(ids[:2]) == 2
    assert await client.messages.cancel_many(ids) == 1  # the first two are finished already


async def test_dlq_retry_publishes_again(client: AsyncClient, receiver: Destination) -> None:
    receiver.respond(
        "/flaky",
        lambda _: web.Response(status=489, headers={"Upstash-NonRetryable-Error": "true"}),
        200,
    )
    result = await client.publish(receiver.url("/flaky"), b"again")
    assert isinstance(result, PublishResult)
    page = await _dlq_when(client, 1)
    [new_id] = await client.dlq.retry([page.messages[0].dlq_id])
    assert new_id != result.message_id
    deliveries = await receiver.wait_for(2, "/flaky")
    assert deliveries[1].headers["Upstash-Message-Id"] == new_id
    assert (await client.dlq.list()).messages == []


async def test_url_groups(client: AsyncClient, receiver: Destination) -> None:
    await client.url_groups.upsert_endpoints(
        "team", [receiver.url("/a"), GroupEndpoint(receiver.url("/b"), name="b")]
    )
    group = await client.url_groups.get("team")
    assert isinstance(group, UrlGroup)
    assert group.name == "team" and group.created_at is not None
    assert group.endpoints == [
        GroupEndpoint(receiver.url("/a")),
        GroupEndpoint(receiver.url("/b"), "b"),
    ]
    published = await client.publish_json("team", {"hi": 1})
    assert isinstance(published, list)
    assert sorted(r.url or "" for r in published) == [receiver.url("/a"), receiver.url("/b")]
    await receiver.wait_for(2)

    await client.url_groups.remove_endpoints("team", names=["b"])
    assert [g.endpoints for g in await client.url_groups.list()] == [
        [GroupEndpoint(receiver.url("/a"))]
    ]
    await client.url_groups.delete("team")
    with pytest.raises(NotFound):
        await client.url_groups.get("team")


async def test_key_rotation(client: AsyncClient, relay: EmbeddedRelay) -> None:
    before = await client.keys.get()
    after = await client.keys.rotate()
    assert after.current == before.next and after.next != before.next
    assert (await client.keys.get()) == after
    assert relay.service.keys.webhook_secret is not None  # rotation keeps the webhook secret
