"""Client for the relay's QStash v2 API, blocking (`Client`) and asyncio (`AsyncClient`).

Both clients share one set of request builders and response parsers; each only sends. The wire
format is the official SDKs' (reference §2): the destination goes into the path raw, options
become ``Upstash-*`` headers, and a batch is a JSON array of ``{destination, headers, body,
queue}`` objects.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, Required, TypedDict, TypeVar, Unpack
from urllib.parse import quote, urlencode

import httpx

from relay.signing import SigningKeys

__all__ = [
    "DEFAULT_BASE_URL",
    "AsyncClient",
    "AsyncDlq",
    "AsyncEvents",
    "AsyncFlowControl",
    "AsyncKeys",
    "AsyncMessages",
    "AsyncQueues",
    "AsyncSchedules",
    "AsyncUrlGroups",
    "AuthError",
    "BadRequest",
    "BatchMessage",
    "Client",
    "Dlq",
    "DlqFilter",
    "DlqMessage",
    "DlqPage",
    "Endpoint",
    "Event",
    "EventFilter",
    "Events",
    "EventsPage",
    "FlowControl",
    "FlowControlInfo",
    "FlowControlOptions",
    "GlobalParallelism",
    "Keys",
    "Message",
    "Messages",
    "NotFound",
    "PublishOptions",
    "PublishResponse",
    "PublishResult",
    "Queue",
    "Queues",
    "RateLimited",
    "RelayError",
    "Schedule",
    "ScheduleOptions",
    "Schedules",
    "ServerError",
    "SigningKeys",
    "TransportError",
    "UrlGroup",
    "UrlGroups",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
T = TypeVar("T")


# --- errors -------------------------------------------------------------------------------------


class RelayError(Exception):
    """A relay API call failed; ``status`` is the HTTP status when a response arrived."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class BadRequest(RelayError):
    """The relay rejected the request as invalid (400)."""


class AuthError(RelayError):
    """The token is missing or not accepted (401)."""


class NotFound(RelayError):
    """The message or other resource does not exist (404)."""


class RateLimited(RelayError):
    """The relay asked the caller to slow down (429)."""


class ServerError(RelayError):
    """The relay failed while handling the request (5xx)."""


class TransportError(RelayError):
    """No response arrived: connection refused or reset, or a timeout."""


_STATUS_ERRORS: dict[int, type[RelayError]] = {
    400: BadRequest,
    401: AuthError,
    404: NotFound,
    429: RateLimited,
}
# Only these are worth another attempt; any other 4xx would fail again the same way.
_RETRYABLE: tuple[type[RelayError], ...] = (RateLimited, ServerError, TransportError)


def _error_for(response: httpx.Response) -> RelayError:
    status = response.status_code
    cls = _STATUS_ERRORS.get(status) or (ServerError if status >= 500 else RelayError)
    message = ""
    try:
        data = response.json()
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            message = data["error"]
    except ValueError:
        message = response.text.strip()[:500]
    return cls(message or f"HTTP {status} {response.reason_phrase}".rstrip(), status=status)


@contextmanager
def _transport_errors() -> Iterator[None]:
    """Translate httpx's network failures into `TransportError`."""
    try:
        yield
    except httpx.TransportError as exc:
        name = type(exc).__name__
        raise TransportError(f"{name}: {exc}" if str(exc) else name) from exc


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublishResult:
    """One created message; ``url`` is set for each endpoint of a URL-group publish."""

    message_id: str
    deduplicated: bool = False
    url: str | None = None


PublishResponse = PublishResult | list[PublishResult]
"""A URL publish answers one result, a URL-group publish one result per endpoint."""


@dataclass(frozen=True, slots=True)
class Message:
    """A message as ``GET /v2/messages/{id}`` describes it; fields the server left out are None."""

    message_id: str
    url: str
    method: str = "POST"
    max_retries: int | None = None
    not_before: int | None = None  # unix milliseconds
    created_at: int | None = None  # unix milliseconds
    topic_name: str | None = None
    endpoint_name: str | None = None
    queue_name: str | None = None
    header: dict[str, list[str]] = field(default_factory=dict)
    body: str | None = None
    body_base64: str | None = None
    callback: str | None = None
    failure_callback: str | None = None
    callback_header: dict[str, list[str]] = field(default_factory=dict)
    failure_callback_header: dict[str, list[str]] = field(default_factory=dict)
    schedule_id: str | None = None
    caller_ip: str | None = None
    flow_control_key: str | None = None
    parallelism: int | None = None
    rate: int | None = None
    period: int | None = None  # seconds
    retry_delay_expression: str | None = None
    label: str | None = None
    labels: tuple[str, ...] = ()
    state: str | None = None  # relay's addition: CREATED, ACTIVE, RETRY, DELIVERED, ...
    retried: int | None = None  # relay's addition: attempts retried so far

    @property
    def body_bytes(self) -> bytes | None:
        """The body as bytes, from ``body`` (UTF-8 text) or ``bodyBase64``; None if neither."""
        if self.body is not None:
            return self.body.encode()
        return base64.b64decode(self.body_base64) if self.body_base64 is not None else None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Message:
        """Parse leniently: unknown fields are ignored, wrongly typed ones read as absent."""
        return cls(**_message_fields(data))


def _message_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    label = _str(data.get("label"))
    return {
        "message_id": _str(data.get("messageId")) or "",
        "url": _str(data.get("url")) or "",
        "method": _str(data.get("method")) or "POST",
        "max_retries": _int(data.get("maxRetries")),
        "not_before": _int(data.get("notBefore")),
        "created_at": _int(data.get("createdAt")),
        "topic_name": _str(data.get("topicName")),
        "endpoint_name": _str(data.get("endpointName")),
        "queue_name": _str(data.get("queueName")),
        "header": _header_map(data.get("header")),
        "body": _str(data.get("body")),
        "body_base64": _str(data.get("bodyBase64")),
        "callback": _str(data.get("callback")),
        "failure_callback": _str(data.get("failureCallback")),
        "callback_header": _header_map(data.get("callbackHeader")),
        "failure_callback_header": _header_map(data.get("failureCallbackHeader")),
        "schedule_id": _str(data.get("scheduleId")),
        "caller_ip": _str(data.get("callerIP")) or _str(data.get("callerIp")),
        "flow_control_key": _str(data.get("flowControlKey")),
        "parallelism": _int(data.get("parallelism")),
        "rate": _int(data.get("rate")),
        "period": _int(data.get("period")),
        "retry_delay_expression": _str(data.get("retryDelayExpression")),
        "label": label,
        "labels": _labels(data.get("labels"), label),
        "state": _str(data.get("state")),
        "retried": _int(data.get("retried")),
    }


@dataclass(frozen=True, slots=True)
class DlqMessage(Message):
    """A message in the dead-letter queue (``GET /v2/dlq``): the message, and the last answer
    its destination gave (``response_status`` 0 when no answer came)."""

    dlq_id: str = ""
    response_status: int = 0
    response_header: dict[str, list[str]] = field(default_factory=dict)
    response_body: str | None = None
    response_body_base64: str | None = None
    failed_at: int | None = None  # unix milliseconds
    error: str | None = None

    @property
    def response_body_bytes(self) -> bytes | None:
        """The destination's answer as bytes, from ``responseBody`` or ``responseBodyBase64``."""
        if self.response_body is not None:
            return self.response_body.encode()
        if self.response_body_base64 is not None:
            return base64.b64decode(self.response_body_base64)
        return None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DlqMessage:
        """Parse leniently, as `Message.from_json`."""
        return cls(
            **_message_fields(data),
            dlq_id=_str(data.get("dlqId")) or "",
            response_status=_int(data.get("responseStatus")) or 0,
            response_header=_header_map(data.get("responseHeader") or data.get("responseHeaders")),
            response_body=_str(data.get("responseBody")),
            response_body_base64=_str(data.get("responseBodyBase64")),
            failed_at=_int(data.get("failedAt")),
            error=_str(data.get("error")),
        )


