"""The official `qstash` SDK's schedule namespace against `relay dev`.

Cron has minute resolution. So that a `* * * * *` schedule fires within seconds, the relay runs
with ``RELAY_CLOCK_OFFSET_SECONDS`` (honoured by `relay dev` only): its clock starts a few
seconds before a whole minute. Signatures keep the real time, so `qstash.Receiver` verifies the
delivery as it would any other.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from qstash import AsyncQStash
from qstash.log import LogState
from qstash.schedule import ScheduleState

from tests.conftest import OfficialVerdicts
from tests.conftest import Receiver as Destination
from tests.e2e.process import RelayProcess

pytestmark = pytest.mark.slow

LEAD = 8  # seconds of relay time from its start to the next whole minute (starting takes ~1 s)


@pytest.fixture
def relay_dev(tmp_path: Path) -> Iterator[tuple[RelayProcess, int]]:
    """`relay dev` whose clock reaches a whole minute LEAD seconds after it starts; with the
    epoch second of that minute."""
    now = time.time()
    minute = math.ceil((now + LEAD) / 60) * 60
    offset = minute - LEAD - now
    process = RelayProcess(
        tmp_path / "dev.db", env={"RELAY_CLOCK_OFFSET_SECONDS": f"{offset:.3f}"}
    ).start()
    try:
        yield process, minute
    finally:
        assert process.stop() == 0, "".join(process.output)


async def test_official_sdk_schedule_fires_within_seconds(
    relay_dev: tuple[RelayProcess, int], receiver: Destination
) -> None:
    process, minute = relay_dev
    verify = verdicts = OfficialVerdicts(
        current_signing_key=process.env["QSTASH_CURRENT_SIGNING_KEY"],
        next_signing_key=process.env["QSTASH_NEXT_SIGNING_KEY"],
    )

    receiver.respond("/cron", verify)
    client = AsyncQStash(process.env["QSTASH_TOKEN"], base_url=process.url)
    schedule_id = await client.schedule.create_json(
        destination=receiver.url("/cron?tenant=a"),
        cron="* * * * *",
        body={"job": "report"},
        headers={"X-Job": "report"},
        retries=0,
        label="reports",
    )
    created = await client.schedule.get(schedule_id)
    assert created.schedule_id == schedule_id and created.cron == "* * * * *"
    assert created.destination == receiver.url("/cron?tenant=a")
    assert created.retries == 0 and created.label == "reports" and not created.paused
    assert created.next_schedule_time in (minute * 1000, (minute + 60) * 1000)

    [delivery] = await receiver.wait_for(1, "/cron", timeout=LEAD + 70)
    assert verdicts == ["accepted"]
    assert delivery.headers["Upstash-Schedule-Id"] == schedule_id
    assert delivery.headers["X-Job"] == "report"
    assert delivery.body == b'{"job": "report"}'
    assert delivery.url.endswith("/cron?tenant=a")

    fired = await client.schedule.get(schedule_id)
    assert fired.last_schedule_time is not None
    assert fired.last_schedule_time >= created.next_schedule_time  # type: ignore[operator]
    assert fired.next_schedule_time == created.next_schedule_time + 60_000  # type: ignore[operator]
    assert fired.last_schedule_states is not None
    [(message_id, state)] = fired.last_schedule_states.items()
    assert message_id == delivery.headers["Upstash-Message-Id"]
    assert state in (ScheduleState.IN_PROGRESS, ScheduleState.SUCCESS)
    logs = await client.log.list(filter={"schedule_id": schedule_id, "state": LogState.CREATED})
    assert [entry.message_id for entry in logs.logs] == [message_id]

    await client.schedule.pause(schedule_id)
    assert (await client.schedule.get(schedule_id)).paused
    await client.schedule.resume(schedule_id)
    assert [s.schedule_id for s in await client.schedule.list()] == [schedule_id]
    await client.schedule.delete(schedule_id)
    assert await client.schedule.list() == []


async def test_official_sdk_schedule_to_a_url_group_with_its_own_id(
    relay_dev: tuple[RelayProcess, int], receiver: Destination
) -> None:
    process, _ = relay_dev
    client = AsyncQStash(process.env["QSTASH_TOKEN"], base_url=process.url)
    await client.url_group.upsert_endpoints(
        url_group="team", endpoints=[{"url": receiver.url("/a")}, {"url": receiver.url("/b")}]
    )
    for cron in ("0 * * * *", "CRON_TZ=Europe/Berlin 30 7 * * 1-5"):
        schedule_id = await client.schedule.create(
            destination="team",
            cron=cron,
            body="hi",
            schedule_id="team-digest",
            method="PUT",
            callback=receiver.url("/cb"),
            delay="30s",
            timeout=20,
        )
        assert schedule_id == "team-digest"
    [schedule] = await client.schedule.list()
    assert schedule.destination == "team" and schedule.cron == "CRON_TZ=Europe/Berlin 30 7 * * 1-5"
    assert (schedule.method, schedule.delay, schedule.timeout) == ("PUT", 30, 20)
    assert schedule.callback == receiver.url("/cb") and schedule.body == "hi"
    assert schedule.caller_ip == "127.0.0.1"
