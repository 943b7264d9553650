"""Retention: what finished more than ``retention_days`` ago is deleted on a tick; what is
still going on, or finished within the window, stays."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay import protocol as p
from relay import retention, scheduling
from relay.backends.base import Backend
from relay.backends.sqlite import SqliteBackend
from relay.clock import ManualClock
from relay.config import Settings
from relay.server import EmbeddedRelay
from relay.service import RelayService
from relay.signing import SigningKeys
from relay.workflows.model import RunState
from tests.conformance.test_backend_port import _message
from tests.conformance.test_runs_port import T0, _run, _start
from tests.conformance.test_runs_port import _message as _run_message
from tests.conftest import Api, Receiver

DAY = 86_400_000


async def _sweep(backend: Backend, now: int) -> list[int]:
    """Purge calls with cutoff ``now`` until a sweep is done: how many went on each."""
    gone, more = [], True
    while more:
        step, more = await backend.purge(now, now)
        gone.append(step)
    return gone


async def test_purge_deletes_runs_that_ended_before_the_cutoff(backend: Backend) -> None:
    await backend.open()
    try:
        for run_id in ("wfr_old", "wfr_recent", "wfr_going"):
            await _start(backend, run_id)
        await backend.end_run("wfr_old", RunState.RUN_SUCCESS, T0 + 1000)
        await backend.end_run("wfr_recent", RunState.RUN_CANCELED, T0 + 5000)
        assert sum(await _sweep(backend, T0 + 2000)) >= 1
        assert await backend.get_run("wfr_old") is None
        assert await backend.run_entries("wfr_old") == []
        recent, going = await backend.get_run("wfr_recent"), await backend.get_run("wfr_going")
        assert recent is not None and recent.state == RunState.RUN_CANCELED
        assert going is not None and going.state == RunState.RUN_STARTED
        assert [e.index for e in await backend.run_entries("wfr_going")] == [0]
    finally:
        await backend.close()


async def test_a_tick_purges_finished_messages_after_the_retention(
    relay: EmbeddedRelay, api: Api, receiver: Receiver, clock: ManualClock
) -> None:
    from relay.backends.aws import AwsBackend

    if isinstance(relay.backend, AwsBackend):
        pytest.skip("on AWS DynamoDB's TTL deletes finished messages (moto never expires items)")
    receiver.respond("/fails", 500)
    done = await api.publish(receiver.url("/ok"), "x", {"Upstash-Deduplication-Id": "d1"})
    failed = await api.publish(receiver.url("/fails"), "y", headers={"Upstash-Retries": "0"})
    later = await api.publish(receiver.url("/later"), "z", headers={"Upstash-Delay": "60d"})
    await api.wait_state(done, "DELIVERED")
    await api.wait_state(failed, "FAILED")
    [dlq] = (await api.call("GET", "/v2/dlq"))[1]["messages"]
    assert dlq["messageId"] == failed
    retention = relay.service.settings.retention_days * DAY
    clock.advance(retention - 60_000)  # not yet: finished a minute short of the retention
    relay.service.passes_due.clear()
    await scheduling.tick(relay.service)
    assert (await api.call("GET", f"/v2/messages/{done}"))[0] == 200
    clock.advance(120_000)
    relay.service.passes_due.clear()
    await scheduling.tick(relay.service)
    for gone in (done, failed):
        assert (await api.call("GET", f"/v2/messages/{gone}"))[0] == 404
        assert await api.events(messageId=gone) == []
    assert (await api.call("GET", "/v2/dlq"))[1]["messages"] == []
    status, pending = await api.call("GET", f"/v2/messages/{later}")
    assert status == 200 and pending["messageId"] == later  # a 60-day delay is still to come
    assert [e["state"] for e in await api.events(messageId=later)] == ["CREATED"]
    with contextlib.closing(sqlite3.connect(relay.settings.db)) as db:
        assert db.execute("SELECT COUNT(*) FROM dedup").fetchone() == (0,)  # long expired


# --- a purge call's bound (SQLite: a sweep over many calls, each a few short steps) ------------


async def _store(
    backend: Backend, prefix: str, count: int, *, at: int = T0, due: int = T0, done: bool = True
) -> list[str]:
    """``count`` messages created at ``at``, cancelled then (``done``) or due at ``due``."""
    made = [
        dataclasses.replace(_message(f"{prefix}{i:03}", due), created_at=at) for i in range(count)
    ]
    await backend.accept(made, [], at, 0)
    ids = [m.id for m in made]
    if done:
        assert await backend.cancel(ids, at) == ids
    return ids


async def _kept(backend: Backend, ids: list[str]) -> list[str]:
    return [i for i in ids if await backend.get_message(i) is not None]


@pytest.fixture
async def bounded(tmp_path: Path) -> AsyncIterator[SqliteBackend]:
    """A SQLite backend whose purge calls take at most 2 steps of 10 rows."""
    backend = SqliteBackend(tmp_path / "relay.db", purge_steps=2, purge_rows=10)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


async def test_a_purge_call_deletes_a_bounded_part_and_the_next_calls_the_rest(
    bounded: SqliteBackend,
) -> None:
    done = await _store(bounded, "msg_done", 100)
    assert await bounded.purge(T0 + 1, T0 + 1) == (20, True)  # 2 steps of 10 rows
    assert len(await _kept(bounded, done)) == 80
    rest = await _sweep(bounded, T0 + 1)
    assert sum(rest) == 80 and max(rest) <= 20
    assert await _kept(bounded, done) == []
    with contextlib.closing(sqlite3.connect(bounded.path)) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)


async def test_a_head_of_pending_messages_does_not_hide_the_finished_ones_behind_it(
    bounded: SqliteBackend,
) -> None:
    later = await _store(bounded, "msg_later", 60, due=T0 + 90 * DAY, done=False)  # long delays
    done = await _store(bounded, "msg_done", 30)
    newer = await _store(bounded, "msg_newer", 10, at=T0 + DAY)  # after the cutoff: the walk ends
    calls = await _sweep(bounded, T0 + 1)
    assert calls[:3] == [0, 0, 0]  # the pending head: nothing went, but more to look at
    assert sum(calls) == 30
    assert await _kept(bounded, done) == []
    assert await _kept(bounded, later + newer) == later + newer
    # The next sweep starts over from the first row.
    assert await bounded.cancel(later, T0 + 2 * DAY) == later
    assert sum(await _sweep(bounded, T0 + 3 * DAY)) == 70
    assert await _kept(bounded, later + newer) == []


async def test_purge_due_comes_back_at_the_next_tick_until_a_sweep_is_done(
    tmp_path: Path,
) -> None:
    backend = SqliteBackend(tmp_path / "relay.db", purge_steps=1, purge_rows=10)
    await backend.open()
    try:
        done = await _store(backend, "msg_done", 25)
        keys = SigningKeys(p.DEV_CURRENT_SIGNING_KEY, p.DEV_NEXT_SIGNING_KEY)
        service = RelayService(backend, Settings(db=backend.path), keys=keys, token="t")
        start = T0 + service.settings.retention_days * DAY + 1
        ticks = [start + i * 1000 for i in range(4)]
        gone, due = [], []
        for now in ticks:  # a budget of one purge call a tick
            gone.append(await retention.purge_due(service, now, budget=0))
            due.append(service.passes_due[retention.PASS])
        assert gone == [10, 10, 5, 0]  # the last call: the rest (runs, DLQ, dedup ids)
        assert due == [*ticks[:3], ticks[3] + retention.EVERY_MS]  # the next tick, then hourly
        assert await _kept(backend, done) == []
        hour = ticks[3] + retention.EVERY_MS
        assert await retention.purge_due(service, hour - 1) == 0  # not due before the hour
        assert service.passes_due[retention.PASS] == hour
        more = await _store(backend, "msg_more", 25, at=ticks[3])
        later = ticks[3] + service.settings.retention_days * DAY + 1
        assert await retention.purge_due(service, later) == 25  # the whole sweep within budget
        assert service.passes_due[retention.PASS] == later + retention.EVERY_MS
        assert await _kept(backend, more) == []
    finally:
        await backend.close()


# --- the AWS runs purge's bound (a read of the runs' by-time index a call) ---------------------


async def test_the_aws_runs_purge_reads_a_bounded_part_of_the_index_a_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many long-running runs created before the cutoff, ahead of ended ones: each purge call
    reads at most ``purge_reads`` index entries and says a sweep is under way until it reaches
    the runs created since; the calls delete every ended run, and the running ones stay."""
    from relay.backends.aws import TIME_INDEX
    from tests.conftest import aws_backend

    with aws_backend(max_sqs_delay=0, purge_reads=10) as backend:
        await backend.open()
        try:
            running = [f"wfr_a{i:03}" for i in range(35)]  # by-time order: creation, then id
            ended = [f"wfr_b{i:03}" for i in range(6)]
            for run_id in running + ended:
                await _start(backend, run_id)
            for run_id in ended:
                await backend.end_run(run_id, RunState.RUN_SUCCESS, T0 + 1000)
            newer = dataclasses.replace(_run("wfr_c000", "wfr_c000_init"), created_at=T0 + DAY)
            init = _run_message("wfr_c000_init", "wfr_c000", body=b"{}")
            await backend.accept_run_messages([init], [], T0 + DAY, 0, [newer])
            scanned: list[int] = []
            query = backend._db.query

            def counted(**request: Any) -> Any:
                answer = query(**request)
                if request.get("IndexName") == TIME_INDEX:
                    scanned.append(answer["ScannedCount"])
                return answer

            monkeypatch.setattr(backend._db, "query", counted)
            gone = await _sweep(backend, T0 + 2000)
            assert sum(gone) == 6 and max(scanned) <= 10
            assert len(scanned) == len(gone) >= 5  # 41 entries before the cutoff, 10 a call
            assert gone[:3] == [0, 0, 0]  # the running head: nothing went, but more to look at
            for run_id in ended:
                assert await backend.get_run(run_id) is None
                assert await backend.run_entries(run_id) == []
            for run_id in [*running, "wfr_c000"]:
                run = await backend.get_run(run_id)
                assert run is not None and run.state == RunState.RUN_STARTED
            # The next sweep starts over from the oldest.
            await backend.end_run("wfr_a000", RunState.RUN_FAILED, T0 + 1000)
            assert await backend.purge(T0 + 2000, T0 + 2000) == (1, True)
            assert await backend.get_run("wfr_a000") is None
        finally:
            await backend.close()