@dataclass(frozen=True, slots=True)
class DlqPage:
    """One page of the DLQ; pass ``cursor`` to the next `list` call (None: the last page)."""

    messages: list[DlqMessage]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the logs (``GET /v2/events``): a message reaching a state. Fields the entry
    does not carry are None (or empty)."""

    time: int  # unix milliseconds
    message_id: str
    state: str  # CREATED, ACTIVE, RETRY, ERROR, DELIVERED, FAILED, CANCEL_REQUESTED, CANCELED
    url: str
    method: str | None = None
    max_retries: int | None = None
    header: dict[str, list[str]] = field(default_factory=dict)
    next_delivery_time: int | None = None  # unix milliseconds
    response_status: int | None = None
    response_header: dict[str, list[str]] = field(default_factory=dict)
    response_body: str | None = None
    error: str | None = None
    duration: int | None = None  # milliseconds the attempt took
    dlq_id: str | None = None
    topic_name: str | None = None
    endpoint_name: str | None = None
    queue_name: str | None = None
    schedule_id: str | None = None
    callback: str | None = None
    failure_callback: str | None = None
    label: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        """Parse leniently, as `Message.from_json`."""
        return cls(
            time=_int(data.get("time")) or 0,
            message_id=_str(data.get("messageId")) or "",
            state=_str(data.get("state")) or "",
            url=_str(data.get("url")) or "",
            method=_str(data.get("method")),
            max_retries=_int(data.get("maxRetries")),
            header=_header_map(data.get("header")),
            next_delivery_time=_int(data.get("nextDeliveryTime")),
            response_status=_int(data.get("responseStatus")),
            response_header=_header_map(data.get("responseHeader") or data.get("responseHeaders")),
            response_body=_str(data.get("responseBody")),
            error=_str(data.get("error")),
            duration=_int(data.get("duration")),
            dlq_id=_str(data.get("dlqId")),
            topic_name=_str(data.get("topicName")),
            endpoint_name=_str(data.get("endpointName")),
            queue_name=_str(data.get("queueName")),
            schedule_id=_str(data.get("scheduleId")),
            callback=_str(data.get("callback")),
            failure_callback=_str(data.get("failureCallback")),
            label=_str(data.get("label")),
        )


@dataclass(frozen=True, slots=True)
class EventsPage:
    """One page of the logs, newest first; pass ``cursor`` to the next `list` call (None: the
    last page)."""

    events: list[Event]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint of a URL group: its URL and an optional name."""

    url: str
    name: str | None = None

    def to_json(self) -> dict[str, str]:
        return {"url": self.url} if self.name is None else {"url": self.url, "name": self.name}


@dataclass(frozen=True, slots=True)
class UrlGroup:
    """A URL group (topic): publishing to its name delivers to each endpoint."""

    name: str
    endpoints: list[Endpoint]
    created_at: int | None = None  # unix milliseconds
    updated_at: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UrlGroup:
        """Parse leniently, as `Message.from_json`."""
        endpoints = [
            Endpoint(e["url"], _str(e.get("name")))
            for e in data.get("endpoints") or []
            if isinstance(e, dict) and isinstance(e.get("url"), str)
        ]
        return cls(
            name=_str(data.get("name")) or "",
            endpoints=endpoints,
            created_at=_int(data.get("createdAt")),
            updated_at=_int(data.get("updatedAt")),
        )


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron schedule: what it publishes to ``destination`` at each fire time, and its state.

    Times are unix milliseconds; ``last_schedule_states`` maps the last fire's message ids to
    ``IN_PROGRESS``, ``SUCCESS`` or ``FAIL``.
    """

    schedule_id: str
    destination: str
    cron: str
    created_at: int | None = None
    method: str = "POST"
    retries: int | None = None
    header: dict[str, list[str]] = field(default_factory=dict)
    body: str | None = None
    body_base64: str | None = None
    delay: int | None = None  # seconds
    timeout: int | None = None  # seconds
    callback: str | None = None
    failure_callback: str | None = None
    callback_header: dict[str, list[str]] = field(default_factory=dict)
    failure_callback_header: dict[str, list[str]] = field(default_factory=dict)
    retry_delay_expression: str | None = None
    queue_name: str | None = None
    caller_ip: str | None = None
    paused: bool = False
    label: str | None = None
    labels: tuple[str, ...] = ()
    flow_control_key: str | None = None
    last_schedule_time: int | None = None
    next_schedule_time: int | None = None
    last_schedule_states: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Schedule:
        """Parse leniently, as `Message.from_json`."""
        label = _str(data.get("label"))
        states = data.get("lastScheduleStates")
        return cls(
            schedule_id=_str(data.get("scheduleId")) or "",
            destination=_str(data.get("destination")) or "",
            cron=_str(data.get("cron")) or "",
            created_at=_int(data.get("createdAt")),
            method=_str(data.get("method")) or "POST",
            retries=_int(data.get("retries")),
            header=_header_map(data.get("header")),
            body=_str(data.get("body")),
            body_base64=_str(data.get("bodyBase64")),
            delay=_int(data.get("delay")),
            timeout=_int(data.get("timeout")),
            callback=_str(data.get("callback")),
            failure_callback=_str(data.get("failureCallback")),
            callback_header=_header_map(data.get("callbackHeader")),
            failure_callback_header=_header_map(data.get("failureCallbackHeader")),
            retry_delay_expression=_str(data.get("retryDelayExpression")),
            queue_name=_str(data.get("queueName")),
            caller_ip=_str(data.get("callerIP")) or _str(data.get("callerIp")),
            paused=data.get("isPaused") is True,
            label=label,
            labels=_labels(data.get("labels"), label),
            flow_control_key=_str(data.get("flowControlKey")),
            last_schedule_time=_int(data.get("lastScheduleTime")),
            next_schedule_time=_int(data.get("nextScheduleTime")),
            last_schedule_states=(
                {str(k): str(v) for k, v in states.items()} if isinstance(states, dict) else {}
            ),
            error=_str(data.get("error")),
        )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    # Timestamps have been seen as JSON strings ("1701198458025") as well as numbers.
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _labels(labels: Any, label: str | None) -> tuple[str, ...]:
    if isinstance(labels, list):
        return tuple(x for x in labels if isinstance(x, str))
    return tuple(label.split(",")) if label else ()


def _header_map(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        return {}
    return {
        str(k): [str(x) for x in v] if isinstance(v, list) else [str(v)] for k, v in value.items()
    }


def _publish_result(data: Any) -> PublishResult:
    if not isinstance(data, dict) or not isinstance(data.get("messageId"), str):
        raise RelayError(f"unexpected publish answer: {data!r:.200}")
    return PublishResult(
        message_id=data["messageId"],
        deduplicated=data.get("deduplicated") is True,
        url=_str(data.get("url")),
    )


def _publish_response(data: Any) -> PublishResponse:
    if isinstance(data, list):
        return [_publish_result(item) for item in data]
    return _publish_result(data)


def _batch_response(data: Any) -> list[PublishResponse]:
    if not isinstance(data, list):
        raise RelayError(f"unexpected batch answer: {data!r:.200}")
    return [_publish_response(item) for item in data]


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise RelayError("response is not JSON", status=response.status_code) from exc


def _json_object(response: httpx.Response) -> dict[str, Any]:
    data = _json(response)
    if not isinstance(data, dict):
        raise RelayError(f"expected a JSON object, got {data!r:.200}", status=response.status_code)
    return data


# --- requests -----------------------------------------------------------------------------------


class FlowControlOptions(TypedDict, total=False):
    """``flow_control`` of publish: a key, and the limits it sets for every message with it
    (``period``: seconds or a duration string, default 1 s; the latest message's limits win)."""

    key: Required[str]
    parallelism: int
    rate: int
    period: int | str


class PublishOptions(TypedDict, total=False):
    """Per-message options of publish, publish_json and batch items; each becomes one header.

    ``headers`` are forwarded to the destination (``Upstash-Forward-`` is added unless present);
    ``delay`` and ``timeout`` take seconds (int) or a duration string (``"5s"``, ``"2m"``);
    ``not_before`` is unix seconds; ``retry_delay`` is a millisecond expression over ``retried``.
    """

    content_type: str | None
    method: str | None
    headers: Mapping[str, str] | None
    delay: int | str | None
    not_before: int | None
    retries: int | None
    retry_delay: str | None
    callback: str | None
    failure_callback: str | None
    timeout: int | str | None
    deduplication_id: str | None
    content_based_deduplication: bool
    label: str | None
    flow_control: FlowControlOptions | None


class BatchMessage(PublishOptions, total=False):
    """One item of a batch: a destination (URL or URL-group name), a body, an optional queue.

    ``body`` is str/bytes for `Client.batch` and any JSON value for `Client.batch_json`.
    """

    destination: Required[str]
    body: Any
    queue: str | None


def _duration(value: int | str) -> str:
    # Both SDKs turn a bare number of seconds into "<n>s"; strings travel verbatim.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"expected seconds (int) or a duration string, got {value!r}")
    return f"{value}s" if isinstance(value, int) else value


_OPTION_HEADERS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "content_type": ("Content-Type", str),
    "method": ("Upstash-Method", lambda m: str(m).upper()),
    "delay": ("Upstash-Delay", _duration),
    "not_before": ("Upstash-Not-Before", lambda t: str(int(t))),
    "retries": ("Upstash-Retries", lambda n: str(int(n))),
    "retry_delay": ("Upstash-Retry-Delay", str),
    "callback": ("Upstash-Callback", str),
    "failure_callback": ("Upstash-Failure-Callback", str),
    "timeout": ("Upstash-Timeout", _duration),
    "deduplication_id": ("Upstash-Deduplication-Id", str),
    "label": ("Upstash-Label", str),
}
_OPTIONS = PublishOptions.__required_keys__ | PublishOptions.__optional_keys__
_BATCH_KEYS = BatchMessage.__required_keys__ | BatchMessage.__optional_keys__
_FORWARD = "Upstash-Forward-"


