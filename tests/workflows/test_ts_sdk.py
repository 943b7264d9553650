"""Scenario B of the workflow reference: `@upstash/workflow` 1.3.3 on express 5 (node), unchanged,
against a real `relay dev` process. The SDK verifies every delivery's signature itself (both
signing keys are in the app's environment) over express's re-serialized JSON body.

One relay (tests/workflows/conftest.py's ``target``) and one node app serve every test here
(module fixtures); the app appends what each step saw to a JSON-lines file, and its
``/client/<op>`` route runs the SDK's own ``Client``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.workflows.apps import Target

NODE_DIR = Path(__file__).parent.parent / "node"
PAYLOAD = {"n": 21, "name": "Jörg"}  # non-ASCII: relay must send it raw, as JSON.stringify does

pytestmark = pytest.mark.slow

Record = dict[str, Any]


@dataclass
class NodeApp:
    """The express app of tests/node/workflow_app.mjs and the records its steps wrote."""

    url: str
    records_file: Path

    def workflow(self, path: str) -> str:
        return self.url + path

    def client(self, op: str, args: Any) -> Any:
        """Run ``client.<op>(args)`` of the SDK's Client inside the app; its result."""
        answer = _post_json(f"{self.url}/client/{op}", args)
        if "error" in answer:
            raise AssertionError(f"client.{op} failed: {answer['error']}")
        return answer["result"]

    def records(self, kind: str | None = None, run_id: str | None = None) -> list[Record]:
        if not self.records_file.exists():
            return []
        lines = self.records_file.read_text().splitlines()
        return [
            r
            for r in map(json.loads, lines)
            if (kind is None or r["kind"] == kind) and (run_id is None or r.get("runId") == run_id)
        ]

    def wait_for(
        self, kind: str, run_id: str | None, count: int = 1, timeout: float = 15
    ) -> list[Record]:
        return _until(lambda: self.records(kind, run_id), count, timeout, f"{kind} of {run_id}")


def _until(read: Callable[[], list[Record]], count: int, timeout: float, what: str) -> list[Record]:
    deadline = time.monotonic() + timeout
    while True:
        found = read()
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {count} x {what}; got {found}")
        time.sleep(0.05)


def _post_json(url: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def app(target: Target, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeApp]:
    if not (NODE_DIR / "node_modules" / "@upstash" / "workflow").is_dir() or not shutil.which(
        "node"
    ):
        message = "tests/node is not installed: `make test` runs npm ci there"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    records = tmp_path_factory.mktemp("node") / "records.jsonl"
    process = subprocess.Popen(
        ["node", str(NODE_DIR / "workflow_app.mjs")],
        stdout=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            **{key: value for key, value in target.env().items() if value is not None},
            "PORT": "0",  # it prints the port it took
            "RECORD_FILE": str(records),
        },
    )
    try:
        assert process.stdout is not None
        listening, _, port = process.stdout.readline().strip().partition(" ")
        assert listening == "listening" and port.isdigit(), "the node app did not start"
        yield NodeApp(f"http://127.0.0.1:{port}", records)
    finally:
        process.terminate()
        process.wait(10)


def _trigger(app: NodeApp, path: str, body: Any, **options: Any) -> str:
    answer = app.client("trigger", {"url": app.workflow(path), "body": body, **options})
    run_id: str = answer["workflowRunId"]
    return run_id


def _run_log(app: NodeApp, run_id: str) -> Record:
    [run] = app.client("logs", {"workflowRunId": run_id})["runs"]
    return run


# --- F1, F2: trigger, steps, parallel, sleep, run end ---------------------------------------


FIXED = {"headers": {"x-trace": "trace-ts"}, "label": "ts-label", "retries": 0}


@pytest.fixture(scope="module")
def fixed_run(app: NodeApp) -> str:
    """The run of ``/wf`` triggered with the fixed id ``fixed1`` (once for the module)."""
    return _trigger(app, "/wf", PAYLOAD, workflowRunId="fixed1", **FIXED)


def test_trigger_with_fixed_id_runs_every_step_once_and_dedups(
    app: NodeApp, fixed_run: str
) -> None:
    run_id = fixed_run
    assert run_id == "wfr_fixed1"
    # The same id while the run is active (it sleeps 1 s): no second run.
    assert _trigger(app, "/wf", {"n": 0}, workflowRunId="fixed1", **FIXED) == "wfr_fixed1"

    [c] = app.wait_for("c", run_id)
    assert (c["a"], c["b1"], c["b2"]) == ("A", "one", "two")
    time.sleep(0.3)  # a second continuation of the parallel group would show up by now
    steps = {kind: app.records(kind, run_id) for kind in ("a", "b1", "b2", "c")}
    assert {kind: len(found) for kind, found in steps.items()} == {"a": 1, "b1": 1, "b2": 1, "c": 1}
    for [seen] in steps.values():  # the trigger's payload, headers and label reach every step
        assert seen["payload"] == PAYLOAD
        assert seen["trace"] == "trace-ts" and seen["labels"] == ["ts-label"]
    [nap_start] = steps["a"]
    assert steps["b1"][0]["time"] - nap_start["time"] >= 1000  # slept 1 s

    run = _wait_for_state(app, run_id, "RUN_SUCCESS")
    assert run["workflowRunResponse"] == '{"result":"ok"}'


