"""Queues: FIFO with parallelism, the next message waiting for the current one's retries and
callbacks; pause and resume; the queue API's shapes."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from relay.clock import ManualClock
from relay.server import EmbeddedRelay
from tests.conftest import Api, Receiver


async def _enqueue(
    api: Api, queue: str, destination: str, body: str = "x", headers: dict[str, str] | None = None
) -> str:
    status, answer = await api.call(
        "POST", f"/v2/enqueue/{queue}/{destination}", data=body, headers=headers
    )
    assert status == 201, answer
    return str(answer["messageId"])


async def _quiet(receiver: Receiver, path: str, seconds: float = 0.3) -> None:
    """Nothing arrives at ``path`` for a while (the worker polls every 50 ms)."""
    await asyncio.sleep(seconds)
    assert receiver.at(path) == []


class _Gate:
    """A destination that holds every request until released; counts those it holds."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.holding = 0

    async def __call__(self, _: object) -> web.Response:
        self.holding += 1
        try:
            await self.open.wait()
        finally:
            self.holding -= 1
        return web.Response()


async def _eventually(check: Any, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_next_message_waits_while_the_first_is_retried(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    receiver.respond("/first", 500, 200)
    first = await _enqueue(
        api, "orders", receiver.url("/first"), headers={"Upstash-Retry-Delay": "5000"}
    )
    second = await _enqueue(api, "orders", receiver.url("/second"))
    await api.wait_state(first, "RETRY")
    await _quiet(receiver, "/second")
    assert await api.states(second) == ["CREATED"]
    clock.advance(5000)
    relay.worker.notify()
    await api.wait_state(second, "DELIVERED")
    assert [r.path for r in receiver.requests] == ["/first", "/first", "/second"]
    [delivered] = [e for e in await api.events(messageId=first) if e["state"] == "DELIVERED"]
    [active] = [e for e in await api.events(messageId=second) if e["state"] == "ACTIVE"]
    assert delivered["queueName"] == active["queueName"] == "orders"
    status, message = await api.call("GET", f"/v2/messages/{second}")
    assert status == 200 and message["queueName"] == "orders"


async def test_failed_message_releases_the_queue(
    relay: EmbeddedRelay, api: Api, receiver: Receiver
) -> None:
    receiver.respond("/bad", 500)
    first = await _enqueue(api, "q", receiver.url("/bad"), headers={"Upstash-Retries": "0"})
    second = await _enqueue(api, "q", receiver.url("/good"))
    await api.wait_state(first, "FAILED")
    await api.wait_state(second, "DELIVERED")


async def test_next_message_waits_for_the_callback(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    receiver.respond("/cb", 500, 200)
    first = await _enqueue(
        api,
        "cbq",
        receiver.url("/job"),
        headers={"Upstash-Callback": receiver.url("/cb"), "Upstash-Retry-Delay": "1000"},
    )
    second = await _enqueue(api, "cbq", receiver.url("/next"))
    await api.wait_state(first, "DELIVERED")
    await receiver.wait_for(1, "/cb")
    await _quiet(receiver, "/next")
    clock.advance(1000)
    relay.worker.notify()
    await receiver.wait_for(2, "/cb")
    await api.wait_state(second, "DELIVERED")
    assert [r.path for r in receiver.requests] == ["/job", "/cb", "/cb", "/next"]


async def test_parallelism_two(api: Api, receiver: Receiver) -> None:
    gate = _Gate()
    receiver.respond("/slow", gate)
    status, _ = await api.call(
        "POST", "/v2/queues", json={"queueName": "wide", "parallelism": 2, "paused": False}
    )
    assert status == 200
    ids = [await _enqueue(api, "wide", receiver.url("/slow"), str(i)) for i in range(3)]
    await _eventually(lambda: gate.holding == 2)
    await asyncio.sleep(0.3)
    assert gate.holding == 2 and len(receiver.requests) == 0
    assert await api.states(ids[2]) == ["CREATED"]
    _, queue = await api.call("GET", "/v2/queues/wide")
    assert queue["lag"] == 3 and queue["parallelism"] == 2
    gate.open.set()
    for message_id in ids:
        await api.wait_state(message_id, "DELIVERED")
    bodies = [r.body for r in receiver.requests]
    assert sorted(bodies[:2]) == [b"0", b"1"] and bodies[2] == b"2"


async def test_paused_queue_accepts_and_delivers_after_resume(api: Api, receiver: Receiver) -> None:
    await api.call(
        "POST", "/v2/queues", json={"queueName": "held", "parallelism": 1, "paused": True}
    )
    message_id = await _enqueue(api, "held", receiver.url("/later"))
    await _quiet(receiver, "/later")
    _, queue = await api.call("GET", "/v2/queues/held")
    assert queue["paused"] is True and queue["lag"] == 1
    status, _ = await api.call("POST", "/v2/queues/held/resume")
    assert status == 200
    await api.wait_state(message_id, "DELIVERED")
    _, queue = await api.call("GET", "/v2/queues/held")
    assert queue["paused"] is False and queue["lag"] == 0
    status, _ = await api.call("POST", "/v2/queues/held/pause")
    _, queue = await api.call("GET", "/v2/queues/held")
    assert status == 200 and queue["paused"] is True


async def test_queue_api_shapes(api: Api, receiver: Receiver) -> None:
    await _enqueue(api, "auto", receiver.url("/a"))
    status, queue = await api.call("GET", "/v2/queues/auto")
    assert status == 200
    assert set(queue) == {"name", "parallelism", "createdAt", "updatedAt", "lag", "paused"}
    assert queue["name"] == "auto" and queue["parallelism"] == 1 and queue["paused"] is False
    await api.call("POST", "/v2/queues", json={"queueName": "other", "parallelism": 3})
    status, listed = await api.call("GET", "/v2/queues")
    assert status == 200 and [q["name"] for q in listed] == ["auto", "other"]
    assert listed[1]["parallelism"] == 3
    status, _ = await api.call("DELETE", "/v2/queues/other")
    assert status == 200
    assert (await api.call("GET", "/v2/queues/other"))[0] == 404
    assert (await api.call("DELETE", "/v2/queues/other"))[0] == 404
    assert (await api.call("POST", "/v2/queues/nope/pause"))[0] == 404
    status, answer = await api.call(
        "POST", "/v2/queues", json={"queueName": "bad", "parallelism": 0}
    )
    assert status == 400, answer
    assert (await api.call("POST", "/v2/enqueue/bad name/" + receiver.url("/a")))[0] == 400


async def test_batch_items_enqueue(api: Api, receiver: Receiver) -> None:
    receiver.respond("/one", 500, 200)
    items = [
        {
            "destination": receiver.url("/one"),
            "headers": {"Upstash-Retry-Delay": "0"},
            "body": "1",
            "queue": "batchq",
        },
        {"destination": receiver.url("/two"), "headers": {}, "body": "2", "queue": "batchq"},
        {"destination": receiver.url("/free"), "headers": {}, "body": "3", "queue": None},
    ]
    status, answer = await api.call("POST", "/v2/batch", json=items)
    assert status == 201, answer
    ids = [a["messageId"] for a in answer]
    for message_id in ids:
        await api.wait_state(message_id, "DELIVERED")
    in_queue = [r.path for r in receiver.requests if r.path != "/free"]
    assert in_queue == ["/one", "/one", "/two"]
    status, message = await api.call("GET", f"/v2/messages/{ids[1]}")
    assert message["queueName"] == "batchq"


async def test_deleting_a_queue_keeps_its_messages(api: Api, receiver: Receiver) -> None:
    await api.call("POST", "/v2/queues", json={"queueName": "gone", "paused": True})
    message_id = await _enqueue(api, "gone", receiver.url("/kept"))
    await _quiet(receiver, "/kept", 0.2)
    assert (await api.call("DELETE", "/v2/queues/gone"))[0] == 200
    await api.wait_state(message_id, "DELIVERED")  # at the default: parallelism 1, running


async def test_cancelled_head_lets_the_next_one_through(api: Api, receiver: Receiver) -> None:
    gate = _Gate()
    receiver.respond("/hold", gate)
    first = await _enqueue(api, "c", receiver.url("/hold"))
    second = await _enqueue(api, "c", receiver.url("/then"))
    await _eventually(lambda: gate.holding == 1)
    status, _ = await api.call("DELETE", f"/v2/messages/{first}")
    assert status == 200
    await api.wait_state(second, "DELIVERED")
    gate.open.set()