def _option_headers(options: Mapping[str, Any]) -> dict[str, str]:
    """The ``Upstash-*`` (and Content-Type) headers that carry one message's options."""
    unknown = set(options) - _OPTIONS
    if unknown:
        raise TypeError(f"unknown publish option(s): {', '.join(sorted(unknown))}")
    headers: dict[str, str] = {}
    for name, value in (options.get("headers") or {}).items():
        key = name if name.lower().startswith(_FORWARD.lower()) else _FORWARD + name
        headers[key] = str(value)
    for option, (header, render) in _OPTION_HEADERS.items():
        value = options.get(option)
        if value is not None:
            headers[header] = render(value)
    if options.get("content_based_deduplication"):
        headers["Upstash-Content-Based-Deduplication"] = "true"
    if flow := options.get("flow_control"):
        headers.update(_flow_control_headers(flow))
    return headers


def _flow_control_headers(flow: Mapping[str, Any]) -> dict[str, str]:
    parts = [f"{name}={int(flow[name])}" for name in ("parallelism", "rate") if name in flow]
    if "period" in flow:
        parts.append(f"period={_duration(flow['period'])}")
    return {"Upstash-Flow-Control-Key": flow["key"], "Upstash-Flow-Control-Value": ", ".join(parts)}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _as_bytes(body: bytes | str | None) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise TypeError(f"body must be bytes or str, got {type(body).__name__}")


def _with_json_type(options: Mapping[str, Any]) -> dict[str, Any]:
    return {**options, "content_type": options.get("content_type") or "application/json"}


@dataclass(frozen=True, slots=True)
class _Request:
    """What to send: ``target`` (path and query) is appended to the base URL as is."""

    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


def _publish_request(destination: str, body: bytes | str, options: Mapping[str, Any]) -> _Request:
    # Raw concatenation, as the SDKs do: the destination's own query string becomes the query of
    # the request target, which is where the relay (and QStash) look for it.
    return _Request("POST", "/v2/publish/" + destination, _option_headers(options), _as_bytes(body))


def _batch_request(
    messages: Iterable[BatchMessage | Mapping[str, Any]], *, as_json: bool
) -> _Request:
    items = []
    for message in messages:
        options = dict(message)
        unknown = set(options) - _BATCH_KEYS
        if unknown:
            raise TypeError(f"unknown batch message key(s): {', '.join(sorted(unknown))}")
        try:
            destination = options.pop("destination")
        except KeyError:
            raise TypeError("a batch message needs a 'destination'") from None
        body = options.pop("body", None)
        queue = options.pop("queue", None)
        if as_json:
            body, options = _dumps(body), _with_json_type(options)
        items.append(
            {
                "destination": destination,
                "headers": _option_headers(options),
                "body": _batch_body(body),
                "queue": queue,
            }
        )
    return _Request(
        "POST", "/v2/batch", {"Content-Type": "application/json"}, _dumps(items).encode()
    )


def _batch_body(body: Any) -> str | None:
    # A batch travels as JSON, so each body must be text.
    if body is None or isinstance(body, str):
        return body
    try:
        return _as_bytes(body).decode()
    except UnicodeDecodeError:
        raise ValueError("batch bodies travel as JSON text: bytes must be UTF-8") from None


def _message_path(message_id: str) -> str:
    return "/v2/messages/" + quote(message_id, safe="")


class EventFilter(TypedDict, total=False):
    """Filters of `Events.list`; a sequence matches any of its values. Dates are unix ms."""

    message_id: str
    message_ids: Sequence[str]
    state: str | Sequence[str]
    url: str | Sequence[str]
    topic_name: str
    queue_name: str
    schedule_id: str
    label: str | Sequence[str]
    host: str | Sequence[str]
    path: str | Sequence[str]
    flow_control_key: str | Sequence[str]
    caller_ip: str | Sequence[str]
    from_date: int
    to_date: int


class DlqFilter(TypedDict, total=False):
    """Filters of `Dlq.list`; a sequence matches any of its values. Dates are unix ms."""

    dlq_ids: Sequence[str]
    message_id: str
    url: str | Sequence[str]
    topic_name: str
    queue_name: str
    schedule_id: str
    label: str | Sequence[str]
    response_status: int
    from_date: int
    to_date: int


# Python names of filters → the query parameters both SDKs send.
_FILTER_PARAMS = {
    "message_id": "messageId",
    "message_ids": "messageIds",
    "dlq_ids": "dlqIds",
    "state": "state",
    "url": "url",
    "topic_name": "topicName",
    "queue_name": "queueName",
    "schedule_id": "scheduleId",
    "label": "label",
    "response_status": "responseStatus",
    "host": "host",
    "path": "path",
    "flow_control_key": "flowControlKey",
    "caller_ip": "callerIp",
    "from_date": "fromDate",
    "to_date": "toDate",
}