def test_failure_function_gets_status_message_and_payload(app: NodeApp) -> None:
    run_id = _trigger(app, "/wf-fail", PAYLOAD, retries=0, headers={"x-trace": "trace-fail"})
    [failure] = app.wait_for("failure", run_id)
    assert failure["failStatus"] == 500
    assert failure["failResponse"] == "boom-from-ts"
    assert failure["payload"] == PAYLOAD and failure["stack"] is True
    assert failure["trace"] == "trace-fail"
    assert len(app.records("fine", run_id)) == 1 and len(app.records("boom", run_id)) == 1
    run = _wait_for_state(app, run_id, "RUN_FAILED")

    def called_back() -> list[Record]:
        function = _run_log(app, run_id)["failureFunction"]
        return [function] if function["state"] == "CALLBACK_SUCCESS" else []

    [function] = _until(called_back, 1, 5, f"the failure callback of {run_id} in the logs")
    assert function["failStatus"] == 500
    assert "boom-from-ts" in function["failResponse"] and function["dlqId"] == run["dlqId"]
    assert function["url"] == app.workflow("/wf-fail") and function["messageId"]


def test_workflow_dlq_lists_restarts_resumes_and_deletes(app: NodeApp) -> None:
    run_id = _trigger(app, "/wf-fail", {"kind": "dlq"}, retries=0)
    app.wait_for("failure", run_id)
    [failed] = _dlq_of(app, run_id)
    assert failed["workflowUrl"] == app.workflow("/wf-fail") and failed["responseStatus"] == 500
    assert failed["failureCallback"] == app.workflow("/wf-fail")
    assert failed["failureCallbackInfo"]["state"] in ("CALLBACK_INPROGRESS", "CALLBACK_SUCCESS")

    restarted = app.client("dlqRestart", {"dlqId": failed["dlqId"], "retries": 0})
    new_id = restarted["workflowRunId"]
    assert new_id != run_id and _dlq_of(app, run_id) == []
    [failure] = app.wait_for("failure", new_id)  # from entry 0: `fine` ran again
    assert failure["payload"] == {"kind": "dlq"} and len(app.records("fine", new_id)) == 1

    [again] = _dlq_of(app, new_id)
    resumed = app.client("dlqResume", {"dlqId": again["dlqId"], "retries": 0})["workflowRunId"]
    app.wait_for("failure", resumed)  # from the failed step: `fine` did not run again
    assert app.records("fine", resumed) == [] and len(app.records("boom", resumed)) == 1

    [last] = _dlq_of(app, resumed)
    assert app.client("dlqCallback", {"dlqId": last["dlqId"]})["messageId"]
    [_, again_failure] = app.wait_for("failure", resumed, count=2)  # the failure function again
    assert again_failure["failStatus"] == 500 and again_failure["payload"] == {"kind": "dlq"}
    assert app.client("dlqDelete", [last["dlqId"]]) == {"deleted": 1}
    assert _dlq_of(app, resumed) == []


def _dlq_of(app: NodeApp, run_id: str) -> list[Record]:
    filtered = app.client("dlqList", {"filter": {"workflowRunId": run_id}})["messages"]
    messages: list[Record] = app.client("dlqList", {})["messages"]
    assert filtered == [m for m in messages if m["workflowRunId"] == run_id]
    return filtered


def test_cancel_of_a_sleeping_run(app: NodeApp) -> None:
    run_id = _trigger(app, "/wf-long", {"sleep": 2})
    app.wait_for("long-start", run_id)
    [pending] = _until(lambda: _sleeping(app, run_id), 1, 10, f"the sleep of {run_id}")
    assert pending["state"] == "STEP_PROGRESS" and pending["messageId"]
    assert app.client("cancel", {"ids": run_id}) == {"cancelled": 1}
    assert app.client("cancel", {"ids": run_id}) == {"cancelled": 0}  # already over
    assert _run_log(app, run_id)["workflowState"] == "RUN_CANCELED"
    deliveries = len(app.records("http", run_id))
    time.sleep(2.5)  # past the sleep's end: its delivery was dropped with the run
    assert app.records("long-woke", run_id) == []
    assert len(app.records("http", run_id)) == deliveries


