"""The waiters' deadline index (relay.workflows.waiter_index): ``expire`` reads the index entries
that are due and the next one, not every waiter; waiters stored without index entries (before
the index, or by an older version during a rolling deploy) are indexed by the hourly sweep and
still time out; a wait that crashed between its index entry and its waiter leaves nothing to
answer and its entry is dropped. Real backends (SQLite, moto), counted through a thin wrapper
that passes every call on."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from relay.backends.aws import AwsBackend
from relay.backends.base import Backend
from relay.backends.sqlite import SqliteBackend
from relay.clock import ManualClock
from relay.server import EmbeddedRelay
from relay.service import RelayService
from relay.workflows import outbox, waiter_index, waiters
from tests.conformance.test_workflow_crash_windows import Crash, _results
from tests.conformance.test_workflow_waiters import STEP, _last_entry, _start, _wait
from tests.conftest import Api, Receiver


class Counting:
    """The backend under test, noting how many records each ``list_records`` call of a waiter
    kind returned (the delivery worker's own listings, if any, are not the pass's)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.listed: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def list_records(self, kind: str, prefix: str = "", **bounds: Any) -> Any:
        records = await self.inner.list_records(kind, prefix, **bounds)
        if kind in (waiters.WAITER, waiter_index.DUE, waiter_index.OF_RUN, waiters.EARLY_EVENT):
            self.listed.append((kind, len(records)))
        return records


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


async def forget_setting(backend: Backend, name: str) -> None:
    """Make the store one written before a setting existed (no port call removes one)."""
    if isinstance(backend, SqliteBackend):
        sql = "DELETE FROM settings WHERE name = ?"
        await backend._conn.run(lambda c: c.execute(sql, (name,)))
    else:
        assert isinstance(backend, AwsBackend)
        key = {"pk": {"S": f"S#{name}"}, "sk": {"S": "S"}}
        await backend._call(backend._db.delete_item, TableName=backend.table, Key=key)
    assert await backend.get_setting(name) is None


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
    await forget_setting(backend, "workflow_waiters_swept")
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
    sweep = [(waiters.WAITER, 1), (waiter_index.DUE, 0), (waiter_index.OF_RUN, 0)]
    assert counting.listed[:3] == sweep
    [_, timed_out] = await receiver.wait_for(2, "/wf")
    assert _last_entry(timed_out)["waitTimeout"] is True
    assert _last_entry(timed_out)["waitEventId"] == "evt-roll"
    counting.listed.clear()
    await waiters.expire(service, clock.now_ms())  # swept: not again within the hour
    assert waiters.WAITER not in {kind for kind, _ in counting.listed}
    assert await counting.inner.list_records(waiter_index.DUE) == []
    assert await counting.inner.list_records(waiter_index.OF_RUN) == []


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
