"""context.invoke (reference F7): a publish with ``Upstash-Workflow-Invoke: true`` starts a child
run from the wrapper the parent's SDK sent, and when the child ends (success, failure, cancel)
relay writes the Invoke step's result entry into the parent by publishing it to the parent's
URL with the headers the wrapper named, as the SDK would publish any step.

Two records per child run: the *invoker* (the parent, kept for the child's logs) and the
*pending result* (what to publish to the parent), claimed (deleted) by whoever publishes the
result, so a child's end is reported to its parent once; the result is stored as an intent
(relay.workflows.outbox) before the claim, and a pending result left behind an ended run is
the recovery pass's sign that the end was not followed up (relay.workflows.recovery).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import orjson

from relay import protocol as p
from relay.protocol import ApiError, BadRequest
from relay.service import PublishRequest, RelayService
from relay.workflows import outbox
from relay.workflows import protocol as wp
from relay.workflows.model import WorkflowRun

log = logging.getLogger("relay.workflows.invoke")

INVOKER = "workflow_invoker"
PENDING_RESULT = "workflow_invoke_result"
H_INVOKE = "upstash-workflow-invoke"
INTENT = "invoke\0"  # outbox keys: invoke, the child run id


def requested(headers: Iterable[tuple[str, str]]) -> bool:
    """Whether a publish is an invoke (``Upstash-Workflow-Invoke: true``)."""
    return any(k.lower() == H_INVOKE and p.parse_bool(v) for k, v in headers)


async def start(service: RelayService, request: PublishRequest) -> tuple[int, Any]:
    """Start the child run of an invoke publish; the publish answer of the child's Init."""
    wrapper = _wrapper(request.body)
    child_id = next((v for k, v in request.headers if k.lower() == wp.H_RUN_ID), None)
    if not child_id:
        raise BadRequest("invoke needs the child's Upstash-Workflow-RunId header")
    invoker = {
        "workflowRunId": wrapper["workflowRunId"],
        "workflowUrl": wrapper["workflowUrl"],
        "workflowRunCreatedAt": wrapper.get("workflowRunCreatedAt"),
    }
    pending = {
        "headers": wrapper.get("headers") or {},
        "step": wrapper["step"],
        "childRunId": child_id,
        **invoker,
    }
    await service.backend.put_record(INVOKER, child_id, invoker)
    await service.backend.put_record(PENDING_RESULT, child_id, pending)
    child = replace(
        request,
        headers=[(k, v) for k, v in request.headers if k.lower() != H_INVOKE],
        body=str(wrapper.get("body") or "").encode(),
    )
    try:
        return await service.publish(child)
    except ApiError:
        await service.backend.delete_record(PENDING_RESULT, child_id)
        await service.backend.delete_record(INVOKER, child_id)
        raise


async def invoker_of(service: RelayService, run_id: str) -> dict[str, Any] | None:
    """The parent that invoked ``run_id`` (the logs' ``invoker``), if any."""
    return await service.backend.get_record(INVOKER, run_id)


async def run_ended(
    service: RelayService,
    run_id: str,
    *,
    response: str | None,
    failed: bool = False,
    canceled: bool = False,
) -> None:
    """A run ended: if it was invoked, publish its result to the parent (once). The intent is
    stored before the pending result is claimed, so a crash after the claim leaves it for
    ``outbox``'s recovery; a caller that loses the claim left the same intent (same key)."""
    pending = await service.backend.get_record(PENDING_RESULT, run_id)
    if pending is None:
        return
    out = {"body": response, "isFailed": failed, "isCanceled": canceled}
    entry = {**pending["step"], "out": p.compact_json(out).decode(), "invokedWorkflowRunId": run_id}
    if (child := await service.backend.get_run(run_id)) is not None:  # for the parent's logs
        entry.update(
            invokedWorkflowUrl=child.url,
            invokedWorkflowCreatedAt=child.created_at,
            invokedWorkflowRunBody=child.payload.decode("utf-8", "replace"),
        )
        if (init := await service.backend.get_message(child.message_id)) is not None:
            entry["invokedWorkflowRunHeaders"] = p.header_map(init.headers)
    headers: dict[str, Any] = pending["headers"]
    intent = outbox.Intent(
        key=f"{INTENT}{run_id}",
        run_id=pending["workflowRunId"],
        destination=pending["workflowUrl"],
        headers=[(k, str(v[0] if isinstance(v, list) else v)) for k, v in headers.items() if v],
        body=p.compact_json(entry),
        match={"stepId": pending["step"].get("stepId"), "invokedWorkflowRunId": run_id},
        created_at=service.clock.now_ms(),
    )
    await outbox.record(service, intent)
    if await service.backend.delete_record(PENDING_RESULT, run_id):
        await outbox.deliver(service, intent)


async def unreported(service: RelayService, now: int) -> list[WorkflowRun]:
    """Invoked runs that ended ``outbox.GRACE`` ago or more with their result still pending:
    a crash came between their end and its report (the recovery pass reports them)."""
    found = []
    for record in await service.backend.list_records(PENDING_RESULT):
        child_id = record.get("childRunId")
        run = await service.backend.get_run(child_id) if isinstance(child_id, str) else None
        ended_at = run.completed_at if run is not None else None
        if run is not None and ended_at is not None and ended_at + outbox.GRACE <= now:
            found.append(run)
    return found


def _wrapper(body: bytes) -> dict[str, Any]:
    try:
        wrapper = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("an invoke body must be JSON") from None
    if not isinstance(wrapper, dict) or not all(
        isinstance(wrapper.get(key), want)
        for key, want in (("workflowRunId", str), ("workflowUrl", str), ("step", dict))
    ):
        raise BadRequest("an invoke body needs workflowRunId, workflowUrl and step")
    return wrapper
