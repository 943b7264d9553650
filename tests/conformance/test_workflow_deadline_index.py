"""The waiters' deadline index (relay.workflows.waiter_index): ``expire`` reads the index entries
that are due and the next one, not every waiter; waiters stored without index entries (before
the index, or by an older version during a rolling deploy) are indexed by the hourly sweep and
still time out; a wait that crashed between its index entry and its waiter leaves nothing to
answer and its entry is dropped. Real backends (SQLite, moto), counted through a thin wrapper
that passes every call on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay import protocol as p
from relay.backends.base import Backend
from relay.clock import ManualClock
from relay.config import Settings
from relay.server import EmbeddedRelay
from relay.service import RelayService
from relay.signing import SigningKeys
from relay.workflows import outbox, waiter_index, waiters
from tests.conformance.test_runs_port import T0
from tests.conformance.test_runs_port import _start as start_run
from tests.conformance.test_workflow_crash_windows import Crash, _results
from tests.conformance.test_workflow_waiters import STEP, _last_entry, _start, _wait
from tests.conftest import Api, Receiver

_WAITER_KINDS = (waiters.WAITER, waiter_index.DUE, waiter_index.OF_RUN, waiters.EARLY_EVENT)


class Counting:
    """The backend under test, noting how many records each ``list_records`` call of a waiter
    kind returned, and which such records were read by key (the delivery worker's own reads,
    if any, are not the pass's)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.listed: list[tuple[str, int]] = []
        self.got: list[str] = []  # the kinds of the records read by key

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def list_records(self, kind: str, prefix: str = "", **bounds: Any) -> Any:
        records = await self.inner.list_records(kind, prefix, **bounds)
        if kind in _WAITER_KINDS:
            self.listed.append((kind, len(records)))
        return records

    async def get_record(self, kind: str, key: str) -> Any:
        if kind in _WAITER_KINDS:
            self.got.append(kind)
        return await self.inner.get_record(kind, key)


def counted(service: RelayService, monkeypatch: pytest.MonkeyPatch) -> Counting:
    """Route ``service``'s backend calls through a ``Counting`` wrapper for the test."""
    counting = Counting(service.backend)
    monkeypatch.setattr(service, "backend", counting)
    return counting


async def register(
    service: RelayService, run_id: str, event_id: str, timeout: str, url: str = "http://x/wf"
) -> None:
    """A wait as ``POST /v2/wait/{eventId}`` makes it (the use case, without the HTTP hop)."""
    headers = [("Upstash-Workflow-RunId", run_id), ("Upstash-Workflow-Url", url)]
    body = {"url": url, "timeout": timeout, "step": STEP}
    await waiters.wait(service, event_id, headers, orjson.dumps(body))


async def test_expire_reads_the_due_entries_and_the_next_not_every_waiter(
    api: Api,
    receiver: Receiver,
    relay: EmbeddedRelay,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = await _start(api, receiver, relay, "wfr_many")
    service = relay.service
    for n in range(150):
        await register(service, "wfr_many", f"later-{n}", "1h")
    for n in range(3):
        await _wait(api, url, "wfr_many", f"soon-{n}", timeout="1s")
    await waiters.expire(service, clock.now_ms())  # indexes nothing more: every wait did
    counting = counted(service, monkeypatch)
    clock.advance(1000)
    next_deadline = await waiters.expire(service, clock.now_ms())
    # The three due entries, then the one next deadline; no waiter listing.
    assert counting.listed == [(waiter_index.DUE, 3), (waiter_index.DUE, 1)]
    assert next_deadline == clock.now_ms() - 1000 + 3_600_000
    timed_out = await receiver.wait_for(4, "/wf")
    assert len(timed_out) == 4 and len(await _results(service, "wfr_many", "waitTimeout")) == 3
    counting.listed.clear()
    assert await waiters.expire(service, clock.now_ms()) == next_deadline
    assert counting.listed == [(waiter_index.DUE, 0), (waiter_index.DUE, 1)]
    assert len(await service.backend.list_records(waiters.WAITER)) == 150


async def test_waiters_stored_before_the_index_are_indexed_by_the_first_sweep_and_time_out(
    api: Api, receiver: Receiver, relay: EmbeddedRelay, clock: ManualClock
) -> None:
    url = await _start(api, receiver, relay, "wfr_old")
    await _wait(api, url, "wfr_old", "evt-old", timeout="5s")
    backend = relay.service.backend
    # As the previous version left it: the waiter, no index entry, no mark of an index built.
    [entry] = await backend.list_records(waiter_index.DUE)
    due_key = waiter_index.due_key(entry["deadline"], entry["key"])
    assert await backend.delete_record(waiter_index.DUE, due_key)
    assert await backend.delete_record(waiter_index.OF_RUN, f"wfr_old\0{due_key}")
    await backend.delete_setting("workflow_waiters_swept")
    relay.service.passes_due.clear()  # a process started on that store
    clock.advance(5000)
    now = clock.now_ms()
    # Two passes at once: one sweeps (or both, claiming at the same ms: the same entries); one
    # of them answers it.
    await asyncio.gather(waiters.expire(relay.service, now), waiters.expire(relay.service, now))
    [_, timed_out] = await receiver.wait_for(2, "/wf")
    assert _last_entry(timed_out)["waitTimeout"] is True
    [result] = await _results(relay.service, "wfr_old", "waitTimeout")
    assert result["waitTimeout"] is True and result["waitEventId"] == "evt-old"
    assert await backend.list_records(waiter_index.DUE) == []
    assert await backend.list_records(waiter_index.OF_RUN) == []
    assert await backend.list_records(waiters.WAITER) == []
    assert await backend.get_setting("workflow_waiters_swept") == str(now)


async def test_a_waiter_stored_without_index_entries_after_the_first_sweep_times_out_at_the_next(
    api: Api,
    receiver: Receiver,
    relay: EmbeddedRelay,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An older version still serving during a rolling deploy stores a waiter alone, after the
    first sweep: the next sweep (an hour later) indexes it and it times out. Between sweeps no
    pass reads the waiters, not even a process started meanwhile."""
    url = await _start(api, receiver, relay, "wfr_roll")
    service = relay.service
    await waiters.expire(service, clock.now_ms())  # the first sweep has run (the ticker's or this)
    key = await store_as_an_old_version(service.backend, url, "wfr_roll", "evt-roll", "1s", clock)
    counting = counted(service, monkeypatch)
    clock.advance(1000)
    await waiters.expire(service, clock.now_ms())
    service.passes_due.clear()  # a process started meanwhile reads when the sweep is due
    await waiters.expire(service, clock.now_ms())
    assert {kind for kind, _ in counting.listed} == {waiter_index.DUE}  # no sweep: not due
    assert await counting.inner.get_record(waiters.WAITER, key) is not None  # still waiting
    assert len(receiver.at("/wf")) == 1  # the run's start only
    clock.advance(waiter_index.SWEEP_EVERY_MS - 1000)
    counting.listed.clear()
    await waiters.expire(service, clock.now_ms())
    assert counting.listed[0] == (waiters.WAITER, 1)  # the sweep: a page, not the indexes
    assert waiter_index.OF_RUN not in {kind for kind, _ in counting.listed}
    [_, timed_out] = await receiver.wait_for(2, "/wf")
    assert _last_entry(timed_out)["waitTimeout"] is True
    assert _last_entry(timed_out)["waitEventId"] == "evt-roll"
    counting.listed.clear()
    await waiters.expire(service, clock.now_ms())  # swept: not again within the hour
    assert waiters.WAITER not in {kind for kind, _ in counting.listed}
    assert await counting.inner.list_records(waiter_index.DUE) == []
    assert await counting.inner.list_records(waiter_index.OF_RUN) == []


@pytest.fixture
async def alone(backend: Backend, tmp_path: Path) -> AsyncIterator[RelayService]:
    """A service on the backend under test, with no ticker of its own: only the test's passes
    sweep, and each is counted alone."""
    await backend.open()
    keys = SigningKeys(p.DEV_CURRENT_SIGNING_KEY, p.DEV_NEXT_SIGNING_KEY)
    settings = Settings(db=str(tmp_path / "relay.db"))
    try:
        yield RelayService(backend, settings, keys=keys, token="t", clock=ManualClock(T0))
    finally:
        await backend.close()


async def test_a_sweep_reads_a_page_a_pass_and_goes_on_at_the_next_until_done(
    alone: RelayService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many waiters, a few stored without index entries (spread over the pages): each pass
    reads one page of waiters and their entries by key, however many are stored; the next pass
    is due at once while the sweep is under way, an hour later when it is done; by then every
    waiter is indexed."""
    service, clock = alone, alone.clock
    assert isinstance(clock, ManualClock)
    await start_run(service.backend, "wfr_pages")
    for n in range(22):
        await register(service, "wfr_pages", f"evt-{n:02}", "2h")
    await waiters.expire(service, clock.now_ms())  # the first sweep: nothing missing
    for n in (1, 9, 10, 21):  # pages 1, 3, 3 and 6 of 4 waiters (key order)
        [record] = await service.backend.list_records(waiters.WAITER, f"evt-{n:02}\0")
        key = waiters.Waiter.from_record(record).key
        await waiter_index.unindex(service, "wfr_pages", record["deadline"], key)
    assert len(await service.backend.list_records(waiter_index.DUE)) == 18
    monkeypatch.setattr(waiter_index, "SWEEP_PAGE", 4)
    monkeypatch.setattr(waiter_index, "SWEEP_BUDGET_SECONDS", 0)  # one page a pass
    counting = counted(service, monkeypatch)
    clock.advance(waiter_index.SWEEP_EVERY_MS)
    dues: list[int] = []
    now = clock.now_ms()
    while not dues or dues[-1] == now:
        clock.advance(1000)
        now = clock.now_ms()
        counting.listed.clear()
        counting.got.clear()
        await waiters.expire(service, now)
        assert [n for kind, n in counting.listed if kind == waiters.WAITER] in ([4], [2])
        assert len([k for k in counting.got if k in waiter_index._KINDS]) <= 2 * 4
        dues.append(service.passes_due[waiter_index.SWEEP])
        # A number, as the versions before the sweep went in pages read it; and how far it got.
        assert await service.backend.get_setting(waiter_index._SWEPT) == str(now)
        at = await service.backend.get_setting(waiter_index._SWEEP_AT)
        assert (at is None) == (dues[-1] > now)
    assert len(dues) == 6  # 22 waiters: five pages of 4, then the last 2
    assert dues[-1] == now + waiter_index.SWEEP_EVERY_MS
    assert len(await service.backend.list_records(waiter_index.DUE)) == 22
    assert len(await service.backend.list_records(waiter_index.OF_RUN)) == 22
    counting.listed.clear()
    clock.advance(waiter_index.SWEEP_EVERY_MS - 1)
    service.passes_due.clear()  # a process started meanwhile: not due before the hour either
    await waiters.expire(service, clock.now_ms())
    assert waiters.WAITER not in {kind for kind, _ in counting.listed}


async def test_a_sweep_under_way_is_taken_over_an_hour_after_its_last_pass(
    alone: RelayService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process sweeping stops (a recycled Lambda container): others leave its sweep alone
    for an hour after its last pass, then one of them goes on from where it got to."""
    service, clock = alone, alone.clock
    assert isinstance(clock, ManualClock)
    await start_run(service.backend, "wfr_over")
    for n in range(10):
        await register(service, "wfr_over", f"evt-{n:02}", "3h")
    monkeypatch.setattr(waiter_index, "SWEEP_PAGE", 4)
    monkeypatch.setattr(waiter_index, "SWEEP_BUDGET_SECONDS", 0)
    await waiters.expire(service, clock.now_ms())  # the first page, then this process is gone
    stopped = clock.now_ms()
    third = waiters.waiter_key("evt-03", "wfr_over", STEP["stepId"])
    assert await service.backend.get_setting(waiter_index._SWEEP_AT) == third
    service.pass_marks.clear()
    service.passes_due.clear()
    counting = counted(service, monkeypatch)
    clock.advance(waiter_index.SWEEP_EVERY_MS - 1)
    await waiters.expire(service, clock.now_ms())
    assert waiters.WAITER not in {kind for kind, _ in counting.listed}
    assert service.passes_due[waiter_index.SWEEP] == stopped + waiter_index.SWEEP_EVERY_MS
    clock.advance(1)
    counting.listed.clear()
    await waiters.expire(service, clock.now_ms())
    assert counting.listed[0] == (waiters.WAITER, 4)  # the second page, not the first again
    seventh = waiters.waiter_key("evt-07", "wfr_over", STEP["stepId"])
    assert await service.backend.get_setting(waiter_index._SWEEP_AT) == seventh
    assert service.passes_due[waiter_index.SWEEP] == clock.now_ms()
    clock.advance(1000)
    counting.listed.clear()
    await waiters.expire(service, clock.now_ms())
    assert counting.listed[0] == (waiters.WAITER, 2)
    assert await service.backend.get_setting(waiter_index._SWEPT) == str(clock.now_ms())


async def store_as_an_old_version(
    backend: Backend, url: str, run_id: str, event_id: str, timeout: str, clock: ManualClock
) -> str:
    """A wait as a version before the index stored it: the waiter record only; its key."""
    headers = {"Upstash-Workflow-RunId": [run_id], "Upstash-Workflow-Url": [url]}
    headers |= {"Upstash-Workflow-Init": ["false"], "Content-Type": ["application/json"]}
    now, run = clock.now_ms(), await backend.get_run(run_id)
    assert run is not None
    record = {
        "eventId": event_id,
        "runId": run_id,
        "url": url,
        "headers": headers,
        "timeoutUrl": url,
        "timeoutHeaders": headers,
        "timeout": timeout,
        "deadline": now + int(float(timeout.removesuffix("s")) * 1000),
        "step": STEP,
        "createdAt": now,
        "runCreatedAt": run.created_at,
    }
    key = f"{event_id}\0{run_id}\0{STEP['stepId']}"
    await backend.put_record(waiters.WAITER, key, record)
    return key


async def test_a_wait_that_crashed_before_its_waiter_leaves_a_stale_entry_dropped_later(
    api: Api,
    receiver: Receiver,
    relay: EmbeddedRelay,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _start(api, receiver, relay, "wfr_x")
    backend = relay.service.backend
    put_record = backend.put_record

    async def crash_at_the_waiter(kind: str, key: str, value: dict[str, Any]) -> None:
        if kind == waiters.WAITER:
            raise Crash
        await put_record(kind, key, value)

    with monkeypatch.context() as patch:
        patch.setattr(backend, "put_record", crash_at_the_waiter)
        with pytest.raises(Crash):
            await register(relay.service, "wfr_x", "evt-x", "1s")
    [entry] = await backend.list_records(waiter_index.DUE)
    assert await backend.list_records(waiters.WAITER) == []
    clock.advance(1000)  # due, but young: it may be a wait storing its waiter now
    await waiters.expire(relay.service, clock.now_ms())
    assert await backend.list_records(waiter_index.DUE) == [entry]
    clock.advance(outbox.GRACE)
    assert await waiters.expire(relay.service, clock.now_ms()) is None
    assert await backend.list_records(waiter_index.DUE) == []
    assert await _results(relay.service, "wfr_x", "waitTimeout") == []
    assert len(receiver.at("/wf")) == 1  # the run's start only
    assert await backend.list_records(outbox.OUTBOX) == []


async def test_a_deadline_past_the_index_digits_is_not_due_now(
    api: Api, receiver: Receiver, relay: EmbeddedRelay, clock: ManualClock
) -> None:
    """A timeout so long its deadline needs more than 13 digits of ms still sorts last."""
    await _start(api, receiver, relay, "wfr_far")
    await register(relay.service, "wfr_far", "evt-far", "999999999999")  # seconds
    await register(relay.service, "wfr_far", "evt-near", "1h")
    far = clock.now_ms() + 999_999_999_999_000
    assert await waiters.expire(relay.service, clock.now_ms()) == clock.now_ms() + 3_600_000
    clock.advance(3_600_000)
    assert await waiters.expire(relay.service, clock.now_ms()) == far
    [waiter] = await relay.service.backend.list_records(waiters.WAITER)
    assert waiter["eventId"] == "evt-far"


async def test_a_run_that_ends_forgets_its_waiters_reading_only_its_own(
    api: Api,
    receiver: Receiver,
    relay: EmbeddedRelay,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _start(api, receiver, relay, "wfr_stays")
    await _start(api, receiver, relay, "wfr_ends")
    service = relay.service
    for n in range(40):
        await register(service, "wfr_stays", f"other-{n}", "1h")
    for n in range(2):
        await register(service, "wfr_ends", f"mine-{n}", "1h")
    counting = counted(service, monkeypatch)
    assert (await api.call("DELETE", "/v2/workflows/runs/wfr_ends"))[0] == 200
    # The run's own index entries and early events, by key prefix; no listing of every waiter.
    assert counting.listed == [(waiter_index.OF_RUN, 2), (waiters.EARLY_EVENT, 0)]
    left = await service.backend.list_records(waiters.WAITER)
    assert len(left) == 40 and {r["runId"] for r in left} == {"wfr_stays"}
    assert len(await service.backend.list_records(waiter_index.DUE)) == 40
    assert len(await service.backend.list_records(waiter_index.OF_RUN)) == 40
