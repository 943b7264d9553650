"""Crash windows of the results relay writes into a run (relay.workflows.outbox, recovery): a
crash injected between a waiter's claim and its result's publish, between a published result and
its clearing, between a child run's end and its report to the parent, and between the report's
claim and its publish. The recovery pass (on the tick, ``outbox.GRACE`` later) finishes each,
and a run holds each result entry exactly once. Real SQLite; the crash is an exception raised
at the window."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any

import pytest

from relay import scheduling
from relay.clock import ManualClock
from relay.server import EmbeddedRelay
from relay.service import RelayService
from relay.workflows import invoke, outbox, recovery, runs, waiters
from tests.conformance.test_workflow_runs import _batch, _init
from tests.conformance.test_workflow_waiters import _start, _wait
from tests.conftest import Api, Receiver


class Crash(Exception):
    """The process dies here."""


def _crash(*args: Any, **kwargs: Any) -> Any:
    raise Crash


async def _dying(
    patch: pytest.MonkeyPatch, target: object, name: str, call: Awaitable[object]
) -> None:
    """Await ``call`` with ``target.name`` replaced by a crash: the process dies there."""
    with patch.context() as crashing:
        crashing.setattr(target, name, _crash)
        with pytest.raises(Crash):
            await call


async def _results(service: RelayService, run_id: str, field: str) -> list[dict[str, Any]]:
    """The run's entries that carry ``field`` (the results relay wrote)."""
    bodies = [json.loads(e.body) for e in await service.backend.run_entries(run_id)]
    return [b for b in bodies if isinstance(b, dict) and field in b]


async def _claims(service: RelayService, keys: list[str]) -> list[str]:
    """The claims stored on the intents ``keys``."""
    held = [await service.backend.get_setting(f"{outbox.CLAIM}\0{key}") for key in keys]
    return [claim for claim in held if claim is not None]


async def _recover(relay: EmbeddedRelay, clock: ManualClock) -> None:
    """Recovery passes, ``outbox.GRACE`` on; they leave no claim behind."""
    keys = [intent.key for intent in await outbox.stored(relay.service)]
    clock.advance(outbox.GRACE)
    await scheduling.tick(relay.service)
    await scheduling.tick(relay.service)  # a second pass repeats nothing
    assert await _claims(relay.service, keys) == []


@pytest.mark.parametrize("stage", ["deliver", "discard"])
async def test_a_timeout_claimed_before_a_crash_is_published_by_recovery(
    api: Api,
    receiver: Receiver,
    relay: EmbeddedRelay,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
) -> None:
    url = await _start(api, receiver, relay, "wfr_c")
    await _wait(api, url, "wfr_c", "evt", timeout="1s")
    clock.advance(1000)
    # After the claim / after the publish:
    await _dying(monkeypatch, outbox, stage, waiters.expire(relay.service, clock.now_ms()))
    assert await waiters.waiters_of(relay.service, "evt") == []  # claimed
    published = len(await _results(relay.service, "wfr_c", "waitTimeout"))
    assert published == (0 if stage == "deliver" else 1)
    await _recover(relay, clock)
    [result] = await _results(relay.service, "wfr_c", "waitTimeout")
    assert result["waitTimeout"] is True
    assert await relay.service.backend.list_records(outbox.OUTBOX) == []


