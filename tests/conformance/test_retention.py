"""Retention: what finished more than ``retention_days`` ago is deleted on a tick; what is
still going on, or finished within the window, stays."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from relay import scheduling
from relay.backends.base import Backend
from relay.clock import ManualClock
from relay.server import EmbeddedRelay
from relay.workflows.model import RunState
from tests.conformance.test_runs_port import T0, _start
from tests.conftest import Api, Receiver

DAY = 86_400_000


async def test_purge_deletes_runs_that_ended_before_the_cutoff(backend: Backend) -> None:
    await backend.open()
    try:
        for run_id in ("wfr_old", "wfr_recent", "wfr_going"):
            await _start(backend, run_id)
        await backend.end_run("wfr_old", RunState.RUN_SUCCESS, T0 + 1000)
        await backend.end_run("wfr_recent", RunState.RUN_CANCELED, T0 + 5000)
        gone = 0
        while step := await backend.purge(T0 + 2000, T0 + 2000):
            gone += step
        assert gone >= 1
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
