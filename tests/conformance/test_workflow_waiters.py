"""waitForEvent and notify (reference F5) at the wire, on the relay's injected clock: a wait's
timeout comes at its deadline, notify and timeout race to exactly one result entry, a run-scoped
notify before the wait is looked back, and a run's end forgets its waiters."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from relay import scheduling
from relay.clock import ManualClock
from relay.server import EmbeddedRelay
from relay.workflows import waiters
from tests.conformance.test_workflow_runs import _batch, _init
from tests.conftest import Api, Receiver

STEP = {"stepId": 1, "stepName": "w", "stepType": "Wait", "concurrent": 1}


async def _start(api: Api, receiver: Receiver, relay: EmbeddedRelay, run_id: str) -> str:
    relay.ticker.stop()  # the tests tick themselves
    url = receiver.url("/wf")
    await _batch(api, _init(url, run_id, '{"n": 1}'))
    await receiver.wait_for(1, "/wf")
    return url


async def _wait(api: Api, url: str, run_id: str, event_id: str, timeout: str = "5s") -> Any:
    headers = {
        "Upstash-Workflow-Init": "false",
        "Upstash-Workflow-RunId": run_id,
        "Upstash-Workflow-Url": url,
        "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
        "Content-Type": "application/json",
    }
    body = {
        "url": url,
        "timeout": timeout,
        "timeoutUrl": url,
        "timeoutHeaders": {name: [value] for name, value in headers.items()},
        "step": STEP,
    }
    status, answer = await api.call("POST", f"/v2/wait/{event_id}", json=body, headers=headers)
    assert status == 200, (status, answer)
    return answer


def _last_entry(delivery: Any) -> dict[str, Any]:
    entries = json.loads(delivery.body)
    result: dict[str, Any] = json.loads(base64.b64decode(entries[-1]["body"]))
    return result


async def test_a_wait_times_out_at_its_deadline(
    api: Api, receiver: Receiver, relay: EmbeddedRelay, clock: ManualClock
) -> None:
    url = await _start(api, receiver, relay, "wfr_t")
    await _wait(api, url, "wfr_t", "evt")
    status, waiters = await api.call("GET", "/v2/waiters/evt")
    assert status == 200 and [w["url"] for w in waiters] == [url]
    deadline = clock.now_ms() + 5000
    assert waiters[0]["deadline"] == deadline // 1000  # unix seconds
    clock.advance(4_999)
    assert (await scheduling.tick(relay.service)).next_fire == clock.now_ms() + 1
    clock.advance(1)
    await scheduling.tick(relay.service)
    [_, timed_out] = await receiver.wait_for(2, "/wf")
    assert _last_entry(timed_out) == {
        **STEP,
        "waitEventId": "evt",
        "timeout": "5s",
        "waitTimeoutDeadline": deadline,
        "waitTimeout": True,
    }
    assert await api.call("GET", "/v2/waiters/evt") == (200, [])
    assert await api.call("POST", "/v2/notify/evt", data=b"late") == (200, [])


async def test_notify_and_timeout_race_to_one_result(
    api: Api, receiver: Receiver, relay: EmbeddedRelay, clock: ManualClock
) -> None:
    url = await _start(api, receiver, relay, "wfr_r")
    await _wait(api, url, "wfr_r", "evt-r")
    clock.advance(5_000)
    _, notified = await asyncio.gather(
        scheduling.tick(relay.service), api.call("POST", "/v2/notify/evt-r", data=b"x")
    )
    await receiver.wait_for(2, "/wf")
    await asyncio.sleep(0.2)
    assert len(receiver.at("/wf")) == 2  # one result: the timeout's or the event's
    entries = await relay.service.backend.run_entries("wfr_r")
    assert len(entries) == 2
    won_by_notify = len(notified[1]) == 1
    assert json.loads(entries[1].body)["waitTimeout"] is not won_by_notify


async def test_a_run_scoped_notify_waits_for_the_wait(
    api: Api, receiver: Receiver, relay: EmbeddedRelay
) -> None:
    url = await _start(api, receiver, relay, "wfr_l")
    assert await api.call("POST", "/v2/notify/wfr_l/evt-l", data="früh".encode()) == (200, [])
    assert await api.call("POST", "/v2/notify/evt-l", data=b"global: not kept") == (200, [])
    await _wait(api, url, "wfr_l", "evt-l")
    [_, woken] = await receiver.wait_for(2, "/wf")
    entry = _last_entry(woken)
    assert base64.b64decode(entry["out"]).decode() == "früh" and entry["waitTimeout"] is False
    assert await api.call("GET", "/v2/waiters/evt-l") == (200, [])


async def test_notify_answers_the_waiter_and_a_run_end_forgets_waiters(
    api: Api, receiver: Receiver, relay: EmbeddedRelay
) -> None:
    url = await _start(api, receiver, relay, "wfr_n")
    await _wait(api, url, "wfr_n", "evt-n")
    status, notified = await api.call("POST", "/v2/notify/evt-n", data=b'{"ok":true}')
    assert status == 200 and len(notified) == 1
    assert notified[0]["workflowRunId"] == "wfr_n" and notified[0]["messageId"]
    assert notified[0]["waiter"]["url"] == url
    run = await relay.service.backend.get_run("wfr_n")
    assert run is not None and notified[0]["workflowCreatedAt"] == run.created_at
    [_, woken] = await receiver.wait_for(2, "/wf")
    assert base64.b64decode(_last_entry(woken)["out"]) == b'{"ok":true}'

    url = await _start(api, receiver, relay, "wfr_c")
    await _wait(api, url, "wfr_c", "evt-c")
    assert (await api.call("DELETE", "/v2/workflows/runs/wfr_c?cancel=true"))[0] == 200
    assert await api.call("GET", "/v2/waiters/evt-c") == (200, [])
    # A run that is over (or unknown) waits for nothing, and keeps no early event.
    with pytest.raises(AssertionError, match="400"):
        await _wait(api, url, "wfr_c", "evt-c")
    assert await api.call("POST", "/v2/notify/wfr_c/evt-c", data=b"x") == (200, [])
    assert await relay.service.backend.list_records(waiters.EARLY_EVENT) == []
