"""Records as the QStash v2 JSON the SDKs parse (names, both spellings where they disagree),
with the fields a publisher asked to redact hidden."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from relay import protocol as p
from relay.models import DlqEntry, Event, Message


def message_json(message: Message) -> dict[str, Any]:
    """The Message object of ``GET /v2/messages/{id}``; ``state`` and ``retried`` are additions."""
    data: dict[str, Any] = {
        "messageId": message.id,
        "url": message.url,
        "method": message.method,
        "header": p.header_map(message.headers),
        "maxRetries": message.max_retries,
        "notBefore": message.not_before,
        "createdAt": message.created_at,
        "timeout": message.timeout,
        "state": str(message.state),
        "retried": message.retried,
    }
    try:
        data["body"] = message.body.decode("utf-8")
    except UnicodeDecodeError:
        data["bodyBase64"] = p.b64(message.body)
    for key, value in (
        ("callback", message.callback),
        ("failureCallback", message.failure_callback),
        ("topicName", message.topic_name),
        ("endpointName", message.endpoint_name),
        ("queueName", message.queue_name),
        ("scheduleId", message.schedule_id),
        ("callerIP", message.caller_ip),
        ("callerIp", message.caller_ip),
        ("retryDelayExpression", message.retry_delay),
        ("label", message.label),
        ("flowControlKey", message.flow_control_key),
        ("parallelism", message.flow_parallelism),
        ("rate", message.flow_rate),
        ("period", message.flow_period),  # seconds
    ):
        if value is not None:
            data[key] = value
    if message.label is not None:
        data["labels"] = message.label.split(",")
    return redact(data, message.redact)


def event_json(event: Event) -> dict[str, Any]:
    """A LogEntry of ``GET /v2/events``."""
    data = {
        "time": event.time,
        "messageId": event.message_id,
        "state": str(event.state),
        "url": event.url,
        **event.detail,
    }
    return redact(data, data.pop("redact", None))


def dlq_json(entry: DlqEntry) -> dict[str, Any]:
    """A DLQMessage: the message, its DLQ id and the last response it got."""
    data = message_json(entry.message)
    response_headers = p.header_map(entry.response_headers)
    data.update(
        dlqId=entry.dlq_id,
        responseStatus=entry.response_status or 0,
        responseHeader=response_headers,
        responseHeaders=response_headers,
        failedAt=entry.failed_at,
    )
    try:
        data["responseBody"] = entry.response_body.decode("utf-8")
    except UnicodeDecodeError:
        data["responseBodyBase64"] = p.b64(entry.response_body)
    if entry.error is not None:
        data["error"] = entry.error
    return data


def redact(data: dict[str, Any], fields: str | None) -> dict[str, Any]:
    """``data`` (a message or log entry) with the ``Upstash-Redact-Fields`` it names replaced
    by ``REDACTED:<sha256 hex of the value>``, as QStash shows them: ``body`` (also
    ``bodyBase64``), ``header`` (every value of ``header``) or ``header[<Name>]``."""
    if not fields:
        return data
    wanted = fields.split(",")
    if "body" in wanted:
        if (text := data.pop("body", None)) is not None:
            data["body"] = _redacted(text.encode())
        elif (encoded := data.pop("bodyBase64", None)) is not None:
            data["body"] = _redacted(base64.b64decode(encoded))
    names = {f[len("header[") : -1].lower() for f in wanted if f.startswith("header[")}
    if isinstance(headers := data.get("header"), dict) and ("header" in wanted or names):
        data["header"] = {
            name: [_redacted(v.encode()) for v in values]
            if "header" in wanted or name.lower() in names
            else values
            for name, values in headers.items()
        }
    return data


def _redacted(value: bytes) -> str:
    return "REDACTED:" + hashlib.sha256(value).hexdigest()