def _list_target(
    path: str,
    filters: Mapping[str, Any],
    allowed: frozenset[str],
    cursor: str | None,
    count: int | None,
) -> str:
    unknown = set(filters) - allowed
    if unknown:
        raise TypeError(f"unknown filter(s): {', '.join(sorted(unknown))}")
    pairs: list[tuple[str, str]] = []
    for name, value in filters.items():
        if value is None:
            continue
        values = [value] if isinstance(value, str | int) else list(value)
        pairs += [(_FILTER_PARAMS[name], str(v)) for v in values]
    if cursor:
        pairs.append(("cursor", cursor))
    if count is not None:
        pairs.append(("count", str(count)))
    return path + ("?" + urlencode(pairs) if pairs else "")


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    """One API call, for either client: what to send, and how to read the answer."""

    request: _Request
    parse: Callable[[httpx.Response], T]


def _ignore(response: httpx.Response) -> None:
    return None


def _get_message(message_id: str) -> _Call[Message]:
    request = _Request("GET", _message_path(message_id))
    return _Call(request, lambda r: Message.from_json(_json_object(r)))


def _cancel_message(message_id: str) -> _Call[None]:
    return _Call(_Request("DELETE", _message_path(message_id)), _ignore)


def _list_events(
    cursor: str | None, count: int | None, filters: Mapping[str, Any]
) -> _Call[EventsPage]:
    target = _list_target("/v2/events", filters, EventFilter.__optional_keys__, cursor, count)

    def parse(response: httpx.Response) -> EventsPage:
        data = _json_object(response)
        events = [Event.from_json(e) for e in data.get("events") or [] if isinstance(e, dict)]
        return EventsPage(events, _str(data.get("cursor")) or None)

    return _Call(_Request("GET", target), parse)


def _dlq_path(dlq_id: str) -> str:
    return "/v2/dlq/" + quote(dlq_id, safe="")


def _list_dlq(cursor: str | None, count: int | None, filters: Mapping[str, Any]) -> _Call[DlqPage]:
    target = _list_target("/v2/dlq", filters, DlqFilter.__optional_keys__, cursor, count)

    def parse(response: httpx.Response) -> DlqPage:
        data = _json_object(response)
        items = data.get("messages") or []
        messages = [DlqMessage.from_json(m) for m in items if isinstance(m, dict)]
        return DlqPage(messages, _str(data.get("cursor")) or None)

    return _Call(_Request("GET", target), parse)


def _get_dlq(dlq_id: str) -> _Call[DlqMessage]:
    return _Call(
        _Request("GET", _dlq_path(dlq_id)), lambda r: DlqMessage.from_json(_json_object(r))
    )


def _delete_dlq(dlq_id: str) -> _Call[None]:
    return _Call(_Request("DELETE", _dlq_path(dlq_id)), _ignore)


def _delete_dlq_many(dlq_ids: Iterable[str]) -> _Call[int]:
    body = _dumps({"dlqIds": list(dlq_ids)}).encode()
    request = _Request("DELETE", "/v2/dlq", {"Content-Type": "application/json"}, body)
    return _Call(request, lambda r: _int(_json_object(r).get("deleted")) or 0)


def _json_request(method: str, target: str, body: Any) -> _Request:
    return _Request(method, target, {"Content-Type": "application/json"}, _dumps(body).encode())


def _cancel_messages(message_ids: Iterable[str]) -> _Call[int]:
    request = _json_request("DELETE", "/v2/messages", {"messageIds": list(message_ids)})
    return _Call(request, lambda r: _int(_json_object(r).get("cancelled")) or 0)


def _retry_dlq(dlq_ids: Iterable[str]) -> _Call[list[str]]:
    def parse(response: httpx.Response) -> list[str]:
        answers = _json_object(response).get("responses") or []
        return [a["messageId"] for a in answers if isinstance(a, dict) and "messageId" in a]

    return _Call(_json_request("POST", "/v2/dlq/retry", {"dlqIds": list(dlq_ids)}), parse)


def _keys(method: str, target: str) -> _Call[SigningKeys]:
    def parse(response: httpx.Response) -> SigningKeys:
        data = _json_object(response)
        current, following = _str(data.get("current")), _str(data.get("next"))
        if current is None or following is None:
            raise RelayError(f"unexpected keys answer: {data!r:.200}")
        return SigningKeys(current, following)

    return _Call(_Request(method, target), parse)


def _group_path(name: str, rest: str = "") -> str:
    return "/v2/topics/" + quote(name, safe="") + rest


def _upsert_endpoints(name: str, endpoints: Iterable[Endpoint | str]) -> _Call[None]:
    items = [(Endpoint(e) if isinstance(e, str) else e).to_json() for e in endpoints]
    request = _json_request("POST", _group_path(name, "/endpoints"), {"endpoints": items})
    return _Call(request, _ignore)


def _remove_endpoints(name: str, urls: Iterable[str], names: Iterable[str]) -> _Call[None]:
    items = [{"url": u} for u in urls] + [{"name": n} for n in names]
    request = _json_request("DELETE", _group_path(name, "/endpoints"), {"endpoints": items})
    return _Call(request, _ignore)


def _get_url_group(name: str) -> _Call[UrlGroup]:
    return _Call(_Request("GET", _group_path(name)), lambda r: UrlGroup.from_json(_json_object(r)))


def _list_url_groups() -> _Call[list[UrlGroup]]:
    def parse(response: httpx.Response) -> list[UrlGroup]:
        data = _json(response)
        if not isinstance(data, list):
            raise RelayError(f"expected a JSON array, got {data!r:.200}")
        return [UrlGroup.from_json(g) for g in data if isinstance(g, dict)]

    return _Call(_Request("GET", "/v2/topics"), parse)


def _delete_url_group(name: str) -> _Call[None]:
    return _Call(_Request("DELETE", _group_path(name)), _ignore)


class ScheduleOptions(TypedDict, total=False):
    """Options of `Schedules.create`: those of publish that apply to each fire's message, the
    schedule's own id (create or replace) and the queue its messages go to."""

    content_type: str | None
    method: str | None
    headers: Mapping[str, str] | None
    delay: int | str | None
    retries: int | None
    retry_delay: str | None
    callback: str | None
    failure_callback: str | None
    timeout: int | str | None
    label: str | None
    schedule_id: str | None
    queue: str | None


def _schedule_path(schedule_id: str, rest: str = "") -> str:
    return "/v2/schedules/" + quote(schedule_id, safe="") + rest


def _create_schedule(
    destination: str, cron: str, body: bytes | str, options: Mapping[str, Any]
) -> _Call[str]:
    options = dict(options)
    schedule_id, queue = options.pop("schedule_id", None), options.pop("queue", None)
    headers = {**_option_headers(options), "Upstash-Cron": cron}
    if schedule_id is not None:
        headers["Upstash-Schedule-Id"] = schedule_id
    if queue is not None:
        headers["Upstash-Queue-Name"] = queue
    # The destination goes into the path raw, as for publish.
    request = _Request("POST", "/v2/schedules/" + destination, headers, _as_bytes(body))

    def parse(response: httpx.Response) -> str:
        schedule_id = _json_object(response).get("scheduleId")
        if not isinstance(schedule_id, str):
            raise RelayError("unexpected schedule answer: no scheduleId")
        return schedule_id

    return _Call(request, parse)


def _get_schedule(schedule_id: str) -> _Call[Schedule]:
    request = _Request("GET", _schedule_path(schedule_id))
    return _Call(request, lambda r: Schedule.from_json(_json_object(r)))