def _sleeping(app: NodeApp, run_id: str) -> list[Record]:
    """The logs' `next` group of ``run_id`` once it holds just the sleep: the delivery that
    submitted it answered and settled."""
    answered = [r for r in app.records("http", run_id) if r["status"] == 200]
    if len(answered) < 2:
        return []
    groups = _run_log(app, run_id)["steps"]
    pending = [s for g in groups if g["type"] == "next" for s in g["steps"]]
    return pending if len(pending) == 1 else []


# --- F5: waitForEvent / notify ---------------------------------------------------------------


def test_wait_for_event_times_out(app: NodeApp) -> None:
    started = time.time() * 1000
    run_id = _trigger(app, "/wf-wait", {"eventId": "evt-timeout", "timeout": 1})
    [waited] = app.wait_for("waited", run_id)
    assert waited["timedOut"] is True and waited["eventData"] is None
    assert waited["time"] - started >= 1000
    [wait] = _logged_steps(app, run_id, "wait")
    assert (wait["stepType"], wait["waitEventId"], wait["waitTimeout"]) == (
        "Wait",
        "evt-timeout",
        True,
    )
    assert wait["waitTimeoutDuration"] == "1s" and wait["waitTimeoutDeadline"] >= started + 1000


def test_notify_wakes_the_waiter(app: NodeApp) -> None:
    run_id = _trigger(app, "/wf-wait", {"eventId": "evt-1", "timeout": 10})
    waiters = _until(
        lambda: app.client("getWaiters", {"eventId": "evt-1"}), 1, 10, "the waiter of evt-1"
    )
    assert waiters[0]["url"] == app.workflow("/wf-wait")
    notified = app.client("notify", {"eventId": "evt-1", "eventData": {"ok": "ü"}})
    assert len(notified) == 1 and notified[0]["waiter"]["url"] == app.workflow("/wf-wait")
    [waited] = app.wait_for("waited", run_id)
    assert waited["timedOut"] is False and waited["eventData"] == {"ok": "ü"}
    assert app.client("getWaiters", {"eventId": "evt-1"}) == []
    assert app.client("notify", {"eventId": "evt-1", "eventData": "late"}) == []


def test_run_scoped_notify_before_the_wait_is_looked_back(app: NodeApp) -> None:
    run_id = _trigger(app, "/wf-wait", {"eventId": "evt-early", "timeout": 10, "sleep": 1})
    app.client("notify", {"eventId": "evt-early", "eventData": "early", "workflowRunId": run_id})
    [waited] = app.wait_for("waited", run_id)
    assert waited["timedOut"] is False and waited["eventData"] == "early"


def test_webhook_call_wakes_the_run(app: NodeApp) -> None:
    run_id = _trigger(app, "/wf-hook", {"hook": True})
    [announced] = app.wait_for("hook-url", run_id)
    request = urllib.request.Request(announced["url"] + "?x=1", data=b"hello hook", method="PUT")
    with urllib.request.urlopen(request, timeout=10):  # no token: the URL is the capability
        pass
    [hooked] = app.wait_for("hooked", run_id)
    assert hooked["timedOut"] is False
    assert (hooked["method"], hooked["body"]) == ("PUT", "hello hook")


# --- F7: invoke ------------------------------------------------------------------------------


def test_invoke_of_a_child_and_of_a_failing_child(app: NodeApp) -> None:
    run_id = _trigger(app, "/many/parent", {"go": True})
    [parent] = app.wait_for("parent", run_id, timeout=20)
    assert parent["ok"] == {"body": {"doubled": 8}, "isFailed": False, "isCanceled": False}
    assert parent["failed"]["isFailed"] is True and parent["failed"]["isCanceled"] is False
    [child] = [r for r in app.records("child") if r["payload"] == {"n": 4}]
    assert child["payload"] == {"n": 4}
    child_run = _run_log(app, child["runId"])
    assert child_run["invoker"]["workflowRunId"] == run_id
    assert child_run["invoker"]["workflowUrl"] == app.workflow("/many/parent")
    [invoked] = _logged_steps(app, run_id, "call-child")
    assert invoked["stepType"] == "Invoke" and invoked["invokedWorkflowRunId"] == child["runId"]
    assert invoked["invokedWorkflowUrl"] == app.workflow("/many/child")


def test_cancel_of_an_invoked_child_is_returned_to_its_parent(app: NodeApp) -> None:
    run_id = _trigger(app, "/many/cancelParent", {})
    [child] = app.wait_for("sleepy-child", run_id=None)
    _until(lambda: _sleeping(app, child["runId"]), 1, 10, "the child's sleep")
    assert app.client("cancel", {"ids": child["runId"]}) == {"cancelled": 1}
    [parent] = app.wait_for("cancel-parent", run_id)
    assert parent["result"] == {"body": None, "isFailed": False, "isCanceled": True}


