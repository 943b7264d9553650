"""A schedule on template.yaml's stack run locally (infra/): the official `qstash` SDK creates it
through the emulated HttpApi, lambda/scheduler.py fires it, lambda/deliver.py delivers it, and
`qstash.Receiver` verifies the signature.

The scheduler runs every second here (every minute on AWS), and every function's clock is set a
few seconds before a whole minute (an ``OffsetClock`` handed to ``open_relay``), so a `* * * * *`
schedule fires within seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Mapping

import pytest
from qstash import AsyncQStash

from infra.dev_aws import DEV_CREDENTIALS
from infra.emulator import LocalAws
from relay import protocol as p
from relay.aws_runtime import LambdaRuntime, Relay, open_relay
from relay.clock import OffsetClock
from tests.conftest import QUICK_STACK, OfficialVerdicts, Receiver, assert_within_policies

pytestmark = pytest.mark.slow

LEAD = 10  # seconds from the stack's start to the next whole minute of its functions' clock


@pytest.fixture
async def stack() -> AsyncIterator[tuple[LocalAws, int]]:
    now = time.time()
    minute = math.ceil((now + LEAD) / 60) * 60
    clock = OffsetClock(int((minute - LEAD - now) * 1000))

    def opener(environ: Mapping[str, str]) -> Awaitable[Relay]:
        return open_relay(environ, clock=clock)

    local = await LocalAws(
        credentials=DEV_CREDENTIALS, tick_seconds=1, parameters=QUICK_STACK
    ).start()
    for container in local.containers.values():  # before their first invocation
        container.module.runtime = LambdaRuntime(opener=opener)
    try:
        yield local, minute
    finally:
        await local.stop()
    assert_within_policies(local.denied)


async def test_official_sdk_schedule_fired_by_the_scheduler_lambda(
    stack: tuple[LocalAws, int], receiver: Receiver
) -> None:
    local, minute = stack
    verify = verdicts = OfficialVerdicts(
        current_signing_key=p.DEV_CURRENT_SIGNING_KEY, next_signing_key=p.DEV_NEXT_SIGNING_KEY
    )

    receiver.respond("/cron", verify)
    client = AsyncQStash(p.DEV_TOKEN, base_url=local.url)
    schedule_id = await client.schedule.create_json(
        destination=receiver.url("/cron"), cron="* * * * *", body={"on": "aws"}
    )
    created = await client.schedule.get(schedule_id)
    assert created.next_schedule_time in (minute * 1000, (minute + 60) * 1000)
    [delivery] = await receiver.wait_for(1, "/cron", timeout=LEAD + 75)
    assert verdicts == ["accepted"]
    assert delivery.headers["Upstash-Schedule-Id"] == schedule_id
    assert delivery.body == b'{"on": "aws"}'
    fired = await client.schedule.get(schedule_id)
    assert fired.next_schedule_time == created.next_schedule_time + 60_000  # type: ignore[operator]
    assert fired.last_schedule_states is not None and len(fired.last_schedule_states) == 1
    await client.schedule.delete(schedule_id)
    assert await client.schedule.list() == []
