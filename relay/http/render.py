"""Records as the QStash v2 JSON the SDKs parse (names, both spellings where they disagree),
with the fields a publisher asked to redact hidden (relay.redaction's rule)."""

from __future__ import annotations

from typing import Any

from relay import protocol as p
from relay.models import DlqEntry, Event, Message
from relay.redaction import redact


def message_json(message: Message, *, also: str | None = None) -> dict[str, Any]:
    """The Message object of ``GET /v2/messages/{id}``; ``state`` and ``retried`` are additions.
    ``also``: redact fields to hide besides the message's own (its workflow run's)."""
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
    return redact(data, p.parse_redact_fields(",".join(filter(None, (message.redact, also)))))


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


def dlq_json(entry: DlqEntry, *, also: str | None = None) -> dict[str, Any]:
    """A DLQMessage: the message (``also`` as for message_json), its DLQ id and the last
    response it got."""
    data = message_json(entry.message, also=also)
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