# --- F9: logs --------------------------------------------------------------------------------


def test_logs_group_steps(app: NodeApp, fixed_run: str) -> None:
    run = _wait_for_state(app, fixed_run, "RUN_SUCCESS")
    assert run["workflowUrl"] == app.workflow("/wf") and run["labels"] == ["ts-label"]
    groups = [(g["type"], sorted(s["stepName"] for s in g["steps"])) for g in run["steps"]]
    assert groups == [
        ("sequential", ["init"]),
        ("sequential", ["a"]),
        ("sequential", ["nap"]),
        ("parallel", ["b1", "b2"]),
        ("sequential", ["c"]),
    ]
    init, a = run["steps"][0]["steps"][0], run["steps"][1]["steps"][0]
    assert json.loads(init["out"]) == PAYLOAD and a["out"] == '"A"'
    assert all(s["state"] == "STEP_SUCCESS" for g in run["steps"] for s in g["steps"])
    assert run["workflowRunCompletedAt"] >= run["workflowRunCreatedAt"]
    # Filters: by label, state and creation time.
    created = run["workflowRunCreatedAt"]
    for query in (
        {"label": "ts-label"},
        {"workflowCreatedAt": created, "state": "RUN_SUCCESS"},
        {"fromDate": created, "toDate": created, "workflowUrl": app.workflow("/wf")},
    ):
        found = app.client("logs", {"filter": query, "count": 50})["runs"]
        assert [r["workflowRunId"] for r in found] == ["wfr_fixed1"], query
    succeeded = app.client("logs", {"filter": {"state": "RUN_SUCCESS"}, "count": 50})["runs"]
    assert all(r["workflowState"] == "RUN_SUCCESS" for r in succeeded)
    assert "wfr_fixed1" in [r["workflowRunId"] for r in succeeded]
    # The page is newest first; a cursor continues it.
    first = app.client("logs", {"count": 1})
    assert len(first["runs"]) == 1 and first["cursor"]
    [newest] = first["runs"]
    for older in app.client("logs", {"count": 1, "cursor": first["cursor"]})["runs"]:
        assert older["workflowRunId"] != newest["workflowRunId"]
        assert older["workflowRunCreatedAt"] <= newest["workflowRunCreatedAt"]


def test_redacted_run_delivers_in_clear_and_logs_hide(app: NodeApp) -> None:
    """``client.trigger({redact})`` puts ``Upstash-Redact-Fields`` on the Init only: the steps
    still get the payload and headers as sent, the logs show no output or named header."""
    secret = {"headers": {"x-trace": "trace-secret"}, "redact": {"body": True}}
    run_id = _trigger(app, "/wf", PAYLOAD, **secret)
    [c] = app.wait_for("c", run_id)
    assert (c["a"], c["b1"], c["b2"]) == ("A", "one", "two")  # step results came back intact
    assert c["payload"] == PAYLOAD and c["trace"] == "trace-secret"
    run = _wait_for_state(app, run_id, "RUN_SUCCESS")
    outs = [s["out"] for g in run["steps"] for s in g["steps"] if s.get("out") is not None]
    assert outs and all(out.startswith("REDACTED:") for out in outs)
    assert run["workflowRunResponse"].startswith("REDACTED:")
    assert "Jörg" not in json.dumps(run, ensure_ascii=False)


def _logged_steps(app: NodeApp, run_id: str, name: str) -> list[Record]:
    """The steps named ``name`` in the run's logs (the `next` group's have no name yet)."""
    groups = _run_log(app, run_id)["steps"]
    return [s for g in groups for s in g["steps"] if s.get("stepName") == name]


def _wait_for_state(app: NodeApp, run_id: str, state: str, timeout: float = 10) -> Record:
    def read() -> list[Record]:
        runs: list[Record] = app.client("logs", {"workflowRunId": run_id})["runs"]
        return [r for r in runs if r["workflowState"] == state]

    [run] = _until(read, 1, timeout, f"{state} of {run_id}")
    return run


# --- signatures ------------------------------------------------------------------------------


def test_every_delivery_was_signed_and_verified(app: NodeApp) -> None:
    """Over every delivery of the module's runs (a run of its own when it runs alone)."""
    app.wait_for("child", _trigger(app, "/many/child", {"n": 1}))
    deliveries = app.records("http")
    assert deliveries and all(r["signed"] for r in deliveries)
    # 500: the failing steps' answers; anything else (400/401: a signature refused) is a bug.
    assert {r["status"] for r in deliveries} <= {200, 500}
    # The app does verify: a body changed after signing is refused.
    with pytest.raises(urllib.error.HTTPError) as refused:
        _post_json(app.workflow("/wf"), [], {"Upstash-Signature": "forged"})
    assert refused.value.code in (400, 401, 500)
