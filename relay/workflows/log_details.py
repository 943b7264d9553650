"""What the workflow logs add to a run's entries from its messages and their events: the
``next`` group (the messages under way, with the step name the SDK reported on a failing
attempt and the attempts' errors) and the request side of each ``context.call`` (read off the
callback that brought its response)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from relay.models import Event, EventQuery, Message, MessageState
from relay.redaction import Redaction
from relay.service import RelayService
from relay.workflows import run_messages
from relay.workflows.model import WorkflowRun
from relay.workflows.protocol import CallType

H_ERROR_STEP_NAME = "upstash-error-step-name"  # the SDK's answer header on a failing step
H_STEP_ID = "upstash-workflow-stepid"  # on a context.call's callback to the workflow
_STEP_STATES = {MessageState.RETRY: "STEP_RETRY", MessageState.FAILED: "STEP_FAILED"}


async def pending(service: RelayService, run: WorkflowRun) -> list[dict[str, Any]]:
    """The ``next`` group's steps: the run's messages under way to its URL, oldest first."""
    if run.state.ended:
        return []
    found = await run_messages.of_run(
        service, run, run.url, run.created_at, list(run_messages.PENDING)
    )
    return [await _pending_step(service, m) for m in reversed(found)]


async def _pending_step(service: RelayService, message: Message) -> dict[str, Any]:
    query = EventQuery(message_ids=[message.id], states=[MessageState.RETRY])
    failures: list[Event] = list((await service.list_events(query)).items)
    step: dict[str, Any] = {
        "messageId": message.id,
        "state": _STEP_STATES.get(message.state, "STEP_PROGRESS"),
        "retries": message.retried,
    }
    if failures:  # newest first
        names = _header(failures[0].detail.get("responseHeaders"), H_ERROR_STEP_NAME)
        if names is not None:
            step["stepName"] = names
        step["errors"] = [_error(e) for e in reversed(failures)]
    return step


def _error(event: Event) -> dict[str, Any]:
    """A ``StepError``: a failed attempt's error (the SDK's message when it answered one,
    else relay's: ``HTTP 500``, a connection error)."""
    detail = event.detail
    body = str(detail.get("responseBody") or "")
    return {
        "error": _message(body) or detail.get("error") or "",
        "body": body,
        "headers": detail.get("responseHeaders") or {},
        "status": detail.get("responseStatus") or 0,
        "time": event.time,
    }


def _message(body: str) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    found = data.get("message") or data.get("error") if isinstance(data, dict) else None
    return str(found) if found else None


def _header(headers: Any, name: str) -> str | None:
    if not isinstance(headers, dict):
        return None
    for key, values in headers.items():
        if key.lower() == name and values:
            return str(values[0] if isinstance(values, list) else values)
    return None


@dataclass(slots=True)
class CallRequest:
    """The request side of a ``context.call``: its step log's call fields, and what the
    callback that carried them asked to redact."""

    fields: dict[str, Any]
    redaction: Redaction


async def calls(service: RelayService, found: Sequence[Message]) -> dict[int, CallRequest]:
    """The request of each ``context.call`` of the run, by step id, read off the callback
    that brought the response to the workflow (among ``found``, the run's messages to its
    URL, newest first)."""
    requests: dict[int, CallRequest] = {}
    for message in found:
        step_id = _step_id(message)
        if message.call_type != CallType.FROM_CALLBACK or step_id is None or step_id in requests:
            continue
        stored = await service.backend.get_message(message.id)  # listed without its body
        try:
            callback = orjson.loads(stored.body) if stored is not None else None
        except orjson.JSONDecodeError:
            continue
        if isinstance(callback, dict):
            requests[step_id] = CallRequest(_call_request(callback), Redaction.of(message.redact))
    return requests


def _step_id(message: Message) -> int | None:
    value = next((v for k, v in message.headers if k.lower() == H_STEP_ID), None)
    return int(value) if value is not None and value.isdigit() else None


def _call_request(callback: dict[str, Any]) -> dict[str, Any]:
    return {
        "callUrl": callback.get("url"),
        "callMethod": callback.get("method"),
        "callHeaders": callback.get("sourceHeader") or {},
        "callBody": b64_text(str(callback.get("sourceBody") or "")),
    }


def call_response(out: Any) -> dict[str, Any]:
    """The response fields of a Call step's log from its result (``{status, body, header}``
    as the SDK writes it)."""
    try:
        result = orjson.loads(out) if isinstance(out, str) else None
    except orjson.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        return {}
    return {
        "callResponseStatus": result.get("status"),
        "callResponseBody": result.get("body"),
        "callResponseHeaders": result.get("header") or {},
    }


def b64_text(value: str) -> str:
    """``value`` base64-decoded as text (as is when it is not base64)."""
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return value
