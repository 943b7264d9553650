"""How the workflow logs group a run's entries: entry 0 is the `init` step, a parallel group's
plans are left out and its results gathered, any other step stands alone, and what is under way
is the `next` group."""

from __future__ import annotations

import base64
import json
from typing import Any

from relay.redaction import Redaction, hidden
from relay.workflows.log_details import CallRequest
from relay.workflows.logs import Entry, RunView, run_log, step_groups


def _entry(index: int, step: dict[str, Any] | bytes) -> Entry:
    body = step if isinstance(step, bytes) else json.dumps(step, separators=(",", ":")).encode()
    return Entry(message_id=f"msg_{index}", body=body, created_at=1000 + index)


def _run(*steps: dict[str, Any] | bytes, **fields: Any) -> RunView:
    entries = [_entry(0, b'{"n":1}'), *(_entry(i + 1, s) for i, s in enumerate(steps))]
    return RunView(
        run_id="wfr_x",
        url="http://a/wf",
        state="RUN_STARTED",
        created_at=1,
        entries=entries,
        **fields,
    )


def _names(run: RunView) -> list[tuple[str, list[str]]]:
    return [
        (g["type"], [s.get("stepName", s.get("messageId")) for s in g["steps"]])
        for g in step_groups(run)
    ]


def test_sequential_parallel_and_next_groups() -> None:
    run = _run(
        {"stepId": 1, "stepName": "a", "stepType": "Run", "out": '"A"', "concurrent": 1},
        {"stepId": 0, "stepName": "b1", "stepType": "Run", "concurrent": 2, "targetStep": 2},
        {"stepId": 0, "stepName": "b2", "stepType": "Run", "concurrent": 2, "targetStep": 3},
        {"stepId": 3, "stepName": "b2", "stepType": "Run", "out": '"two"', "concurrent": 2},
        {"stepId": 2, "stepName": "b1", "stepType": "Run", "out": '"one"', "concurrent": 2},
        {"stepId": 4, "stepName": "nap", "stepType": "SleepFor", "sleepFor": 1, "concurrent": 1},
        pending=[{"messageId": "msg_next", "state": "STEP_PROGRESS", "retries": 0}],
    )
    assert _names(run) == [
        ("sequential", ["init"]),
        ("sequential", ["a"]),
        ("parallel", ["b2", "b1"]),
        ("sequential", ["nap"]),
        ("next", ["msg_next"]),
    ]
    nap = step_groups(run)[3]["steps"][0]
    assert nap["sleepFor"] == 1 and nap["messageId"] == "msg_6" and nap["createdAt"] == 1006


def test_two_parallel_groups_in_a_row_stay_apart() -> None:
    result = {"stepName": "p", "stepType": "Run", "out": "1", "concurrent": 2}
    run = _run(*({**result, "stepId": i} for i in (1, 2, 3, 4)))
    assert [g["type"] for g in step_groups(run)] == ["sequential", "parallel", "parallel"]


def test_python_step_json_and_a_wait_result() -> None:
    python_step = (
        b'{"method": "POST", "stepId": 1, "stepName": "first", "stepType": "Run", "out": "42",'
        b' "sleepFor": null, "concurrent": 1, "targetStep": null}'
    )
    wait = {
        "stepId": 2,
        "stepName": "w",
        "stepType": "Wait",
        "out": base64.b64encode(b'{"ok":true}').decode(),
        "waitEventId": "evt",
        "timeout": "2s",
        "waitTimeoutDeadline": 5000,
        "waitTimeout": False,
        "concurrent": 1,
    }
    groups = step_groups(_run(python_step, wait, b"not json"))
    first, waited = groups[1]["steps"][0], groups[2]["steps"][0]
    assert first["out"] == "42" and "sleepFor" not in first
    assert waited["out"] == '{"ok":true}' and waited["waitTimeout"] is False
    assert (waited["waitEventId"], waited["waitTimeoutDuration"]) == ("evt", "2s")
    assert len(groups) == 3  # an entry that is not step JSON is left out


def test_run_log_fields() -> None:
    log = run_log(_run(label="a,b", response='{"r":1}', completed_at=9))
    assert log["labels"] == ["a", "b"] and log["label"] == "a,b"
    assert log["workflowRunResponse"] == '{"r":1}' and log["workflowRunCompletedAt"] == 9
    assert "invoker" not in log and "failureFunction" not in log
    [init] = log["steps"][0]["steps"]
    assert (init["stepType"], init["out"], init["state"]) == ("Initial", '{"n":1}', "STEP_SUCCESS")


def test_a_call_step_logs_its_response_and_the_request_found_for_it() -> None:
    out = json.dumps({"status": 404, "body": "gone", "header": {"A": ["1"]}})
    call = {"stepId": 1, "stepName": "c", "stepType": "Call", "out": out, "concurrent": 1}
    request = {"callUrl": "https://x", "callMethod": "GET", "callHeaders": {}, "callBody": ""}
    [_, group] = step_groups(_run(call, calls={1: CallRequest(request, Redaction())}))
    [step] = group["steps"]
    assert step["callResponseStatus"] == 404 and step["callResponseBody"] == "gone"
    assert step["callResponseHeaders"] == {"A": ["1"]} and step["callUrl"] == "https://x"
    not_json = {**call, "out": "oops"}
    [_, group] = step_groups(_run(not_json))
    assert "callResponseStatus" not in group["steps"][0]


def test_a_call_step_hides_what_its_entry_and_its_callback_asked() -> None:
    out = json.dumps({"status": 200, "body": "made", "header": {"A": ["1"], "B": ["2"]}})
    call = {"stepId": 1, "stepName": "c", "stepType": "Call", "out": out, "concurrent": 1}
    request = {"callUrl": "https://x", "callHeaders": {"A": ["3"], "B": ["4"]}, "callBody": "q"}
    run = _run(call, calls={1: CallRequest(request, Redaction.of("header[B]"))})
    run.entries[1].redaction = Redaction.of("header[a]")
    [init, group] = step_groups(run)
    [step] = group["steps"]
    assert step["callHeaders"] == {"A": [hidden(b"3")], "B": [hidden(b"4")]}
    assert step["callResponseHeaders"] == {"A": [hidden(b"1")], "B": [hidden(b"2")]}
    assert json.loads(step["out"])["header"] == step["callResponseHeaders"]
    assert (step["callBody"], step["callResponseBody"]) == ("q", "made")
    assert init["steps"][0]["out"] == '{"n":1}'  # entry 0 asked nothing
    run.entries[1].redaction = Redaction.of("body")
    [_, group] = step_groups(run)
    [step] = group["steps"]
    assert step["out"] == hidden(out.encode()) and step["callBody"] == hidden(b"q")
    assert step["callResponseBody"] == hidden(b"made")
