"""The records relay keeps: messages, their events, DLQ entries, and what a delivery settles to."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any


class MessageState(enum.StrEnum):
    """A message's state, spelled as QStash's logs spell it (``CANCELED`` with one L)."""

    CREATED = "CREATED"
    ACTIVE = "ACTIVE"
    RETRY = "RETRY"
    ERROR = "ERROR"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    CANCELED = "CANCELED"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({MessageState.DELIVERED, MessageState.FAILED, MessageState.CANCELED})


@dataclass(slots=True)
class Message:
    """One message to one destination URL, with everything needed to deliver it again."""

    id: str
    url: str
    method: str
    body: bytes
    headers: list[tuple[str, str]]  # sent to the destination as they are (forwarded, Content-Type)
    max_retries: int
    timeout: int  # seconds per attempt
    not_before: int  # ms: first attempt due
    created_at: int  # ms
    retry_delay: str | None = None
    callback: str | None = None
    failure_callback: str | None = None
    # The `Upstash-Callback-<rest>` family, kept as the `Upstash-<rest>` publish headers of the
    # callback message; likewise for the failure callback.
    callback_headers: dict[str, str] = field(default_factory=dict)
    failure_callback_headers: dict[str, str] = field(default_factory=dict)
    topic_name: str | None = None
    endpoint_name: str | None = None
    queue_name: str | None = None
    schedule_id: str | None = None
    caller_ip: str | None = None
    label: str | None = None
    dedup_key: str | None = None
    state: MessageState = MessageState.CREATED
    retried: int = 0

    def to_record(self) -> dict[str, Any]:
        """Everything but the body, JSON-ready (backends store the body as bytes beside it)."""
        record = {name: getattr(self, name) for name in _RECORD_FIELDS}
        record["state"] = str(self.state)
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any], body: bytes) -> Message:
        data = dict(record)
        data["headers"] = [(str(k), str(v)) for k, v in data["headers"]]
        data["state"] = MessageState(data["state"])
        return cls(body=body, **data)


_RECORD_FIELDS = [f.name for f in fields(Message) if f.name != "body"]


@dataclass(slots=True)
class Event:
    """One state change of one message: the logs API's entries."""

    time: int  # ms
    message_id: str
    state: MessageState
    url: str
    detail: dict[str, Any] = field(
        default_factory=dict
    )  # wire-named extras (error, responseStatus…)
    seq: int = 0  # assigned by the backend; orders events and makes the cursor

    @classmethod
    def of(cls, message: Message, state: MessageState, time: int, **detail: Any) -> Event:
        """An event of ``message``, carrying the fields the logs API filters on."""
        for key, value in (
            ("topicName", message.topic_name),
            ("endpointName", message.endpoint_name),
            ("queueName", message.queue_name),
            ("scheduleId", message.schedule_id),
            ("label", message.label),
        ):
            if value is not None:
                detail.setdefault(key, value)
        return cls(time=time, message_id=message.id, state=state, url=message.url, detail=detail)


@dataclass(slots=True)
class Attempt:
    """What one HTTP attempt got back: a response, or an error without one."""

    status: int | None
    headers: list[tuple[str, str]]
    body: bytes
    error: str | None
    duration_ms: int


@dataclass(slots=True)
class DlqEntry:
    """A message whose retries ran out, with the last response, kept until retried or deleted."""

    dlq_id: str
    message: Message
    failed_at: int  # ms
    response_status: int | None
    response_headers: list[tuple[str, str]]
    response_body: bytes
    error: str | None = None


@dataclass(slots=True)
class Lease:
    """A message taken for delivery until ``visible_until``; settled with its ``receipt``."""

    message: Message
    receipt: str
    visible_until: int  # ms


@dataclass(slots=True)
class Settlement:
    """The stored outcome of one attempt: the message's new state and what follows from it.

    A backend applies a settlement atomically (or, on AWS, in an order where a crash means the
    attempt is redelivered), so that no outcome is half-recorded.
    """

    state: MessageState  # DELIVERED, RETRY or FAILED
    retried: int
    next_due: int | None  # ms, when state is RETRY
    events: list[Event]
    follow_ups: list[Message] = field(default_factory=list)  # callbacks, published with it
    dlq: DlqEntry | None = None


@dataclass(slots=True)
class Accepted:
    """The answer to one accepted message: its id, or the id of the message it duplicates."""

    message_id: str
    url: str
    deduplicated: bool = False


@dataclass(slots=True)
class Page:
    """A page of a listing; ``cursor`` continues it (``None`` at the end)."""

    items: list[Any]
    cursor: str | None


@dataclass(slots=True)
class EventQuery:
    """Filters of the logs API (``GET /v2/events``); lists hold OR-ed values."""

    message_ids: list[str] = field(default_factory=list)
    states: list[MessageState] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    topic_names: list[str] = field(default_factory=list)
    queue_names: list[str] = field(default_factory=list)
    schedule_ids: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    from_time: int | None = None
    to_time: int | None = None
    cursor: str | None = None
    count: int = 1000


@dataclass(slots=True)
class DlqQuery:
    """Filters of ``GET /v2/dlq``."""

    dlq_ids: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    topic_names: list[str] = field(default_factory=list)
    queue_names: list[str] = field(default_factory=list)
    schedule_ids: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    response_statuses: list[int] = field(default_factory=list)
    from_time: int | None = None
    to_time: int | None = None
    cursor: str | None = None
    count: int = 100