def _list_schedules() -> _Call[list[Schedule]]:
    def parse(response: httpx.Response) -> list[Schedule]:
        data = _json(response)
        if not isinstance(data, list):
            raise RelayError(f"expected a JSON array, got {data!r:.200}")
        return [Schedule.from_json(s) for s in data if isinstance(s, dict)]

    return _Call(_Request("GET", "/v2/schedules"), parse)


def _schedule_call(method: str, schedule_id: str, rest: str = "") -> _Call[None]:
    return _Call(_Request(method, _schedule_path(schedule_id, rest)), _ignore)


# --- queues and flow control -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Queue:
    """A FIFO queue: ``parallelism`` messages delivered at a time; ``lag`` counts its messages
    not finished yet. Times are unix milliseconds."""

    name: str
    parallelism: int = 1
    paused: bool = False
    lag: int = 0
    created_at: int | None = None
    updated_at: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Queue:
        """Parse leniently, as `Message.from_json`."""
        return cls(
            name=_str(data.get("name")) or "",
            parallelism=_int(data.get("parallelism")) or 1,
            paused=data.get("paused") is True,
            lag=_int(data.get("lag")) or 0,
            created_at=_int(data.get("createdAt")),
            updated_at=_int(data.get("updatedAt")),
        )


@dataclass(frozen=True, slots=True)
class FlowControlInfo:
    """A flow-control key: its limits (0: none), calls under way, tokens spent in the rate
    window (``rate_period`` seconds, started at ``rate_period_start``, unix seconds), messages
    waiting, and whether it is paused or has pinned limits."""

    key: str
    wait_list_size: int = 0
    parallelism_max: int = 0
    parallelism_count: int = 0
    rate_max: int = 0
    rate_count: int = 0
    rate_period: int = 0
    rate_period_start: int = 0
    is_paused: bool = False
    is_pinned_parallelism: bool = False
    is_pinned_rate: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FlowControlInfo:
        """Parse leniently, as `Message.from_json`."""
        return cls(
            key=_str(data.get("flowControlKey")) or "",
            **{
                name: _int(data.get(wire)) or 0
                for name, wire in (
                    ("wait_list_size", "waitListSize"),
                    ("parallelism_max", "parallelismMax"),
                    ("parallelism_count", "parallelismCount"),
                    ("rate_max", "rateMax"),
                    ("rate_count", "rateCount"),
                    ("rate_period", "ratePeriod"),
                    ("rate_period_start", "ratePeriodStart"),
                )
            },
            is_paused=data.get("isPaused") is True,
            is_pinned_parallelism=data.get("isPinnedParallelism") is True,
            is_pinned_rate=data.get("isPinnedRate") is True,
        )


@dataclass(frozen=True, slots=True)
class GlobalParallelism:
    """Calls under way over all keys, and how many may run at once."""

    parallelism_max: int
    parallelism_count: int


def _queue_path(name: str, rest: str = "") -> str:
    return "/v2/queues/" + quote(name, safe="") + rest


def _enqueue_request(
    queue: str, destination: str, body: bytes | str, options: Mapping[str, Any]
) -> _Call[PublishResponse]:
    # As publish: the destination goes into the path raw.
    target = "/v2/enqueue/" + quote(queue, safe="") + "/" + destination
    request = _Request("POST", target, _option_headers(options), _as_bytes(body))
    return _Call(request, lambda r: _publish_response(_json(r)))


def _upsert_queue(name: str, parallelism: int | None, paused: bool | None) -> _Call[None]:
    body: dict[str, Any] = {"queueName": name}
    if parallelism is not None:
        body["parallelism"] = parallelism
    if paused is not None:
        body["paused"] = paused
    return _Call(_json_request("POST", "/v2/queues", body), _ignore)


def _get_queue(name: str) -> _Call[Queue]:
    return _Call(_Request("GET", _queue_path(name)), lambda r: Queue.from_json(_json_object(r)))


def _list_of(target: str, parse: Callable[[Mapping[str, Any]], T]) -> _Call[list[T]]:
    def parse_list(response: httpx.Response) -> list[T]:
        data = _json(response)
        if not isinstance(data, list):
            raise RelayError(f"expected a JSON array, got {data!r:.200}")
        return [parse(item) for item in data if isinstance(item, dict)]

    return _Call(_Request("GET", target), parse_list)


def _flow_path(key: str, rest: str = "", params: Mapping[str, str] | None = None) -> str:
    query = "?" + urlencode(params) if params else ""
    return "/v2/flowControl/" + quote(key, safe="") + rest + query


def _get_flow_control(key: str) -> _Call[FlowControlInfo]:
    request = _Request("GET", _flow_path(key))
    return _Call(request, lambda r: FlowControlInfo.from_json(_json_object(r)))


def _global_parallelism() -> _Call[GlobalParallelism]:
    def parse(response: httpx.Response) -> GlobalParallelism:
        data = _json_object(response)
        return GlobalParallelism(
            _int(data.get("parallelismMax")) or 0, _int(data.get("parallelismCount")) or 0
        )

    return _Call(_Request("GET", "/v2/globalParallelism"), parse)


def _pin_params(
    parallelism: int | None, rate: int | None, period: int | str | None
) -> dict[str, str]:
    params = {}
    for name, value in (("parallelism", parallelism), ("rate", rate)):
        if value is not None:
            params[name] = str(int(value))
    if period is not None:
        params["period"] = _duration(period)
    return params


def _flow_call(method: str, target: str) -> _Call[None]:
    return _Call(_Request(method, target), _ignore)


