"""The workflow DLQ (reference F10): the DLQ entries of messages that failed a run, shown with
their run (``GET /v2/dlq?source=workflow``), and started again as a new run: *restart* from
entry 0, *resume* from the failed step with the run's entries before it (not delivered again).
Either way the new run gets a new id, keeps the old run's settings (those naming the old run id
name the new one), and the DLQ entry is removed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from relay import protocol as p
from relay.clock import random_id
from relay.delivery import callback_message
from relay.models import Attempt, DlqEntry, MessageState
from relay.protocol import BadRequest
from relay.service import PublishRequest, RelayService
from relay.workflows import protocol as wp
from relay.workflows import run_messages
from relay.workflows.model import RunState, WorkflowRun
from relay.workflows.protocol import CallType

# What a resume or restart request may change for the new run (`client.dlq.resume(…, options)`).
_OVERRIDES = frozenset({p.H_RETRIES, "upstash-flow-control-key", "upstash-flow-control-value"})


async def workflow_fields(
    service: RelayService, entry: DlqEntry, run: WorkflowRun
) -> dict[str, Any]:
    """The run fields of a workflow DLQ message (of ``run``)."""
    fields: dict[str, Any] = {
        "workflowRunId": run.run_id,
        "workflowCreatedAt": run.created_at,
        "workflowUrl": run.url,
    }
    if entry.message.failure_callback:
        fields["failureCallback"] = entry.message.failure_callback
        callback, state = await run_messages.failure_callback(service, run, entry)
        info = {"state": state}
        if callback is not None:
            info.update(await run_messages.last_response(service, callback))
        fields["failureCallbackInfo"] = info
    return fields


async def restart(
    service: RelayService, dlq_ids: Sequence[str], overrides: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Start each failed run again from its initial payload, as a new run."""
    started = []
    for dlq_id in dlq_ids:
        entry, run = await _failed_run(service, dlq_id)
        new_id = random_id("wfr_", 21)
        settings = _settings(run, new_id, overrides)
        content_type = p.lower_headers(entry.message.headers).get(p.H_CONTENT_TYPE)
        headers = [
            (wp.H_INIT, "true"),
            (wp.H_RUN_ID, new_id),
            (wp.H_URL, run.url),
            ("upstash-forward-" + wp.H_SDK_VERSION, "1"),
            (p.H_CONTENT_TYPE, content_type or "application/json"),
            *settings,
        ]
        await service.publish(PublishRequest(run.url, headers, run.payload))
        await service.delete_dlq([dlq_id])
        started.append(await _started(service, new_id))
    return started


