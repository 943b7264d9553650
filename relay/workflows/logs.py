"""Workflow run logs (reference F9): ``GET /v2/workflows/events`` (what the JS SDK's
``client.logs`` calls) and ``GET /v2/workflows/logs`` (the documented path), one shape: a page of
runs, each with its state, response, invoker, failure function and its steps in groups.

Groups are read off the run's entries: a step of a parallel group is written by the SDK twice,
first as a plan (``stepId`` 0, ``targetStep``), then as a result (``concurrent`` > 1); results
gather in a ``parallel`` group of ``concurrent`` steps, plans are left out, every other step is a
``sequential`` group of one, and the message still under way is the ``next`` group.

Redaction (relay.redaction's rule): a step shows what its message and the run (the Init's
``Upstash-Redact-Fields``, which the SDKs send there only) asked to hide: under ``body`` its
output, the call's request and response bodies, the invoked run's body and the run's response;
under ``header``/``header[<Name>]`` every header map of the step (its own, the call's request
and response headers, the invoked run's). The endpoint's answers (errors of a step under way,
the failure function's) are shown, as the message logs show response bodies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from relay import protocol as p
from relay.redaction import Redaction
from relay.service import RelayService
from relay.workflows import invoke, log_details, run_messages
from relay.workflows.model import RunLogQuery, WorkflowRun

INITIAL_STEP = "init"
DEFAULT_COUNT = 10
# Fields a step log takes from its entry when there: the SDK's (sleep, call) and those relay
# writes into the Wait and Invoke results it makes.
_STEP_DETAILS = (
    "sleepFor",
    "sleepUntil",
    "callUrl",
    "callMethod",
    "callHeaders",
    "callBody",
    "waitTimeoutDeadline",
    "invokedWorkflowRunId",
    "invokedWorkflowUrl",
    "invokedWorkflowCreatedAt",
    "invokedWorkflowRunBody",
    "invokedWorkflowRunHeaders",
)


@dataclass(slots=True)
class Entry:
    """One entry of a run: the message that carried it and its raw body."""

    message_id: str
    body: bytes
    created_at: int  # ms
    headers: dict[str, list[str]] = field(default_factory=dict)
    retries: int = 0
    redaction: Redaction = field(default_factory=Redaction)  # the run's and its message's


@dataclass(slots=True)
class RunView:
    """What the logs show of a run (read from the run store by ``_view``)."""

    run_id: str
    url: str
    state: str  # RUN_STARTED | RUN_SUCCESS | RUN_FAILED | RUN_CANCELED
    created_at: int
    entries: Sequence[Entry]  # entry 0: the initial payload
    completed_at: int | None = None
    response: str | None = None
    label: str | None = None
    dlq_id: str | None = None
    invoker: dict[str, Any] | None = None
    failure_function: dict[str, Any] | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)  # the `next` group's steps
    calls: dict[int, log_details.CallRequest] = field(default_factory=dict)  # by step id
    redaction: Redaction = field(default_factory=Redaction)  # the run's (its Init's)


async def list_logs(service: RelayService, query: RunLogQuery) -> dict[str, Any]:
    """A page of run logs, newest run first; ``cursor`` continues it (absent on the last)."""
    runs = await service.backend.list_runs(query)
    answer: dict[str, Any] = {"runs": [run_log(await _view(service, run)) for run in runs]}
    if (cursor := next_cursor(runs, query)) is not None:
        answer["cursor"] = cursor
    return answer


def next_cursor(runs: Sequence[WorkflowRun], query: RunLogQuery) -> str | None:
    """The cursor of the page after ``runs`` (None when it was the last)."""
    if len(runs) < query.count or not runs:
        return None
    return f"{runs[-1].created_at}:{runs[-1].run_id}"


def parse_cursor(cursor: str) -> tuple[int, str]:
    """The ``(created_at, run_id)`` a logs cursor names; BadRequest for anything else."""
    created_at, _, run_id = cursor.partition(":")
    if not created_at.isdigit():
        raise p.BadRequest(f"invalid cursor {cursor!r}")
    return int(created_at), run_id


async def _view(service: RelayService, run: WorkflowRun) -> RunView:
    found = await run_messages.of_run(service, run, run.url, run.created_at, [])
    own = {m.id: m.redact for m in found}  # an entry's message not found: the run's fields
    entries = [
        Entry(
            message_id=e.message_id,
            body=e.body,
            created_at=e.time,
            redaction=Redaction.of(run.redact, own.get(e.message_id)),
        )
        for e in await service.backend.run_entries(run.run_id)
    ]
    return RunView(
        run_id=run.run_id,
        url=run.url,
        state=str(run.state),
        created_at=run.created_at,
        entries=entries,
        completed_at=run.completed_at,
        response=run.response,
        label=run.label,
        dlq_id=run.dlq_id,
        invoker=await invoke.invoker_of(service, run.run_id),
        failure_function=await _failure_function(service, run),
        pending=await log_details.pending(service, run),
        calls=await log_details.calls(service, found),
        redaction=Redaction.of(run.redact),
    )


async def _failure_function(service: RelayService, run: WorkflowRun) -> dict[str, Any] | None:
    """The failure callback of a failed run: what failed (from its DLQ entry) and how the
    callback went."""
    entry = await service.backend.get_dlq(run.dlq_id) if run.dlq_id else None
    if entry is None or entry.message.failure_callback is None:
        return None
    callback, state = await run_messages.failure_callback(service, run, entry)
    info: dict[str, Any] = {
        "url": entry.message.failure_callback,
        "state": state,
        "failStatus": entry.response_status or 0,
        "failResponse": entry.response_body.decode("utf-8", "replace"),
        "failHeaders": p.header_map(entry.response_headers),
        "dlqId": entry.dlq_id,
    }
    if callback is not None:
        info["messageId"] = callback.id
        info.update(await run_messages.last_response(service, callback))
    return info


def run_log(run: RunView) -> dict[str, Any]:
    """A ``WorkflowRunLog`` as the SDK types it."""
    log: dict[str, Any] = {
        "workflowRunId": run.run_id,
        "workflowUrl": run.url,
        "workflowState": run.state,
        "workflowRunCreatedAt": run.created_at,
        "steps": step_groups(run),
    }
    optional = (
        ("workflowRunCompletedAt", run.completed_at),
        ("workflowRunResponse", run.redaction.text(run.response)),
        ("invoker", run.invoker),
        ("failureFunction", run.failure_function),
        ("dlqId", run.dlq_id),
        ("label", run.label),
        ("labels", run.label.split(",") if run.label else None),
    )
    log.update({key: value for key, value in optional if value is not None})
    return log


def step_groups(run: RunView) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    parallel: list[dict[str, Any]] | None = None
    for index, entry in enumerate(run.entries):
        if index == 0:
            groups.append(_sequential(hide(_initial_step(entry), entry.redaction)))
            continue
        step = _step_json(entry.body)
        if step is None or _is_plan(step):
            continue
        log = _step_log(entry, step)
        redaction = entry.redaction
        if step.get("stepType") == "Call":
            log.update(log_details.call_response(step.get("out")))
            if (call := run.calls.get(step.get("stepId") or 0)) is not None:
                log.update(call.fields)
                redaction |= call.redaction
        log = hide(log, redaction)
        concurrent = int(step.get("concurrent") or 1)
        if concurrent <= 1:
            groups.append(_sequential(log))
            continue
        if parallel is None or len(parallel) >= concurrent:
            parallel = []
            groups.append({"type": "parallel", "steps": parallel})
        parallel.append(log)
    if run.pending:
        groups.append({"type": "next", "steps": run.pending})
    return groups


# What of a step log is a body and what a header map, for `hide`.
_BODIES = ("out", "callBody", "callResponseBody", "invokedWorkflowRunBody")
_HEADER_MAPS = ("headers", "callHeaders", "callResponseHeaders", "invokedWorkflowRunHeaders")


def hide(log: dict[str, Any], redaction: Redaction) -> dict[str, Any]:
    """A step log as shown under ``redaction``: its bodies and header maps hidden as asked
    (a Call step's output, a JSON ``{status, body, header}``, has its ``header`` hidden too
    when only headers are)."""
    if not redaction:
        return log
    if log.get("stepType") == "Call" and not redaction.body:
        log["out"] = _call_out(log.get("out"), redaction)
    for key in _BODIES:
        if key in log:
            log[key] = redaction.text(log[key])
    for key in _HEADER_MAPS:
        if key in log:
            log[key] = redaction.headers(log[key])
    return log


def _call_out(out: Any, redaction: Redaction) -> Any:
    result = _step_json(out.encode()) if isinstance(out, str) else None
    if result is None or "header" not in result:
        return out
    return p.compact_json({**result, "header": redaction.headers(result["header"])}).decode()


def _sequential(step: dict[str, Any]) -> dict[str, Any]:
    return {"type": "sequential", "steps": [step]}


def _is_plan(step: dict[str, Any]) -> bool:
    return step.get("stepId") == 0 and step.get("targetStep") is not None


def _initial_step(entry: Entry) -> dict[str, Any]:
    return {
        "stepId": 0,
        "stepName": INITIAL_STEP,
        "stepType": "Initial",
        "callType": "step",
        "messageId": entry.message_id,
        "out": entry.body.decode("utf-8", "replace"),
        "concurrent": 1,
        "state": "STEP_SUCCESS",
        "createdAt": entry.created_at,
        "retries": entry.retries,
        "headers": entry.headers,
    }


def _step_log(entry: Entry, step: dict[str, Any]) -> dict[str, Any]:
    log: dict[str, Any] = {
        "stepId": step.get("stepId"),
        "stepName": step.get("stepName"),
        "stepType": step.get("stepType"),
        "callType": "step",
        "messageId": entry.message_id,
        "out": step.get("out"),
        "concurrent": int(step.get("concurrent") or 1),
        "state": "STEP_SUCCESS",
        "createdAt": entry.created_at,
        "retries": entry.retries,
        "headers": entry.headers,
    }
    for key in _STEP_DETAILS:
        if step.get(key) is not None:
            log[key] = step[key]
    if step.get("stepType") in ("Wait", "WaitForWebhook"):
        log["waitEventId"] = step.get("waitEventId")
        log["waitTimeoutDuration"] = step.get("timeout")
        log["waitTimeout"] = bool(step.get("waitTimeout"))
        if isinstance(step.get("out"), str):
            log["out"] = log_details.b64_text(step["out"])
    return log


def _step_json(body: bytes) -> dict[str, Any] | None:
    try:
        step = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return step if isinstance(step, dict) else None