# --- senders ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Settings:
    base_url: str
    token: str | None
    retries: int
    backoff: float

    @classmethod
    def resolve(
        cls, base_url: str | None, token: str | None, retries: int, backoff: float
    ) -> _Settings:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        url = base_url or os.environ.get("QSTASH_URL") or DEFAULT_BASE_URL
        token = token if token is not None else os.environ.get("QSTASH_TOKEN") or None
        return cls(url.rstrip("/"), token, retries, backoff)

    def url(self, request: _Request) -> str:
        return self.base_url + request.target

    def headers(self, request: _Request) -> dict[str, str]:
        if self.token is None:
            return request.headers
        return {"Authorization": f"Bearer {self.token}", **request.headers}

    def pause_before_retry(self, error: RelayError, attempt: int) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None to give up."""
        if attempt >= self.retries or not isinstance(error, _RETRYABLE):
            return None
        return float(self.backoff * 2**attempt)


def _checked(response: httpx.Response) -> httpx.Response:
    if not response.is_success:
        raise _error_for(response)
    return response


class _Run(Protocol):
    def __call__(self, call: _Call[T], /) -> T: ...


class _AsyncRun(Protocol):
    def __call__(self, call: _Call[T], /) -> Awaitable[T]: ...


class Messages:
    """``client.messages``: look up and cancel single messages."""

    def __init__(self, run: _Run) -> None:
        self._run = run

    def get(self, message_id: str) -> Message:
        """Fetch a message that is still waiting or being delivered (`NotFound` otherwise)."""
        return self._run(_get_message(message_id))

    def cancel(self, message_id: str) -> None:
        """Stop a message from being delivered; one already in flight may still arrive."""
        self._run(_cancel_message(message_id))

    def cancel_many(self, message_ids: Iterable[str]) -> int:
        """Cancel several messages; returns how many were still cancellable."""
        return self._run(_cancel_messages(message_ids))


class AsyncMessages:
    """``client.messages`` of `AsyncClient`."""

    def __init__(self, run: _AsyncRun) -> None:
        self._run = run

    async def get(self, message_id: str) -> Message:
        """Fetch a message that is still waiting or being delivered (`NotFound` otherwise)."""
        return await self._run(_get_message(message_id))

    async def cancel(self, message_id: str) -> None:
        """Stop a message from being delivered; one already in flight may still arrive."""
        await self._run(_cancel_message(message_id))

    async def cancel_many(self, message_ids: Iterable[str]) -> int:
        """Cancel several messages; returns how many were still cancellable."""
        return await self._run(_cancel_messages(message_ids))


class Events:
    """``client.events``: the logs, one event per state a message reached."""

    def __init__(self, run: _Run) -> None:
        self._run = run

    def list(
        self,
        *,
        cursor: str | None = None,
        count: int | None = None,
        **filters: Unpack[EventFilter],
    ) -> EventsPage:
        """One page of events, newest first, matching every filter given."""
        return self._run(_list_events(cursor, count, filters))


class AsyncEvents:
    """``client.events`` of `AsyncClient`."""

    def __init__(self, run: _AsyncRun) -> None:
        self._run = run

    async def list(
        self,
        *,
        cursor: str | None = None,
        count: int | None = None,
        **filters: Unpack[EventFilter],
    ) -> EventsPage:
        """One page of events, newest first, matching every filter given."""
        return await self._run(_list_events(cursor, count, filters))


class Dlq:
    """``client.dlq``: the messages whose retries ran out (or that failed as non-retryable)."""

    def __init__(self, run: _Run) -> None:
        self._run = run

    def list(
        self, *, cursor: str | None = None, count: int | None = None, **filters: Unpack[DlqFilter]
    ) -> DlqPage:
        """One page of DLQ messages, newest first, matching every filter given."""
        return self._run(_list_dlq(cursor, count, filters))

    def get(self, dlq_id: str) -> DlqMessage:
        """One DLQ message by its ``dlq_id`` (`NotFound` if there is none)."""
        return self._run(_get_dlq(dlq_id))

    def delete(self, dlq_id: str) -> None:
        """Remove one message from the DLQ (`NotFound` if there is none)."""
        self._run(_delete_dlq(dlq_id))

    def delete_many(self, dlq_ids: Iterable[str]) -> int:
        """Remove several messages from the DLQ; returns how many there were."""
        return self._run(_delete_dlq_many(dlq_ids))

    def retry(self, dlq_ids: Iterable[str]) -> builtins.list[str]:
        """Publish DLQ messages again (and take them out of the DLQ); the new message ids."""
        return self._run(_retry_dlq(dlq_ids))


class AsyncDlq:
    """``client.dlq`` of `AsyncClient`."""

    def __init__(self, run: _AsyncRun) -> None:
        self._run = run

    async def list(
        self, *, cursor: str | None = None, count: int | None = None, **filters: Unpack[DlqFilter]
    ) -> DlqPage:
        """One page of DLQ messages, newest first, matching every filter given."""
        return await self._run(_list_dlq(cursor, count, filters))

    async def get(self, dlq_id: str) -> DlqMessage:
        """One DLQ message by its ``dlq_id`` (`NotFound` if there is none)."""
        return await self._run(_get_dlq(dlq_id))

    async def delete(self, dlq_id: str) -> None:
        """Remove one message from the DLQ (`NotFound` if there is none)."""
        await self._run(_delete_dlq(dlq_id))

    async def delete_many(self, dlq_ids: Iterable[str]) -> int:
        """Remove several messages from the DLQ; returns how many there were."""
        return await self._run(_delete_dlq_many(dlq_ids))

    async def retry(self, dlq_ids: Iterable[str]) -> builtins.list[str]:
        """Publish DLQ messages again (and take them out of the DLQ); the new message ids."""
        return await self._run(_retry_dlq(dlq_ids))


class Keys:
    """``client.keys``: the signing keys receivers verify deliveries with."""

    def __init__(self, run: _Run) -> None:
        self._run = run

    def get(self) -> SigningKeys:
        """The current and the next signing key."""
        return self._run(_keys("GET", "/v2/keys"))

    def rotate(self) -> SigningKeys:
        """Promote the next key to current and make a new next; returns the new pair."""
        return self._run(_keys("POST", "/v2/keys/rotate"))


class UrlGroups:
    """``client.url_groups``: named sets of endpoints that a publish fans out to."""

    def __init__(self, run: _Run) -> None:
        self._run = run

    def upsert_endpoints(self, name: str, endpoints: Iterable[Endpoint | str]) -> None:
        """Add endpoints (URLs, or `Endpoint` with a name); the group is made if missing."""
        self._run(_upsert_endpoints(name, endpoints))

    def remove_endpoints(
        self, name: str, *, urls: Iterable[str] = (), names: Iterable[str] = ()
    ) -> None:
        """Remove endpoints by URL or by name; a group left empty is deleted."""
        self._run(_remove_endpoints(name, urls, names))

    def get(self, name: str) -> UrlGroup:
        """One group (`NotFound` if there is none)."""
        return self._run(_get_url_group(name))

    def list(self) -> builtins.list[UrlGroup]:
        """Every group."""
        return self._run(_list_url_groups())

    def delete(self, name: str) -> None:
        """Delete a group (`NotFound` if there is none)."""
        self._run(_delete_url_group(name))


class AsyncKeys:
    """``client.keys`` of `AsyncClient`."""

    def __init__(self, run: _AsyncRun) -> None:
        self._run = run

    async def get(self) -> SigningKeys:
        """The current and the next signing key."""
        return await self._run(_keys("GET", "/v2/keys"))

    async def rotate(self) -> SigningKeys:
        """Promote the next key to current and make a new next; returns the new pair."""
        return await self._run(_keys("POST", "/v2/keys/rotate"))


class AsyncUrlGroups:
    """``client.url_groups`` of `AsyncClient`."""

    def __init__(self, run: _AsyncRun) -> None:
        self._run = run

    async def upsert_endpoints(self, name: str, endpoints: Iterable[Endpoint | str]) -> None:
        """Add endpoints (URLs, or `Endpoint` with a name); the group is made if missing."""
        await self._run(_upsert_endpoints(name, endpoints))

    async def remove_endpoints(
        self, name: str, *, urls: Iterable[str] = (), names: Iterable[str] = ()
    ) -> None:
        """Remove endpoints by URL or by name; a group left empty is deleted."""
        await self._run(_remove_endpoints(name, urls, names))

    async def get(self, name: str) -> UrlGroup:
        """One group (`NotFound` if there is none)."""
        return await self._run(_get_url_group(name))

    async def list(self) -> builtins.list[UrlGroup]:
        """Every group."""
        return await self._run(_list_url_groups())

    async def delete(self, name: str) -> None:
        """Delete a group (`NotFound` if there is none)."""
        await self._run(_delete_url_group(name))


class Schedules:
    """``client.schedules``: cron schedules that publish a message at each fire time."""

    def __init__(self, run: _Run) -> None:
        self._run = run

    def create(
        self,
        destination: str,
        cron: str,
        body: bytes | str = b"",
        **options: Unpack[ScheduleOptions],
    ) -> str:
        """Publish to a URL or URL group on ``cron`` (five fields, UTC unless prefixed with
        ``CRON_TZ=<zone> ``); ``schedule_id`` replaces that schedule. Returns the schedule id."""
        return self._run(_create_schedule(destination, cron, body, options))

    def create_json(
        self, destination: str, cron: str, body: Any, **options: Unpack[ScheduleOptions]
    ) -> str:
        """`create` with ``body`` sent as compact JSON and ``Content-Type: application/json``."""
        return self._run(
            _create_schedule(destination, cron, _dumps(body), _with_json_type(options))
        )

    def get(self, schedule_id: str) -> Schedule:
        """One schedule (`NotFound` if there is none)."""
        return self._run(_get_schedule(schedule_id))

    def list(self) -> builtins.list[Schedule]:
        """Every schedule."""
        return self._run(_list_schedules())

    def delete(self, schedule_id: str) -> None:
        """Delete a schedule (`NotFound` if there is none)."""
        self._run(_schedule_call("DELETE", schedule_id))

    def pause(self, schedule_id: str) -> None:
        """Stop firing until resumed."""
        self._run(_schedule_call("PATCH", schedule_id, "/pause"))

    def resume(self, schedule_id: str) -> None:
        """Fire again from now on (fire times missed while paused are skipped)."""
        self._run(_schedule_call("PATCH", schedule_id, "/resume"))


class AsyncSchedules:
    """``client.schedules`` of `AsyncClient`."""

    def __init__(self, run: _AsyncRun) -> None:
        self._run = run

    async def create(
        self,
        destination: str,
        cron: str,
        body: bytes | str = b"",
        **options: Unpack[ScheduleOptions],
    ) -> str:
        """Publish to a URL or URL group on ``cron`` (five fields, UTC unless prefixed with
        ``CRON_TZ=<zone> ``); ``schedule_id`` replaces that schedule. Returns the schedule id."""
        return await self._run(_create_schedule(destination, cron, body, options))

    async def create_json(
        self, destination: str, cron: str, body: Any, **options: Unpack[ScheduleOptions]
    ) -> str:
        """`create` with ``body`` sent as compact JSON and ``Content-Type: application/json``."""
        request = _create_schedule(destination, cron, _dumps(body), _with_json_type(options))
        return await self._run(request)

    async def get(self, schedule_id: str) -> Schedule:
        """One schedule (`NotFound` if there is none)."""
        return await self._run(_get_schedule(schedule_id))

    async def list(self) -> builtins.list[Schedule]:
        """Every schedule."""
        return await self._run(_list_schedules())

    async def delete(self, schedule_id: str) -> None:
        """Delete a schedule (`NotFound` if there is none)."""
        await self._run(_schedule_call("DELETE", schedule_id))

    async def pause(self, schedule_id: str) -> None:
        """Stop firing until resumed."""
        await self._run(_schedule_call("PATCH", schedule_id, "/pause"))

    async def resume(self, schedule_id: str) -> None:
        """Fire again from now on (fire times missed while paused are skipped)."""
        await self._run(_schedule_call("PATCH", schedule_id, "/resume"))


class Queues:
    """``client.queues``: FIFO queues; a message waits for the one before it (with parallelism
    1) until that one is delivered or failed, its retries and callbacks included."""

    def __init__(self, run: _Run) -> None:
        self._run = run

    def enqueue(
        self, queue: str, url: str, body: bytes | str = b"", **options: Unpack[PublishOptions]
    ) -> PublishResponse:
        """Publish to the end of ``queue`` (created with parallelism 1 if missing)."""
        return self._run(_enqueue_request(queue, url, body, options))

    def enqueue_json(
        self, queue: str, url: str, body: Any, **options: Unpack[PublishOptions]
    ) -> PublishResponse:
        """`enqueue` with ``body`` sent as compact JSON and ``Content-Type: application/json``."""
        return self._run(_enqueue_request(queue, url, _dumps(body), _with_json_type(options)))

    def upsert(
        self, name: str, *, parallelism: int | None = None, paused: bool | None = None
    ) -> None:
        """Create or update a queue; what is not given keeps its value (defaults 1, running)."""
        self._run(_upsert_queue(name, parallelism, paused))

    def get(self, name: str) -> Queue:
        """One queue (`NotFound` if there is none)."""
        return self._run(_get_queue(name))

    def list(self) -> builtins.list[Queue]:
        """Every queue."""
        return self._run(_list_of("/v2/queues", Queue.from_json))

    def delete(self, name: str) -> None:
        """Delete a queue; its messages are still delivered, one at a time."""
        self._run(_flow_call("DELETE", _queue_path(name)))

    def pause(self, name: str) -> None:
        """Keep accepting messages, start none until resumed."""
        self._run(_flow_call("POST", _queue_path(name, "/pause")))

    def resume(self, name: str) -> None:
        self._run(_flow_call("POST", _queue_path(name, "/resume")))


class AsyncQueues:
    """``client.queues`` of `AsyncClient`."""

    def __init__(self, run: _AsyncRun) -> None:
        self._run = run

    async def enqueue(
        self, queue: str, url: str, body: bytes | str = b"", **options: Unpack[PublishOptions]
    ) -> PublishResponse:
        """Publish to the end of ``queue`` (created with parallelism 1 if missing)."""
        return await self._run(_enqueue_request(queue, url, body, options))

    async def enqueue_json(
        self, queue: str, url: str, body: Any, **options: Unpack[PublishOptions]
    ) -> PublishResponse:
        """`enqueue` with ``body`` sent as compact JSON and ``Content-Type: application/json``."""
        request = _enqueue_request(queue, url, _dumps(body), _with_json_type(options))
        return await self._run(request)

    async def upsert(
        self, name: str, *, parallelism: int | None = None, paused: bool | None = None
    ) -> None:
        """Create or update a queue; what is not given keeps its value (defaults 1, running)."""
        await self._run(_upsert_queue(name, parallelism, paused))

    async def get(self, name: str) -> Queue:
        """One queue (`NotFound` if there is none)."""
        return await self._run(_get_queue(name))

    async def list(self) -> builtins.list[Queue]:
        """Every queue."""
        return await self._run(_list_of("/v2/queues", Queue.from_json))

    async def delete(self, name: str) -> None:
        """Delete a queue; its messages are still delivered, one at a time."""
        await self._run(_flow_call("DELETE", _queue_path(name)))

    async def pause(self, name: str) -> None:
        """Keep accepting messages, start none until resumed."""
        await self._run(_flow_call("POST", _queue_path(name, "/pause")))

    async def resume(self, name: str) -> None:
        await self._run(_flow_call("POST", _queue_path(name, "/resume")))


class FlowControl:
    """``client.flow_control``: the keys that limit calls (publish with ``flow_control=``)."""

    def __init__(self, run: _Run) -> None:
        self._run = run

    def get(self, key: str) -> FlowControlInfo:
        """One key (`NotFound` if no message or call has named it yet)."""
        return self._run(_get_flow_control(key))

    def list(self, search: str | None = None) -> builtins.list[FlowControlInfo]:
        """Every key, or those whose name contains ``search``."""
        target = "/v2/flowControl" + ("?" + urlencode({"search": search}) if search else "")
        return self._run(_list_of(target, FlowControlInfo.from_json))

    def global_parallelism(self) -> GlobalParallelism:
        return self._run(_global_parallelism())

    def pause(self, key: str) -> None:
        """Its messages wait (new ones too) until resumed."""
        self._run(_flow_call("POST", _flow_path(key, "/pause")))

    def resume(self, key: str) -> None:
        self._run(_flow_call("POST", _flow_path(key, "/resume")))

    def pin(
        self,
        key: str,
        *,
        parallelism: int | None = None,
        rate: int | None = None,
        period: int | str | None = None,
    ) -> None:
        """Fix limits: later messages' values no longer change what is pinned."""
        self._run(
            _flow_call("POST", _flow_path(key, "/pin", _pin_params(parallelism, rate, period)))
        )

    def unpin(self, key: str, *, parallelism: bool = False, rate: bool = False) -> None:
        """Let the next message's values apply again (neither given: both)."""
        params = {"parallelism": str(parallelism).lower(), "rate": str(rate).lower()}
        self._run(
            _flow_call("POST", _flow_path(key, "/unpin", params if parallelism or rate else None))
        )

    def reset_rate(self, key: str) -> None:
        """Start a new rate window now, with no tokens spent."""
        self._run(_flow_call("POST", _flow_path(key, "/resetRate")))


