"""A run's messages, found through the message listing (which knows no run: at most a page of
the URL's newest messages is read): what is under way to the workflow URL, and the failure
callback of a failed run with how it went. Read by the logs and the workflow DLQ."""

from __future__ import annotations

from typing import Any

from relay.models import DlqEntry, EventQuery, Message, MessageQuery, MessageState
from relay.service import RelayService
from relay.workflows.model import WorkflowRun
from relay.workflows.protocol import CallType

SCAN = 200  # messages of a URL read per lookup
PENDING = (MessageState.CREATED, MessageState.ACTIVE, MessageState.RETRY)
_ATTEMPTS = [MessageState.DELIVERED, MessageState.RETRY, MessageState.FAILED]
_CALLBACK_STATES = {
    MessageState.DELIVERED: "CALLBACK_SUCCESS",
    MessageState.FAILED: "CALLBACK_FAIL",
    MessageState.CANCELED: "CALLBACK_CANCELED",
}


async def of_run(
    service: RelayService, run: WorkflowRun, url: str, since: int, states: list[MessageState]
) -> list[Message]:
    """The run's messages to ``url`` created since ``since`` (ms), newest first."""
    query = MessageQuery(states=states, url_contains=url, from_time=since, count=SCAN)
    page = await service.backend.list_messages(query)
    return [m for m in page.items if m.run_id == run.run_id and m.url == url]


async def failure_callback(
    service: RelayService, run: WorkflowRun, entry: DlqEntry
) -> tuple[Message | None, str]:
    """The newest failure callback the failure in ``entry`` made, and its state as the
    workflow APIs spell it (``CALLBACK_INPROGRESS`` until it is settled)."""
    url = entry.message.failure_callback
    if url is None:
        return None, "CALLBACK_INPROGRESS"
    found = await of_run(service, run, url, entry.failed_at, [])
    callbacks = [m for m in found if m.call_type == CallType.FAILURE_CALL]
    if not callbacks:
        return None, "CALLBACK_INPROGRESS"
    return callbacks[0], _CALLBACK_STATES.get(callbacks[0].state, "CALLBACK_INPROGRESS")


async def last_response(service: RelayService, message: Message) -> dict[str, Any]:
    """What ``message``'s latest attempt got back: ``responseStatus``, ``responseBody`` and
    ``responseHeaders`` (none before an answer came)."""
    query = EventQuery(message_ids=[message.id], states=list(_ATTEMPTS), count=1)
    events = (await service.backend.list_events(query)).items
    detail = events[0].detail if events else {}
    if detail.get("responseStatus") is None:
        return {}
    return {
        "responseStatus": detail["responseStatus"],
        "responseBody": detail.get("responseBody") or "",
        "responseHeaders": detail.get("responseHeaders") or {},
    }
