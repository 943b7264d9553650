"""The workflow logs' details read from a run's messages: the ``next`` group's failing step
(its name from the SDK's ``Upstash-Error-Step-Name``, state, retries, the attempts' errors) and
a ``context.call`` step's request and response fields."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from relay.server import EmbeddedRelay
from tests.conformance.test_workflow_runs import _batch, _from_callback, _init, _step
from tests.conftest import Api, Receiver


async def _log(api: Api, run_id: str, route: str = "events") -> dict[str, Any]:
    """The run's log from GET /v2/workflows/events (or its alias /logs)."""
    status, answer = await api.call("GET", f"/v2/workflows/{route}?workflowRunId={run_id}")
    assert status == 200, answer
    [run] = answer["runs"]
    log: dict[str, Any] = run
    return log


async def start_failing_run(api: Api, receiver: Receiver, run_id: str) -> None:
    """Start run ``run_id`` at receiver /wf, whose step "charge" answers 500 "boom" (each time),
    and wait for its first delivery."""
    failing = web.Response(
        status=500,
        text='{"error":"Error","message":"boom"}',
        headers={"Upstash-Error-Step-Name": "charge"},
    )
    receiver.respond("/wf", lambda r: failing)
    await _batch(api, _init(receiver.url("/wf"), run_id, "{}"))
    await receiver.wait_for(1, "/wf")


async def test_the_next_group_shows_the_failing_step_and_its_errors(
    api: Api, receiver: Receiver, relay: EmbeddedRelay
) -> None:
    await start_failing_run(api, receiver, "wfr_f")
    for _ in range(50):
        log = await _log(api, "wfr_f")
        if log["steps"][-1]["type"] == "next" and log["steps"][-1]["steps"][0].get("errors"):
            break
        await asyncio.sleep(0.05)  # the settlement lands
    [step] = log["steps"][-1]["steps"]
    assert (step["stepName"], step["state"], step["retries"]) == ("charge", "STEP_RETRY", 1)
    [error] = step["errors"]
    assert error["error"] == "boom" and error["status"] == 500
    assert error["body"] == '{"error":"Error","message":"boom"}'
    assert error["headers"]["Upstash-Error-Step-Name"] == ["charge"]
    assert isinstance(error["time"], int)


async def test_a_call_step_carries_its_request_and_response(
    api: Api, receiver: Receiver, relay: EmbeddedRelay
) -> None:
    url = receiver.url("/wf")
    await _batch(api, _init(url, "wfr_c", "{}"))
    from_callback, _ = _from_callback(
        url, "wfr_c", 201, {"X-Out": ["1"]}, method="PUT", source_header={"X-In": ["2"]}
    )
    out = {"status": 201, "body": "made", "header": {"X-Out": ["1"]}}
    result = {"stepId": 1, "stepName": "c", "stepType": "Call", "out": json.dumps(out)}
    await _batch(api, from_callback, _step(url, "wfr_c", json.dumps(result)))
    [call] = (await _log(api, "wfr_c"))["steps"][1]["steps"]
    assert {k: v for k, v in call.items() if k.startswith("call") and k != "callType"} == {
        "callUrl": "https://third.party/api",
        "callMethod": "PUT",
        "callHeaders": {"X-In": ["2"]},
        "callBody": '{"q":1}',
        "callResponseStatus": 201,
        "callResponseBody": "made",
        "callResponseHeaders": {"X-Out": ["1"]},
    }