class AsyncFlowControl:
    """``client.flow_control`` of `AsyncClient`."""

    def __init__(self, run: _AsyncRun) -> None:
        self._run = run

    async def get(self, key: str) -> FlowControlInfo:
        """One key (`NotFound` if no message or call has named it yet)."""
        return await self._run(_get_flow_control(key))

    async def list(self, search: str | None = None) -> builtins.list[FlowControlInfo]:
        """Every key, or those whose name contains ``search``."""
        target = "/v2/flowControl" + ("?" + urlencode({"search": search}) if search else "")
        return await self._run(_list_of(target, FlowControlInfo.from_json))

    async def global_parallelism(self) -> GlobalParallelism:
        return await self._run(_global_parallelism())

    async def pause(self, key: str) -> None:
        """Its messages wait (new ones too) until resumed."""
        await self._run(_flow_call("POST", _flow_path(key, "/pause")))

    async def resume(self, key: str) -> None:
        await self._run(_flow_call("POST", _flow_path(key, "/resume")))

    async def pin(
        self,
        key: str,
        *,
        parallelism: int | None = None,
        rate: int | None = None,
        period: int | str | None = None,
    ) -> None:
        """Fix limits: later messages' values no longer change what is pinned."""
        target = _flow_path(key, "/pin", _pin_params(parallelism, rate, period))
        await self._run(_flow_call("POST", target))

    async def unpin(self, key: str, *, parallelism: bool = False, rate: bool = False) -> None:
        """Let the next message's values apply again (neither given: both)."""
        params = {"parallelism": str(parallelism).lower(), "rate": str(rate).lower()}
        target = _flow_path(key, "/unpin", params if parallelism or rate else None)
        await self._run(_flow_call("POST", target))

    async def reset_rate(self, key: str) -> None:
        """Start a new rate window now, with no tokens spent."""
        await self._run(_flow_call("POST", _flow_path(key, "/resetRate")))