async def test_a_notify_claimed_before_a_crash_is_published_by_recovery(
    api: Api,
    receiver: Receiver,
    relay: EmbeddedRelay,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = await _start(api, receiver, relay, "wfr_n")
    await _wait(api, url, "wfr_n", "evt", timeout="1h")
    await _dying(monkeypatch, outbox, "deliver", waiters.notify(relay.service, "evt", b"data"))
    await _recover(relay, clock)
    [result] = await _results(relay.service, "wfr_n", "waitTimeout")
    assert result["waitTimeout"] is False and result["out"] == "ZGF0YQ=="  # b64 "data"


async def test_an_intent_stored_before_its_claim_is_claimed_by_recovery(
    api: Api,
    receiver: Receiver,
    relay: EmbeddedRelay,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crash between storing the intent and claiming the waiter: recovery claims it."""
    url = await _start(api, receiver, relay, "wfr_i")
    await _wait(api, url, "wfr_i", "evt", timeout="1h")
    await _dying(monkeypatch, waiters, "_claim", waiters.notify(relay.service, "evt", b"x"))
    assert len(await waiters.waiters_of(relay.service, "evt")) == 1
    await _recover(relay, clock)
    assert await waiters.waiters_of(relay.service, "evt") == []
    [result] = await _results(relay.service, "wfr_i", "waitTimeout")
    assert result["out"] == "eA=="


async def _invoke(api: Api, receiver: Receiver, relay: EmbeddedRelay) -> None:
    """Run ``wfr_parent`` invokes run ``wfr_child``."""
    relay.ticker.stop()
    parent, child = receiver.url("/parent"), receiver.url("/child")
    await _batch(api, _init(parent, "wfr_parent", "{}"))
    wrapper = {
        "workflowRunId": "wfr_parent",
        "workflowUrl": parent,
        "step": {"stepId": 1, "stepName": "inv", "stepType": "Invoke", "concurrent": 1},
        "headers": {"Upstash-Workflow-RunId": ["wfr_parent"], "Upstash-Workflow-Init": ["false"]},
        "body": '{"c":1}',
    }
    headers = {
        "Upstash-Workflow-Invoke": "true",
        "Upstash-Workflow-Init": "true",
        "Upstash-Workflow-RunId": "wfr_child",
        "Upstash-Workflow-Url": child,
        "Content-Type": "application/json",
    }
    status, answer = await api.call(
        "POST", f"/v2/publish/{child}", headers=headers, data=json.dumps(wrapper)
    )
    assert status == 201, answer


@pytest.mark.parametrize("window", ["before-report", "after-claim"])
async def test_a_child_run_that_ended_before_a_crash_reports_to_its_parent(
    api: Api,
    receiver: Receiver,
    relay: EmbeddedRelay,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    window: str,
) -> None:
    await _invoke(api, receiver, relay)
    # Before the report: the run's end stored, nothing after it done; else the pending result
    # claimed, not published.
    target, name = (runs, "ended") if window == "before-report" else (outbox, "deliver")
    end = runs.end(relay.service, "wfr_child", cancel=False, response='"ok"')
    await _dying(monkeypatch, target, name, end)
    assert await _results(relay.service, "wfr_parent", "invokedWorkflowRunId") == []
    await _recover(relay, clock)
    [result] = await _results(relay.service, "wfr_parent", "invokedWorkflowRunId")
    assert json.loads(result["out"]) == {"body": '"ok"', "isFailed": False, "isCanceled": False}
    assert await relay.service.backend.list_records(invoke.PENDING_RESULT) == []
    assert await relay.service.backend.list_records(outbox.OUTBOX) == []


@pytest.mark.parametrize("window", ["before-claim", "after-claim"])
async def test_an_early_event_taken_before_a_crash_answers_the_wait_by_recovery(
    api: Api,
    receiver: Receiver,
    relay: EmbeddedRelay,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    window: str,
) -> None:
    """A run-scoped notify came first; the wait takes its event, then the process dies."""
    url = await _start(api, receiver, relay, "wfr_e")
    assert await waiters.notify(relay.service, "evt", b"early", run_id="wfr_e") == []
    with monkeypatch.context() as patch:
        if window == "before-claim":
            patch.setattr(waiters, "_claim", _crash)
        else:
            patch.setattr(outbox, "deliver", _crash)
        with pytest.raises(AssertionError, match="500"):  # the request died with the crash
            await _wait(api, url, "wfr_e", "evt", timeout="1h")
    await _recover(relay, clock)
    [result] = await _results(relay.service, "wfr_e", "waitTimeout")
    assert result["out"] == "ZWFybHk="  # b64 "early"
    assert await waiters.waiters_of(relay.service, "evt") == []
    assert await relay.service.backend.list_records(waiters.EARLY_EVENT) == []


async def _stale(
    kind: str,
    api: Api,
    receiver: Receiver,
    relay: EmbeddedRelay,
    clock: ManualClock,
    patch: pytest.MonkeyPatch,
) -> tuple[str, str]:
    """A result claimed, then a crash before its publish, ``outbox.GRACE`` ago: the run, and the
    field its result entry carries."""
    if kind == "wait":
        url = await _start(api, receiver, relay, "wfr_o")
        await _wait(api, url, "wfr_o", "evt", timeout="1s")
        clock.advance(1000)
        await _dying(patch, outbox, "deliver", waiters.expire(relay.service, clock.now_ms()))
    else:
        await _invoke(api, receiver, relay)
        end = runs.end(relay.service, "wfr_child", cancel=False, response='"ok"')
        await _dying(patch, outbox, "deliver", end)
    clock.advance(outbox.GRACE)
    if kind == "wait":
        return "wfr_o", "waitTimeout"
    return "wfr_parent", "invokedWorkflowRunId"


@pytest.mark.parametrize("kind", ["wait", "invoke"])
async def test_overlapping_recovery_passes_publish_a_result_once(
    api: Api,
    receiver: Receiver,
    relay: EmbeddedRelay,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """Two passes at once (two scheduler invocations on AWS): one claims the intent and
    publishes it, the other leaves it."""
    run_id, field = await _stale(kind, api, receiver, relay, clock, monkeypatch)
    keys = [intent.key for intent in await outbox.stored(relay.service)]
    now = clock.now_ms()
    await asyncio.gather(*(recovery.recover(relay.service, now) for _ in range(3)))
    assert len(await _results(relay.service, run_id, field)) == 1
    assert await relay.service.backend.list_records(outbox.OUTBOX) == []
    assert await _claims(relay.service, keys) == []


async def test_a_pass_that_crashed_holding_a_claim_leaves_the_result_to_a_later_one(
    api: Api,
    receiver: Receiver,
    relay: EmbeddedRelay,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its claim blocks other passes for ``outbox.GRACE``, then the next pass takes it over."""
    await _stale("wait", api, receiver, relay, clock, monkeypatch)
    keys = [intent.key for intent in await outbox.stored(relay.service)]
    # The pass dies after its claim:
    await _dying(monkeypatch, outbox, "deliver", recovery.recover(relay.service, clock.now_ms()))
    clock.advance(outbox.GRACE - 1)
    await recovery.recover(relay.service, clock.now_ms())  # the claim still holds
    assert await _results(relay.service, "wfr_o", "waitTimeout") == []
    clock.advance(1)
    await recovery.recover(relay.service, clock.now_ms())
    await recovery.recover(relay.service, clock.now_ms())
    [result] = await _results(relay.service, "wfr_o", "waitTimeout")
    assert result["waitTimeout"] is True
    assert await relay.service.backend.list_records(outbox.OUTBOX) == []
    assert await _claims(relay.service, keys) == []


@pytest.mark.parametrize("window", ["_unclaim", "discard"])
async def test_a_pass_that_crashed_releasing_a_result_leaves_no_claim(
    api: Api,
    receiver: Receiver,
    relay: EmbeddedRelay,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    window: str,
) -> None:
    """A pass dies after publishing, with the result marked done: holding its claim (the next
    pass clears it once the claim expires), or after deleting it (the next pass clears it)."""
    await _stale("wait", api, receiver, relay, clock, monkeypatch)
    keys = [intent.key for intent in await outbox.stored(relay.service)]
    await _dying(monkeypatch, outbox, window, recovery.recover(relay.service, clock.now_ms()))
    [done] = await outbox.stored(relay.service)
    assert done.done
    assert len(await _claims(relay.service, keys)) == (1 if window == "_unclaim" else 0)
    if window == "_unclaim":
        clock.advance(outbox.GRACE)
    await recovery.recover(relay.service, clock.now_ms())
    assert await relay.service.backend.list_records(outbox.OUTBOX) == []
    assert await _claims(relay.service, keys) == []
    assert len(await _results(relay.service, "wfr_o", "waitTimeout")) == 1


async def test_a_pass_deletes_its_own_claim_only(
    api: Api,
    receiver: Receiver,
    relay: EmbeddedRelay,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slow pass whose claim expired and was taken over finishes: the new owner's claim
    stays until that pass finishes in turn; a pass that lists an intent cleared since claims
    nothing and leaves nothing."""
    await _stale("wait", api, receiver, relay, clock, monkeypatch)
    [intent] = await outbox.stored(relay.service)
    now = clock.now_ms()
    slow = await outbox.claim(relay.service, intent.key, now)
    assert slow is not None
    assert await outbox.claim(relay.service, intent.key, now + outbox.GRACE - 1) is None
    taker = await outbox.claim(relay.service, intent.key, now + outbox.GRACE)
    assert taker is not None and taker != slow
    await outbox.deliver(relay.service, intent, claim=slow)  # the slow pass finishes
    assert await _claims(relay.service, [intent.key]) == [taker]
    assert len(await _results(relay.service, "wfr_o", "waitTimeout")) == 1
    await outbox.deliver(relay.service, intent, claim=taker)  # the run holds it: not again
    assert await _claims(relay.service, [intent.key]) == []
    assert len(await _results(relay.service, "wfr_o", "waitTimeout")) == 1
    # A pass that listed the intent before it was cleared:
    assert await outbox.claim(relay.service, intent.key, now + outbox.GRACE) is None
    assert await _claims(relay.service, [intent.key]) == []
