"""The official `qstash` SDK's queues and flow control on template.yaml's stack run locally: the
API, delivery and ticker functions unchanged, the SQS event source emulated (infra/)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from qstash import AsyncQStash

from infra.emulator import LocalAws
from relay import protocol as p
from tests.conftest import Receiver
from tests.e2e.test_aws_stack import stack

__all__ = ["stack"]  # the fixture
pytestmark = pytest.mark.slow


async def test_enqueue_in_order_while_the_first_is_retried(
    stack: LocalAws, receiver: Receiver
) -> None:
    client = AsyncQStash(p.DEV_TOKEN, base_url=stack.url)
    receiver.respond("/first", 500, 200)
    await client.message.enqueue_json(
        queue="orders", url=receiver.url("/first"), body={"n": 1}, retry_delay="200"
    )
    await client.message.enqueue_json(queue="orders", url=receiver.url("/second"), body={"n": 2})
    await receiver.wait_for(1, "/second", timeout=30)
    assert [r.path for r in receiver.requests] == ["/first", "/first", "/second"]
    for _ in range(200):  # the second's outcome is stored just after its delivery
        queue = await client.queue.get("orders")
        if queue.lag == 0:
            break
        await asyncio.sleep(0.05)
    assert (queue.name, queue.parallelism, queue.lag) == ("orders", 1, 0)


async def test_flow_control_wait_listing(stack: LocalAws, receiver: Receiver) -> None:
    client = AsyncQStash(p.DEV_TOKEN, base_url=stack.url)
    release = asyncio.Event()

    async def slow(_: object) -> web.Response:
        await release.wait()
        return web.Response()

    receiver.respond("/slow", slow)
    for i in range(3):
        await client.message.publish(
            url=receiver.url("/slow"), body=str(i), flow_control={"key": "k", "parallelism": 1}
        )
    for _ in range(300):
        info = await client.flow_control.get("k")
        if info.parallelism_count == 1 and info.wait_list_size == 2:
            break
        await asyncio.sleep(0.05)
    assert (info.parallelism_max, info.parallelism_count, info.wait_list_size) == (1, 1, 2)
    release.set()
    await receiver.wait_for(3, "/slow", timeout=30)
    assert [r.body for r in receiver.requests] == [b"0", b"1", b"2"]
