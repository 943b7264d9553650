"""`Upstash-Redact-Fields` on a workflow run: sent on the Init only (as both SDKs send it), it
holds for the whole run. The workflow logs, the workflow DLQ and the run's message views hide
what it names; what is delivered to the workflow (the entry array, forwarded headers) stays as
sent."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tests.conformance.test_workflow_log_details import _log
from tests.conformance.test_workflow_runs import (
    _batch,
    _entries,
    _from_callback,
    _h,
    _init,
    _step,
)
from tests.conftest import Api, Receiver


def redacted(value: str) -> str:
    return "REDACTED:" + hashlib.sha256(value.encode()).hexdigest()


async def _run_log(api: Api, run_id: str) -> dict[str, Any]:
    return await _log(api, run_id, "logs")


def _steps(log: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for group in log["steps"] for step in group["steps"]]


async def _workflow_dlq(api: Api, run_id: str) -> list[dict[str, Any]]:
    status, page = await api.call("GET", f"/v2/dlq?source=workflow&workflowRunId={run_id}")
    assert status == 200, page
    return list(page["messages"])


async def test_body_redaction_hides_step_outputs_yet_the_run_completes(
    api: Api, receiver: Receiver
) -> None:
    url = receiver.url("/wf")
    payload = '{"card":"4242"}'
    await _batch(api, _init(url, "wfr_rb", payload, **{"upstash-redact-fields": "body"}))
    await receiver.wait_for(1, "/wf")
    result = {"stepId": 1, "stepName": "charge", "stepType": "Run", "out": '"paid 4242"'}
    [step] = await _batch(api, _step(url, "wfr_rb", json.dumps(result)))  # no header: the SDK's
    second = (await receiver.wait_for(2, "/wf"))[1]
    assert _entries(second) == [payload.encode(), json.dumps(result).encode()]  # intact
    status, _answer = await api.call(
        "DELETE", "/v2/workflows/runs/wfr_rb?cancel=false", data=b'"receipt 4242"'
    )
    assert status == 200

    log = await _run_log(api, "wfr_rb")
    assert log["workflowState"] == "RUN_SUCCESS"
    assert log["workflowRunResponse"] == redacted('"receipt 4242"')
    init, charge = _steps(log)
    assert init["out"] == redacted(payload)
    assert (charge["stepName"], charge["out"]) == ("charge", redacted('"paid 4242"'))
    assert "4242" not in json.dumps(log)
    _, message = await api.call("GET", f"/v2/messages/{step['messageId']}")
    assert message["body"] == redacted(json.dumps(result))  # the run's fields hold for it too


async def test_body_redaction_holds_in_the_workflow_dlq(api: Api, receiver: Receiver) -> None:
    receiver.respond("/wf", 200, 500)
    url = receiver.url("/wf")
    init = _init(url, "wfr_rd", '{"card":"4242"}', **{"upstash-redact-fields": "body"})
    init["headers"]["upstash-retries"] = "0"
    await _batch(api, init)
    await receiver.wait_for(1, "/wf")
    result = {"stepId": 1, "stepName": "charge", "stepType": "Run", "out": '"paid 4242"'}
    [step] = await _batch(api, _step(url, "wfr_rd", json.dumps(result)))
    await api.wait_state(step["messageId"], "FAILED")
    failed = receiver.at("/wf")[1]
    assert _entries(failed)[1] == json.dumps(result).encode()  # delivered as sent

    [entry] = await _workflow_dlq(api, "wfr_rd")
    assert entry["workflowRunId"] == "wfr_rd"
    assert entry["body"] == redacted(json.dumps(result))
    assert "4242" not in json.dumps(entry)
    log = await _run_log(api, "wfr_rd")
    assert log["workflowState"] == "RUN_FAILED" and "4242" not in json.dumps(log)


async def test_a_named_header_is_hidden_and_nothing_else(api: Api, receiver: Receiver) -> None:
    receiver.respond("/wf", 200, 200, 200, 500)
    url = receiver.url("/wf")
    init = _init(
        url,
        "wfr_rh",
        '{"n":1}',
        **{
            "upstash-redact-fields": "header[X-Secret]",
            "upstash-forward-x-secret": "hunter2",
            "upstash-forward-x-plain": "visible",
            "upstash-retries": "0",
        },
    )
    await _batch(api, init)
    await receiver.wait_for(1, "/wf")
    from_callback, callback = _from_callback(
        url,
        "wfr_rh",
        200,
        {"X-Secret": ["s3cret-out"], "X-Plain": ["out"]},
        source_header={"X-Secret": ["s3cret-in"], "X-Plain": ["in"]},
    )
    out = {"status": 200, "body": "made", "header": callback["header"]}
    result = {"stepId": 1, "stepName": "c", "stepType": "Call", "out": json.dumps(out)}
    await _batch(api, from_callback, _step(url, "wfr_rh", json.dumps(result)))
    delivered = await receiver.wait_for(3, "/wf")
    assert all(_h(d)["X-Secret"] == "hunter2" for d in delivered)  # the Init's forward, as sent
    last = {"stepId": 2, "stepName": "last", "stepType": "Run", "out": '"done"'}
    [step] = await _batch(api, _step(url, "wfr_rh", json.dumps(last)))
    await api.wait_state(step["messageId"], "FAILED")

    call = _steps(await _run_log(api, "wfr_rh"))[1]
    assert call["callHeaders"] == {"X-Secret": [redacted("s3cret-in")], "X-Plain": ["in"]}
    assert call["callResponseHeaders"] == {"X-Secret": [redacted("s3cret-out")], "X-Plain": ["out"]}
    assert (call["callBody"], call["callResponseBody"]) == ('{"q":1}', "made")
    assert json.loads(call["out"])["header"]["X-Secret"] == [redacted("s3cret-out")]
    assert json.loads(call["out"])["body"] == "made"
    [entry] = await _workflow_dlq(api, "wfr_rh")
    assert _lower(entry["header"])["x-secret"] == [redacted("hunter2")]
    assert _lower(entry["header"])["x-plain"] == ["visible"]
    assert entry["body"] == json.dumps(last)
    _, message = await api.call("GET", f"/v2/messages/{step['messageId']}")
    assert _lower(message["header"])["x-secret"] == [redacted("hunter2")]


def _lower(headers: dict[str, Any]) -> dict[str, Any]:
    return {name.lower(): values for name, values in headers.items()}
