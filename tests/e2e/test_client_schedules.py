"""relay.client's ``schedules`` namespace against a running relay: create (and replace), get,
list, pause, resume, delete, and a fire that reaches the destination."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from relay import scheduling
from relay.client import AsyncClient, BadRequest, Client, NotFound, Schedule
from relay.clock import ManualClock
from relay.server import EmbeddedRelay
from tests.conftest import Receiver


@pytest.fixture
async def client(relay: EmbeddedRelay) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(relay.url, relay.service.token) as c:
        yield c


async def test_async_schedules(
    client: AsyncClient, relay: EmbeddedRelay, receiver: Receiver, clock: ManualClock
) -> None:
    relay.ticker.stop()  # ticked here
    now = clock.now_ms()
    clock.advance(60_000 - now % 60_000 - 1_000)  # a second before a whole minute
    schedule_id = await client.schedules.create_json(
        receiver.url("/job?x=1"),
        "* * * * *",
        {"run": True},
        retries=1,
        delay=0,
        headers={"X-Job": "nightly"},
        label="jobs",
        schedule_id="nightly-job",
    )
    assert schedule_id == "nightly-job"
    schedule = await client.schedules.get(schedule_id)
    assert isinstance(schedule, Schedule)
    assert (schedule.destination, schedule.cron, schedule.retries) == (
        receiver.url("/job?x=1"),
        "* * * * *",
        1,
    )
    assert schedule.body == '{"run":true}'
    assert schedule.header == {"Content-Type": ["application/json"], "X-Job": ["nightly"]}
    assert schedule.labels == ("jobs",) and not schedule.paused
    assert schedule.next_schedule_time == clock.now_ms() + 1_000

    clock.advance(1_000)
    await scheduling.tick(relay.service)
    [delivery] = await receiver.wait_for(1, "/job")
    assert delivery.headers["Upstash-Schedule-Id"] == "nightly-job"
    fired = await client.schedules.get(schedule_id)
    assert fired.last_schedule_time == clock.now_ms()
    assert list(fired.last_schedule_states.values()) in (["IN_PROGRESS"], ["SUCCESS"])

    await client.schedules.pause(schedule_id)
    assert (await client.schedules.get(schedule_id)).paused
    await client.schedules.resume(schedule_id)
    assert [s.schedule_id for s in await client.schedules.list()] == [schedule_id]
    await client.schedules.delete(schedule_id)
    with pytest.raises(NotFound):
        await client.schedules.get(schedule_id)
    with pytest.raises(BadRequest) as caught:
        await client.schedules.create(receiver.url("/x"), "every minute")
    assert "five fields" in caught.value.message


async def test_sync_schedules(relay: EmbeddedRelay, receiver: Receiver) -> None:
    def run() -> list[Schedule]:
        with Client(relay.url, relay.service.token) as client:
            first = client.schedules.create(receiver.url("/a"), "0 * * * *", "text", queue="q1")
            client.schedules.create(receiver.url("/b"), "CRON_TZ=Europe/Paris 0 8 * * 1-5")
            client.schedules.pause(first)
            return client.schedules.list()

    # Listed oldest first; these two were made at the same (injected) time.
    first, second = sorted(await asyncio.to_thread(run), key=lambda s: s.destination)
    assert first.paused and first.body == "text" and first.queue_name == "q1"
    assert second.cron == "CRON_TZ=Europe/Paris 0 8 * * 1-5" and not second.paused
