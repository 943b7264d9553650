"""relay.client's ``queues`` and ``flow_control`` namespaces against a running relay."""

from __future__ import annotations

import asyncio

import pytest

from relay.client import (
    AsyncClient,
    FlowControlInfo,
    GlobalParallelism,
    NotFound,
    PublishResult,
    Queue,
)
from relay.server import EmbeddedRelay
from tests.conftest import Api
from tests.conftest import Receiver as Destination
from tests.e2e.test_client import client, in_thread, sync_client

__all__ = ["client"]  # the fixture


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_async_queues(client: AsyncClient, api: Api, receiver: Destination) -> None:
    await client.queues.upsert("jobs", parallelism=2, paused=True)
    first = await client.queues.enqueue_json("jobs", receiver.url("/j"), {"n": 1})
    second = await client.queues.enqueue("jobs", receiver.url("/j"), "two", retries=0)
    assert isinstance(first, PublishResult) and isinstance(second, PublishResult)
    queue = await client.queues.get("jobs")
    assert queue == Queue(
        "jobs",
        parallelism=2,
        paused=True,
        lag=2,
        created_at=queue.created_at,
        updated_at=queue.updated_at,
    )
    assert [q.name for q in await client.queues.list()] == ["jobs"]
    await asyncio.sleep(0.2)
    assert receiver.requests == []
    await client.queues.resume("jobs")
    await receiver.wait_for(2, "/j")
    assert receiver.requests[0].headers["Content-Type"] == "application/json"
    await client.queues.pause("jobs")
    assert (await client.queues.get("jobs")).paused
    await client.queues.delete("jobs")
    with pytest.raises(NotFound):
        await client.queues.get("jobs")
    message = await client.messages.get(first.message_id)
    assert message.queue_name == "jobs"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_async_flow_control(client: AsyncClient, receiver: Destination) -> None:
    published = await client.publish(
        receiver.url("/f"),
        "x",
        flow_control={"key": "tenant-1", "parallelism": 2, "rate": 5, "period": 60},
    )
    assert isinstance(published, PublishResult)
    message = await client.messages.get(published.message_id)
    assert (message.flow_control_key, message.parallelism, message.rate, message.period) == (
        "tenant-1",
        2,
        5,
        60,
    )
    await receiver.wait_for(1, "/f")
    info = await client.flow_control.get("tenant-1")
    assert isinstance(info, FlowControlInfo)
    assert (info.key, info.parallelism_max, info.rate_max, info.rate_period) == (
        "tenant-1",
        2,
        5,
        60,
    )
    await client.flow_control.pin("tenant-1", parallelism=1, period="2m")
    info = await client.flow_control.get("tenant-1")
    assert info.is_pinned_parallelism and info.is_pinned_rate and info.rate_period == 120
    await client.flow_control.unpin("tenant-1", rate=True)
    info = await client.flow_control.get("tenant-1")
    assert info.is_pinned_parallelism and not info.is_pinned_rate
    await client.flow_control.pause("tenant-1")
    assert (await client.flow_control.get("tenant-1")).is_paused
    await client.flow_control.resume("tenant-1")
    await client.flow_control.reset_rate("tenant-1")
    assert (await client.flow_control.get("tenant-1")).rate_count == 0
    assert [i.key for i in await client.flow_control.list(search="tenant")] == ["tenant-1"]
    assert await client.flow_control.list(search="nobody") == []
    parallelism = await client.flow_control.global_parallelism()
    assert isinstance(parallelism, GlobalParallelism) and parallelism.parallelism_max > 0
    with pytest.raises(NotFound):
        await client.flow_control.get("unknown")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_blocking_client(relay: EmbeddedRelay, receiver: Destination) -> None:
    with sync_client(relay) as c:
        result = await in_thread(lambda: c.queues.enqueue("blocking", receiver.url("/b"), "x"))
        assert isinstance(result, PublishResult)
        await receiver.wait_for(1, "/b")
        queue = await in_thread(lambda: c.queues.get("blocking"))
        assert queue.parallelism == 1
        await in_thread(lambda: c.flow_control.pin("k", rate=3))
        info = await in_thread(lambda: c.flow_control.get("k"))
        assert info.rate_max == 3 and info.rate_period == 1
