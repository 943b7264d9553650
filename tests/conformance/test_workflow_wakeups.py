"""Waiter timeouts on AWS answered by their SQS wake-up (relay.workflows.waiters, AwsBackend
.wake_at, aws_runtime's TimerDue seam), not by the scheduler's minute: the AWS functions
in-process on moto — relay's HTTP API on a real port, the delivery function
(``aws_runtime.Relay.deliver``) fed by an event-source pump, the scheduler only when a test runs
it — on one injected clock. SQS's DelaySeconds is real time: the waits here are of a second or
two."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from relay import protocol as p
from relay.aws_runtime import Relay
from relay.backends.aws import SQS_MAX_DELAY, AwsBackend
from relay.clock import ManualClock
from relay.config import Settings
from relay.http.app import create_app
from relay.server import EmbeddedRelay
from relay.service import RelayService
from relay.signing import SigningKeys
from relay.workflows import outbox, waiter_index, waiters
from tests.conformance.test_workflow_deadline_index import counted, register
from tests.conformance.test_workflow_runs import _batch, _init
from tests.conformance.test_workflow_waiters import _last_entry, _wait
from tests.conftest import Api, Received, Receiver, _boto_session, aws_backend

_QUEUE_COUNTS = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


@dataclass
class Functions:
    """The stack's functions on one backend and clock: ``url`` serves the API; ``pump`` is the
    SQS event source of the delivery function; ``relay.tick()`` is the scheduler's run."""

    relay: Relay
    url: str
    clock: ManualClock
    sqs: Any
    queue_url: str

    @property
    def service(self) -> RelayService:
        return self.relay.service

    async def pump(self) -> int:
        """Hand the records visible now to the delivery function and delete those it did not
        report failed, as the event source mapping does; how many records it got."""
        answer = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
        )
        messages = answer.get("Messages", [])
        if not messages:
            return 0
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
            }
            for m in messages
        ]
        result = await self.relay.deliver(records)
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for m in messages:
            if m["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
        return len(messages)

    async def deliver_until(
        self, receiver: Receiver, count: int, path: str, timeout: float = 10
    ) -> list[Received]:
        """Pump until ``receiver`` has ``count`` requests to ``path``."""
        deadline = time.monotonic() + timeout
        while len(receiver.at(path)) < count:
            assert time.monotonic() < deadline, f"{len(receiver.at(path))} of {count} deliveries"
            if not await self.pump():
                await asyncio.sleep(0.1)
        return receiver.at(path)

    def queued(self) -> int:
        """Records in the dispatch queue: visible, in flight or still delayed."""
        answer = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=_QUEUE_COUNTS
        )
        return sum(int(answer["Attributes"].get(name, 0)) for name in _QUEUE_COUNTS)


@pytest.fixture
def reach(request: pytest.FixtureRequest) -> int:
    """The backend's ``max_sqs_delay`` (s): SQS's limit unless a test narrows it."""
    return int(getattr(request, "param", SQS_MAX_DELAY))


@pytest.fixture
def moto_backend(reach: int) -> Iterator[AwsBackend]:
    with aws_backend(max_sqs_delay=reach) as backend:
        yield backend


@pytest.fixture
async def functions(moto_backend: AwsBackend) -> AsyncIterator[Functions]:
    clock = ManualClock()
    keys = SigningKeys(p.DEV_CURRENT_SIGNING_KEY, p.DEV_NEXT_SIGNING_KEY)
    settings = Settings()
    service = RelayService(
        moto_backend, settings, keys=keys, token=p.DEV_TOKEN, clock=clock, allow_private=True
    )
    runner = web.AppRunner(create_app(service, max_request_bytes=settings.max_request_bytes))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    relay = Relay(moto_backend, service, session, _boto_session())
    assert moto_backend.queue_url is not None
    sqs = _boto_session().client("sqs")
    try:
        yield Functions(relay, url, clock, sqs, moto_backend.queue_url)
    finally:
        await session.close()
        await runner.cleanup()


@pytest.fixture
async def api(functions: Functions) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        # Api reads only the served URL and the service's token.
        yield Api(cast(EmbeddedRelay, functions), session)


async def _start(functions: Functions, api: Api, receiver: Receiver, run_id: str) -> str:
    url = receiver.url("/wf")
    await _batch(api, _init(url, run_id, '{"n": 1}'))
    await functions.deliver_until(receiver, 1, "/wf")
    assert functions.queued() == 0
    return url


