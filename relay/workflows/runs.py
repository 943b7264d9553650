"""Workflow runs (reference F1, F2, F6, F8): what a delivery of a run's message carries, how a
run ends (success, cancel, bulk cancel) and the lazy fetch of its entries.

A step's entry is appended when relay accepts it (relay.service, Backend.accept_run_messages);
its delivery carries the entries from 0 up to its own, built when it is sent. A message whose
run has ended is dropped unsent, so a cancelled sleeping run never fires.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from relay import protocol as p
from relay.models import Message, MessageState
from relay.protocol import NotFound
from relay.service import RelayService
from relay.workflows import invoke, waiters
from relay.workflows import protocol as wp
from relay.workflows.model import RunQuery, RunState, WorkflowRun
from relay.workflows.protocol import CallType

log = logging.getLogger("relay.workflows.runs")

_NO_BODY = frozenset({"GET", "HEAD"})


async def outgoing(
    service: RelayService, message: Message, run: WorkflowRun | None
) -> Message | None:
    """What to send for a run's message: a step as its entry array, a callback or failure
    callback raw, each with the run's headers; a call to a third party as published (no
    body on GET). None when the run has ended (a failure callback is still sent)."""
    call_type = message.call_type
    if run is None or (run.state.ended and call_type != CallType.FAILURE_CALL):
        return None
    if call_type == CallType.TO_CALLBACK:
        return replace(message, body=b"") if message.method in _NO_BODY else message
    own = {
        wp.D_RUN_ID: run.run_id,
        wp.D_URL: run.url,
        wp.D_CREATED_AT: str(run.created_at),
    }
    headers = message.headers
    body = message.body
    if call_type == CallType.STEP and message.entry is not None:
        entries = await service.backend.run_entries(run.run_id, message.entry)
        body = wp.entry_array(entries)
        own[p.D_CONTENT_TYPE] = "application/json"
    else:  # raw: the SDK tells a callback from a step by the missing protocol version
        headers = [(k, v) for k, v in headers if k.lower() != wp.H_SDK_VERSION]
    return replace(message, headers=p.with_headers(headers, own), body=body)


async def end(service: RelayService, run_id: str, *, cancel: bool, response: str | None) -> None:
    """``DELETE /v2/workflows/runs/{id}``: the run succeeded (its ``response`` kept) or is
    cancelled; idempotent for a run that has ended. NotFound for an unknown run."""
    state = RunState.RUN_CANCELED if cancel else RunState.RUN_SUCCESS
    result = await service.backend.end_run(run_id, state, service.clock.now_ms(), response=response)
    if result is None:
        raise NotFound(f"workflow run {run_id} not found")
    run, ended_now = result
    if ended_now:
        await ended(service, run)


async def cancel_matching(service: RelayService, query: RunQuery) -> int:
    """Bulk cancel: end every run going on that ``query`` matches; how many this ended."""
    cancelled = 0
    now = service.clock.now_ms()
    for found in await service.backend.find_runs(query):
        result = await service.backend.end_run(found.run_id, RunState.RUN_CANCELED, now)
        if result is not None and result[1]:
            cancelled += 1
            await ended(service, result[0])
    return cancelled


async def fetch(service: RelayService, run_id: str) -> bytes:
    """``GET /v2/workflows/runs/{id}`` (the JS SDK's lazy fetch): the run's whole entry array;
    NotFound once it has ended."""
    run = await service.backend.get_run(run_id)
    if run is None or run.state.ended:
        raise NotFound(f"workflow run {run_id} not found or already ended")
    return wp.entry_array(await service.backend.run_entries(run_id))


async def failed(service: RelayService, run_id: str) -> None:
    """A delivery failed the run (stored with its settlement): tell what waits on its end."""
    run = await service.backend.get_run(run_id)
    if run is not None:
        await ended(service, run)


async def ended(service: RelayService, run: WorkflowRun) -> None:
    """A run ended: its steps still waiting are cancelled, its waiters are forgotten, its
    invoker gets the result. All idempotent, so a repeat (a failure settled twice, the recovery
    pass after a crash here: the invoker's pending result goes last, as the mark) is harmless."""
    await _cancel_waiting(service, run)
    await waiters.drop_run(service, run.run_id)
    await invoke.run_ended(
        service,
        run.run_id,
        response=run.response,
        failed=run.state is RunState.RUN_FAILED,
        canceled=run.state is RunState.RUN_CANCELED,
    )


async def _cancel_waiting(service: RelayService, run: WorkflowRun) -> None:
    """Cancel the run's step messages not yet attempted or waiting to retry (a sleep shows as
    cancelled at once); one under way settles as it goes. Any left over (a crash right now,
    a callback) is dropped unsent when it comes due."""
    waiting = []
    for entry in await service.backend.run_entries(run.run_id):
        message = await service.backend.get_message(entry.message_id)
        if message is not None and message.state in _WAITING:
            waiting.append(message.id)
    await service.cancel_many(waiting)


_WAITING = frozenset({MessageState.CREATED, MessageState.RETRY})
