"""The official `qstash` Python SDK's ``queue`` and ``flow_control`` namespaces against `relay dev`:
enqueued messages in order while the first one is retried, and flow-control wait-listing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from qstash import AsyncQStash

from tests.conftest import Receiver as Destination
from tests.e2e.process import RelayProcess


@pytest.fixture
def relay_dev(tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path / "dev.db").start()
    try:
        yield process
    finally:
        assert process.stop() == 0, "".join(process.output)


def _client(relay_dev: RelayProcess) -> AsyncQStash:
    return AsyncQStash(relay_dev.env["QSTASH_TOKEN"], base_url=relay_dev.url)


async def test_enqueue_in_order_while_the_first_is_retried(
    relay_dev: RelayProcess, receiver: Destination
) -> None:
    client = _client(relay_dev)
    await client.queue.upsert("orders", parallelism=1)
    receiver.respond("/first", 500, 200)
    first = await client.message.enqueue_json(
        queue="orders", url=receiver.url("/first"), body={"n": 1}, retry_delay="400"
    )
    second = await client.message.enqueue_json(
        queue="orders", url=receiver.url("/second"), body={"n": 2}
    )
    queue = await client.queue.get("orders")
    assert (queue.name, queue.parallelism, queue.paused) == ("orders", 1, False)
    assert queue.lag == 2
    await receiver.wait_for(1, "/second", timeout=15)
    assert [r.path for r in receiver.requests] == ["/first", "/first", "/second"]
    for message in (first, second):
        logs = await client.log.list(filter={"message_id": message.message_id})  # type: ignore[union-attr]
        assert all(entry.queue == "orders" for entry in logs.logs)
    states = [e.state.value for e in reversed(logs.logs)]
    assert states[0] == "CREATED"
    assert [q.name for q in await client.queue.list()] == ["orders"]
    await client.queue.pause("orders")
    assert (await client.queue.get("orders")).paused
    await client.queue.resume("orders")
    await client.queue.delete("orders")
    assert [q.name for q in await client.queue.list()] == []


class _Gate:
    def __init__(self) -> None:
        self.open = asyncio.Event()

    async def __call__(self, _: object) -> web.Response:
        await self.open.wait()
        return web.Response()


async def test_flow_control_wait_listing(relay_dev: RelayProcess, receiver: Destination) -> None:
    client = _client(relay_dev)
    gate = _Gate()
    receiver.respond("/slow", gate)
    ids = []
    for i in range(3):
        published = await client.message.publish(
            url=receiver.url("/slow"),
            body=str(i),
            flow_control={"key": "tenant-42", "parallelism": 1, "rate": 10, "period": 60},
        )
        ids.append(published.message_id)  # type: ignore[union-attr]
    for _ in range(200):
        info = await client.flow_control.get("tenant-42")
        if info.parallelism_count == 1 and info.wait_list_size == 2:
            break
        await asyncio.sleep(0.05)
    assert (info.key, info.parallelism_max, info.rate_max, info.rate_period) == (
        "tenant-42",
        1,
        10,
        60,
    )
    assert (info.parallelism_count, info.wait_list_size, info.rate_count) == (1, 2, 1)
    message = await client.message.get(ids[0])
    assert message.flow_control is not None and message.flow_control.key == "tenant-42"
    assert message.flow_control.parallelism == 1 and message.flow_control.period == 60
    overall = await client.flow_control.get_global_parallelism()
    assert overall.parallelism_max > 0 and overall.parallelism_count >= 1

    await client.flow_control.pause("tenant-42")
    assert (await client.flow_control.get("tenant-42")).is_paused
    gate.open.set()
    await receiver.wait_for(1, "/slow")
    await asyncio.sleep(0.3)
    assert len(receiver.at("/slow")) == 1  # paused: the wait list stays
    await client.flow_control.pin("tenant-42", {"parallelism": 2, "rate": 100, "period": 1})
    info = await client.flow_control.get("tenant-42")
    assert info.is_pinned_parallelism and info.is_pinned_rate and info.parallelism_max == 2
    await client.flow_control.resume("tenant-42")
    await receiver.wait_for(3, "/slow", timeout=15)
    await client.flow_control.unpin("tenant-42", {"parallelism": True, "rate": True})
    await client.flow_control.reset_rate("tenant-42")
    info = await client.flow_control.get("tenant-42")
    assert not info.is_pinned_parallelism and not info.is_pinned_rate
    assert (info.rate_count, info.wait_list_size, info.parallelism_count) == (0, 0, 0)