class Client:
    """Blocking client for a relay (or QStash) v2 API.

    ``base_url`` and ``token`` default to env ``QSTASH_URL`` / ``QSTASH_TOKEN``. 429, 5xx and
    network errors are retried ``retries`` times, waiting ``backoff`` seconds, then twice as long
    each time. Pass ``http`` to reuse an ``httpx.Client`` (it is then not closed by `close`).
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        retries: int = 3,
        backoff: float = 0.1,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self._settings = _Settings.resolve(base_url, token, retries, backoff)
        self._http = http or httpx.Client(timeout=timeout)
        self._owns_http = http is None
        self.messages = Messages(self._run)
        self.events = Events(self._run)
        self.dlq = Dlq(self._run)
        self.keys = Keys(self._run)
        self.url_groups = UrlGroups(self._run)
        self.schedules = Schedules(self._run)
        self.queues = Queues(self._run)
        self.flow_control = FlowControl(self._run)

    def publish(
        self, url: str, body: bytes | str = b"", **options: Unpack[PublishOptions]
    ) -> PublishResponse:
        """Publish one message to a URL or URL group (``POST /v2/publish/{url}``)."""
        return _publish_response(_json(self._send(_publish_request(url, body, options))))

    def publish_json(
        self, url: str, body: Any, **options: Unpack[PublishOptions]
    ) -> PublishResponse:
        """`publish` with ``body`` sent as compact JSON and ``Content-Type: application/json``."""
        request = _publish_request(url, _dumps(body), _with_json_type(options))
        return _publish_response(_json(self._send(request)))

    def batch(self, messages: Iterable[BatchMessage | Mapping[str, Any]]) -> list[PublishResponse]:
        """Publish several messages in one call; one answer per message, in order."""
        return _batch_response(_json(self._send(_batch_request(messages, as_json=False))))

    def batch_json(
        self, messages: Iterable[BatchMessage | Mapping[str, Any]]
    ) -> list[PublishResponse]:
        """`batch` with each body sent as JSON and ``Content-Type: application/json``."""
        return _batch_response(_json(self._send(_batch_request(messages, as_json=True))))

    def close(self) -> None:
        """Close the underlying ``httpx.Client`` if this client created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, call: _Call[T]) -> T:
        return call.parse(self._send(call.request))

    def _send(self, request: _Request) -> httpx.Response:
        attempt = 0
        while True:
            try:
                with _transport_errors():
                    response = self._http.request(
                        request.method,
                        self._settings.url(request),
                        headers=self._settings.headers(request),
                        content=request.body,
                    )
                return _checked(response)
            except RelayError as error:
                pause = self._settings.pause_before_retry(error, attempt)
                if pause is None:
                    raise
            time.sleep(pause)
            attempt += 1


class AsyncClient:
    """asyncio twin of `Client`, over ``httpx.AsyncClient``; same arguments, awaitable methods."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        retries: int = 3,
        backoff: float = 0.1,
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._settings = _Settings.resolve(base_url, token, retries, backoff)
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._owns_http = http is None
        self.messages = AsyncMessages(self._run)
        self.events = AsyncEvents(self._run)
        self.dlq = AsyncDlq(self._run)
        self.keys = AsyncKeys(self._run)
        self.url_groups = AsyncUrlGroups(self._run)
        self.schedules = AsyncSchedules(self._run)
        self.queues = AsyncQueues(self._run)
        self.flow_control = AsyncFlowControl(self._run)

    async def publish(
        self, url: str, body: bytes | str = b"", **options: Unpack[PublishOptions]
    ) -> PublishResponse:
        """Publish one message to a URL or URL group (``POST /v2/publish/{url}``)."""
        return _publish_response(_json(await self._send(_publish_request(url, body, options))))

    async def publish_json(
        self, url: str, body: Any, **options: Unpack[PublishOptions]
    ) -> PublishResponse:
        """`publish` with ``body`` sent as compact JSON and ``Content-Type: application/json``."""
        request = _publish_request(url, _dumps(body), _with_json_type(options))
        return _publish_response(_json(await self._send(request)))

    async def batch(
        self, messages: Iterable[BatchMessage | Mapping[str, Any]]
    ) -> list[PublishResponse]:
        """Publish several messages in one call; one answer per message, in order."""
        return _batch_response(_json(await self._send(_batch_request(messages, as_json=False))))

    async def batch_json(
        self, messages: Iterable[BatchMessage | Mapping[str, Any]]
    ) -> list[PublishResponse]:
        """`batch` with each body sent as JSON and ``Content-Type: application/json``."""
        return _batch_response(_json(await self._send(_batch_request(messages, as_json=True))))

    async def aclose(self) -> None:
        """Close the underlying ``httpx.AsyncClient`` if this client created it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _run(self, call: _Call[T]) -> T:
        return call.parse(await self._send(call.request))

    async def _send(self, request: _Request) -> httpx.Response:
        attempt = 0
        while True:
            try:
                with _transport_errors():
                    response = await self._http.request(
                        request.method,
                        self._settings.url(request),
                        headers=self._settings.headers(request),
                        content=request.body,
                    )
                return _checked(response)
            except RelayError as error:
                pause = self._settings.pause_before_retry(error, attempt)
                if pause is None:
                    raise
            await asyncio.sleep(pause)
            attempt += 1