async def test_a_short_timeout_is_answered_by_its_wake_up_without_the_scheduler(
    functions: Functions, api: Api, receiver: Receiver
) -> None:
    url = await _start(functions, api, receiver, "wfr_w")
    await _wait(api, url, "wfr_w", "evt", timeout="1s")
    deadline = functions.clock.now_ms() + 1000
    assert functions.queued() == 1  # its wake-up, delayed a second
    await asyncio.sleep(1.2)
    # Here first (this function's clock has not reached the deadline): hidden again, no answer.
    assert await functions.pump() == 1
    assert [w.deadline for w in await waiters.waiters_of(functions.service, "evt")] == [deadline]
    functions.clock.advance(1000)
    [_, timed_out] = await functions.deliver_until(receiver, 2, "/wf")
    assert _last_entry(timed_out)["waitTimeout"] is True
    assert _last_entry(timed_out)["waitTimeoutDeadline"] == deadline
    assert await waiters.waiters_of(functions.service, "evt") == []
    assert functions.queued() == 0  # the wake-up was deleted once it had run


async def test_a_notify_that_wins_leaves_its_wake_up_nothing_to_do(
    functions: Functions, api: Api, receiver: Receiver
) -> None:
    url = await _start(functions, api, receiver, "wfr_n")
    await _wait(api, url, "wfr_n", "evt-n", timeout="1s")
    status, woken = await api.call("POST", "/v2/notify/evt-n", data=b"first")
    assert status == 200 and len(woken) == 1
    [_, notified] = await functions.deliver_until(receiver, 2, "/wf")
    functions.clock.advance(1000)
    deadline = time.monotonic() + 10
    while functions.queued():  # the wake-up comes, runs and is deleted
        assert time.monotonic() < deadline, "the wake-up was never handled"
        if not await functions.pump():
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)
    assert len(receiver.at("/wf")) == 2  # the notify's result only
    assert _last_entry(notified)["waitTimeout"] is False
    entries = await functions.service.backend.run_entries("wfr_n")
    assert [json.loads(e.body).get("waitTimeout") for e in entries[1:]] == [False]
    assert await functions.service.backend.list_records(outbox.OUTBOX) == []


@pytest.mark.parametrize("reach", [2], indirect=True)
async def test_a_deadline_beyond_reach_is_armed_by_the_scheduler_once(
    functions: Functions, api: Api, receiver: Receiver
) -> None:
    """SQS brings a wake-up at most ``reach`` ahead (2 s here, 15 minutes on AWS): a longer
    timeout's wake-up is sent by the first scheduler run that finds it within reach."""
    url = await _start(functions, api, receiver, "wfr_l")
    await _wait(api, url, "wfr_l", "evt-l", timeout="5s")
    assert functions.queued() == 0  # beyond reach: no wake-up yet
    functions.clock.advance(2000)
    await functions.relay.tick()
    assert functions.queued() == 0  # still beyond reach
    functions.clock.advance(1500)
    await functions.relay.tick()
    await functions.relay.tick()  # a later run sends no second one
    assert functions.queued() == 1
    functions.clock.advance(1500)
    [_, timed_out] = await functions.deliver_until(receiver, 2, "/wf")
    assert _last_entry(timed_out)["waitTimeout"] is True
    assert functions.queued() == 0


@pytest.mark.parametrize("reach", [2], indirect=True)
async def test_a_pass_reads_the_deadlines_entering_reach_not_every_waiter(
    functions: Functions, api: Api, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of many waits beyond reach, a pass reads the index entries that came within reach since
    the last arming (and the next deadline), sends their wake-ups once, and those answer them."""
    url = await _start(functions, api, receiver, "wfr_r")
    service = functions.service
    for n in range(40):
        await register(service, "wfr_r", f"later-{n}", "1h")
    for n in range(2):
        functions.clock.advance(1)  # two deadlines (one wake-up each)
        await register(service, "wfr_r", f"soon-{n}", "3s", url)
    await waiters.expire(service, functions.clock.now_ms())  # nothing within reach yet
    assert functions.queued() == 0
    counting = counted(service, monkeypatch)
    functions.clock.advance(1500)
    await waiters.expire(service, functions.clock.now_ms())
    # Nothing due, the two deadlines entering reach, the next deadline.
    assert counting.listed == [(waiter_index.DUE, 0), (waiter_index.DUE, 2), (waiter_index.DUE, 1)]
    assert functions.queued() == 2
    counting.listed.clear()
    await waiters.expire(service, functions.clock.now_ms())  # armed already: not read again
    assert counting.listed == [(waiter_index.DUE, 0), (waiter_index.DUE, 1)]
    assert functions.queued() == 2
    functions.clock.advance(1500)
    await functions.deliver_until(receiver, 3, "/wf")
    assert sum(e.get("waitTimeout") is True for e in await _entries(service, "wfr_r")) == 2
    assert len(await service.backend.list_records(waiters.WAITER)) == 40


async def _entries(service: RelayService, run_id: str) -> list[dict[str, Any]]:
    bodies = [json.loads(e.body) for e in await service.backend.run_entries(run_id)]
    return [b for b in bodies if isinstance(b, dict)]