async def resume(
    service: RelayService, dlq_ids: Sequence[str], overrides: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Continue each failed run, as a new run, from the message that failed it: the entries
    before it are copied, and it is delivered again (a step with that prefix)."""
    resumed = []
    now = service.clock.now_ms()
    for dlq_id in dlq_ids:
        entry, run = await _failed_run(service, dlq_id)
        failed = entry.message
        if failed.entry == 0:  # the Init's delivery failed: nothing to resume from
            resumed.extend(await restart(service, [dlq_id], overrides))
            continue
        new_id = random_id("wfr_", 21)
        new_run = replace(
            run,
            run_id=new_id,
            created_at=now,
            settings=_settings(run, new_id, overrides),
            state=RunState.RUN_STARTED,
            completed_at=None,
            response=None,
            dlq_id=None,
        )
        # A step comes after the entries before its own; a callback after all of them.
        is_step = failed.call_type in (None, CallType.STEP) and failed.entry is not None
        upto = failed.entry - 1 if is_step and failed.entry is not None else None
        await service.backend.copy_run(run.run_id, new_run, upto)
        family = dict(_renamed(failed.failure_callback_headers.items(), run.run_id, new_id))
        message = replace(
            failed,
            id=service.ids.message_id(),
            run_id=new_id,
            entry=None,
            state=MessageState.CREATED,
            retried=0,
            not_before=now,
            created_at=now,
            dedup_key=None,
            failure_callback_headers=family,
            max_retries=_retries(overrides, failed.max_retries),
        )
        await service.accept_messages([message])
        await service.delete_dlq([dlq_id])
        resumed.append(await _started(service, new_id))
    return resumed


async def retry_failure_function(service: RelayService, dlq_id: str) -> dict[str, Any]:
    """Send a failed run's failure callback again (``client.dlq.retryFailureFunction``), made
    from the DLQ entry as it was made when the run failed."""
    entry, run = await _failed_run(service, dlq_id)
    if entry.message.failure_callback is None:
        raise BadRequest(f"dlq message {dlq_id} has no failure callback")
    attempt = Attempt(
        status=entry.response_status,
        headers=entry.response_headers,
        body=entry.response_body,
        error=entry.error,
        duration_ms=0,
    )
    now = service.clock.now_ms()
    message = callback_message(
        service, entry.message, attempt, now, failure=True, dlq=entry, run=run
    )
    [accepted] = await service.accept_messages([message])
    return {"messageId": accepted.message_id}


def overrides_of(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers of a resume/restart request that change the new run's settings."""
    return [(k.lower(), v) for k, v in headers if k.lower() in _OVERRIDES]


async def _failed_run(service: RelayService, dlq_id: str) -> tuple[DlqEntry, WorkflowRun]:
    entry = await service.get_dlq(dlq_id)
    run = await _run_of(service, entry)
    if run is None:
        raise BadRequest(f"dlq message {dlq_id} is not a workflow run's")
    return entry, run


async def _run_of(service: RelayService, entry: DlqEntry) -> WorkflowRun | None:
    run_id = entry.message.run_id
    return None if run_id is None else await service.backend.get_run(run_id)


def _settings(
    run: WorkflowRun, new_id: str, overrides: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The old run's settings for the new one: its id replaced, ``overrides`` applied."""
    changed = {k for k, _ in overrides}
    kept = [(k, v) for k, v in run.settings if k.lower() not in changed]
    return _renamed(kept, run.run_id, new_id) + list(overrides)


def _retries(overrides: Sequence[tuple[str, str]], current: int) -> int:
    value = dict(overrides).get(p.H_RETRIES)
    return p.parse_int(value, what="Upstash-Retries") if value else current


def _renamed(headers: Iterable[tuple[str, str]], old_id: str, new_id: str) -> list[tuple[str, str]]:
    """``headers`` with the values naming run ``old_id`` naming ``new_id``."""
    return [(k, new_id if v == old_id else v) for k, v in headers]


async def _started(service: RelayService, run_id: str) -> dict[str, Any]:
    run = await service.backend.get_run(run_id)
    created = run.created_at if run is not None else service.clock.now_ms()
    return {"workflowRunId": run_id, "workflowCreatedAt": created}


# The workflow DLQ's own filters (query parameters), matched against a message's run fields.
RUN_FILTERS = ("workflowRunId", "workflowUrl", "workflowCreatedAt")


@dataclass(slots=True)
class RunDlqEntry:
    """A DLQ entry of a message of ``run``, with the run fields the workflow DLQ adds to it."""

    entry: DlqEntry
    run: WorkflowRun
    fields: dict[str, Any]


async def of_runs(
    service: RelayService, entries: Sequence[DlqEntry], filters: dict[str, str]
) -> list[RunDlqEntry]:
    """The ``entries`` that are workflow runs' messages matching ``filters`` (of
    RUN_FILTERS), with their run and its fields."""
    result = []
    for entry in entries:
        run = await _run_of(service, entry)
        if run is None:
            continue
        fields = await workflow_fields(service, entry, run)
        if all(str(fields[k]) == v for k, v in filters.items()):
            result.append(RunDlqEntry(entry, run, fields))
    return result
