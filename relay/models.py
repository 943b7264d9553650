"""The records relay keeps: messages, their events, DLQ entries, and what a delivery settles to."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol
from urllib.parse import urlsplit


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
    label: str | None = None  # `Upstash-Label`: labels joined by "," (see split_labels)
    # `Upstash-Redact-Fields`, canonical (protocol.parse_redact_fields): what answers hide
    redact: str | None = None
    flow_control_key: str | None = None  # `Upstash-Flow-Control-Key`
    # `Upstash-Flow-Control-Value` as this message gave it; the key's limits: relay.flow_control
    flow_parallelism: int | None = None
    flow_rate: int | None = None
    flow_period: int | None = None  # seconds
    # The queue slot a callback of a queued message holds for its source (relay.queues.slot_of)
    slot_queue: str | None = None
    slot: str | None = None
    dedup_key: str | None = None
    state: MessageState = MessageState.CREATED
    retried: int = 0
    # A message of a workflow run (relay.workflows): its run, its `Upstash-Workflow-CallType`,
    # and for a step its entry's index in the run (given when it is accepted; 0: the Init).
    run_id: str | None = None
    call_type: str | None = None
    entry: int | None = None

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
            ("redact", message.redact),  # read (and removed) by relay.http.render
            ("flowControlKey", message.flow_control_key),
            ("callerIp", message.caller_ip),
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
    # A workflow message failed: its run fails with it (``dlq`` named), and the follow-ups (the
    # failure callback) are stored only if this settlement is what ended the run.
    fails_run: str | None = None


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
    hosts: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    flow_control_keys: list[str] = field(default_factory=list)
    caller_ips: list[str] = field(default_factory=list)
    from_time: int | None = None
    to_time: int | None = None
    cursor: str | None = None
    count: int = 1000

    @property
    def beyond_index(self) -> bool:
        """Whether a filter asks what no backend indexes (host, path, flow-control key, caller
        IP): the backend then applies :meth:`matches` to the full events it reads."""
        return bool(self.hosts or self.paths or self.flow_control_keys or self.caller_ips)

    def matches(self, event: Event) -> bool:
        """Whether ``event`` passes every filter (the cursor aside): the one rule of the logs
        API. Backends narrow with what they index first; this is the final word."""
        detail = event.detail
        states = [str(s) for s in self.states]
        wanted: list[tuple[list[str], Sequence[str | None]]] = [
            (self.message_ids, [event.message_id]),
            (states, [str(event.state)]),
            (self.topic_names, [detail.get("topicName")]),
            (self.queue_names, [detail.get("queueName")]),
            (self.schedule_ids, [detail.get("scheduleId")]),
            (self.labels, split_labels(detail.get("label"))),
            (self.flow_control_keys, [detail.get("flowControlKey")]),
            (self.caller_ips, [detail.get("callerIp")]),
        ]
        wanted.append((self.urls, [event.url]))
        return passes_filters(wanted, event.url, event.time, self)


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
    caller_ips: list[str] = field(default_factory=list)
    flow_control_keys: list[str] = field(default_factory=list)
    from_time: int | None = None
    to_time: int | None = None
    cursor: str | None = None
    count: int = 100


@dataclass(slots=True)
class PendingQuery:
    """Filters of bulk cancel (``DELETE /v2/messages?...``) over the messages not yet finished:
    lists hold OR-ed values, fields are AND-ed, the times bound ``created_at`` (ms); an empty
    query matches every pending message."""

    urls: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    topic_names: list[str] = field(default_factory=list)
    queue_names: list[str] = field(default_factory=list)
    schedule_ids: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    flow_control_keys: list[str] = field(default_factory=list)
    caller_ips: list[str] = field(default_factory=list)
    from_time: int | None = None
    to_time: int | None = None

    def matches(self, message: Message) -> bool:
        """Whether ``message`` passes the filters (its state is the backend's concern)."""
        wanted: list[tuple[list[str], Sequence[str | None]]] = [
            (self.topic_names, [message.topic_name]),
            (self.queue_names, [message.queue_name]),
            (self.schedule_ids, [message.schedule_id]),
            (self.labels, split_labels(message.label)),
            (self.flow_control_keys, [message.flow_control_key]),
            (self.caller_ips, [message.caller_ip]),
        ]
        wanted.append((self.urls, [message.url]))
        return passes_filters(wanted, message.url, message.created_at, self)


class UrlAndTimeFilters(Protocol):
    """The filters every query has beside its lists: destination host and path, time bounds."""

    hosts: list[str]
    paths: list[str]
    from_time: int | None
    to_time: int | None


def passes_filters(
    wanted: list[tuple[list[str], Sequence[str | None]]],
    url: str,
    time: int,
    filters: UrlAndTimeFilters,
) -> bool:
    """The filters' rule (messages, events, workflow runs): each non-empty list of values must
    hold one of what the record has (values OR-ed, filters AND-ed); the destination URL's host
    and path are filters too; the time (ms) lies within the bounds."""
    parts = urlsplit(url)
    wanted = [*wanted, (filters.hosts, [parts.hostname]), (filters.paths, [parts.path or "/"])]
    if any(values and not set(values) & set(have) for values, have in wanted):
        return False
    if filters.from_time is not None and time < filters.from_time:
        return False
    return filters.to_time is None or time <= filters.to_time


def split_labels(label: str | None) -> list[str]:
    """The labels of an ``Upstash-Label`` value: comma-separated, trimmed, empty ones dropped."""
    return [part.strip() for part in (label or "").split(",") if part.strip()]


@dataclass(slots=True)
class QueueStats:
    """The messages waiting for delivery at one moment, for metrics: ``due`` now, ``waiting``
    for a later due time (delays, retry backoff), ``in_flight`` (leased); and ``oldest_due``,
    when the longest-waiting due message became due (ms), or None when none is due."""

    due: int
    waiting: int
    in_flight: int
    oldest_due: int | None = None

    @property
    def depth(self) -> int:
        return self.due + self.waiting + self.in_flight


@dataclass(frozen=True, slots=True)
class MessageCounts:
    """Stored messages per state (states with none may be left out). Exact when ``segments`` is
    1; else estimated from one of ``segments`` equal parts of the store (the part's counts times
    ``segments``). ``max_age``: seconds the backend may keep counts before it reads them again."""

    by_state: dict[MessageState, int] = field(default_factory=dict)
    segments: int = 1
    max_age: int = 0

    @property
    def exact(self) -> bool:
        return self.segments == 1

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    def get(self, state: MessageState) -> int:
        return self.by_state.get(state, 0)


@dataclass(slots=True)
class MessageQuery:
    """Filters of the console's message list: messages newest first; lists hold OR-ed values,
    ``url_contains`` matches part of the URL, the times bound ``created_at`` (ms)."""

    message_ids: list[str] = field(default_factory=list)
    states: list[MessageState] = field(default_factory=list)
    url_contains: str | None = None
    labels: list[str] = field(default_factory=list)
    from_time: int | None = None
    to_time: int | None = None
    cursor: str | None = None
    count: int = 50


# An attempt's outcome as the events record it: (time ms, DELIVERED | RETRY | FAILED, duration ms).
Outcome = tuple[int, MessageState, int | None]
