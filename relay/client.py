"""Client for the relay's QStash v2 API, blocking (`Client`) and asyncio (`AsyncClient`).

Both clients share one set of request builders and response parsers; each only sends. The wire
format is the official SDKs' (reference §2): the destination goes into the path raw, options
become ``Upstash-*`` headers, and a batch is a JSON array of ``{destination, headers, body,
queue}`` objects.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Required, TypedDict, Unpack
from urllib.parse import quote

import httpx

__all__ = [
    "DEFAULT_BASE_URL",
    "AsyncClient",
    "AsyncMessages",
    "AuthError",
    "BadRequest",
    "BatchMessage",
    "Client",
    "Message",
    "Messages",
    "NotFound",
    "PublishOptions",
    "PublishResponse",
    "PublishResult",
    "RateLimited",
    "RelayError",
    "ServerError",
    "TransportError",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8080"


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

    @property
    def body_bytes(self) -> bytes | None:
        """The body as bytes, from ``body`` (UTF-8 text) or ``bodyBase64``; None if neither."""
        if self.body is not None:
            return self.body.encode()
        return base64.b64decode(self.body_base64) if self.body_base64 is not None else None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Message:
        """Parse leniently: unknown fields are ignored, wrongly typed ones read as absent."""
        label = _str(data.get("label"))
        return cls(
            message_id=_str(data.get("messageId")) or "",
            url=_str(data.get("url")) or "",
            method=_str(data.get("method")) or "POST",
            max_retries=_int(data.get("maxRetries")),
            not_before=_int(data.get("notBefore")),
            created_at=_int(data.get("createdAt")),
            topic_name=_str(data.get("topicName")),
            endpoint_name=_str(data.get("endpointName")),
            queue_name=_str(data.get("queueName")),
            header=_header_map(data.get("header")),
            body=_str(data.get("body")),
            body_base64=_str(data.get("bodyBase64")),
            callback=_str(data.get("callback")),
            failure_callback=_str(data.get("failureCallback")),
            callback_header=_header_map(data.get("callbackHeader")),
            failure_callback_header=_header_map(data.get("failureCallbackHeader")),
            schedule_id=_str(data.get("scheduleId")),
            caller_ip=_str(data.get("callerIP")) or _str(data.get("callerIp")),
            flow_control_key=_str(data.get("flowControlKey")),
            parallelism=_int(data.get("parallelism")),
            rate=_int(data.get("rate")),
            period=_int(data.get("period")),
            retry_delay_expression=_str(data.get("retryDelayExpression")),
            label=label,
            labels=_labels(data.get("labels"), label),
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


# --- requests -----------------------------------------------------------------------------------


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
    return headers


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


class Messages:
    """``client.messages``: look up and cancel single messages."""

    def __init__(self, send: Callable[[_Request], httpx.Response]) -> None:
        self._send = send

    def get(self, message_id: str) -> Message:
        """Fetch a message that is still waiting or being delivered (`NotFound` otherwise)."""
        return Message.from_json(_json(self._send(_Request("GET", _message_path(message_id)))))

    def cancel(self, message_id: str) -> None:
        """Stop a message from being delivered; one already in flight may still arrive."""
        self._send(_Request("DELETE", _message_path(message_id)))


class AsyncMessages:
    """``client.messages`` of `AsyncClient`."""

    def __init__(self, send: Callable[[_Request], Awaitable[httpx.Response]]) -> None:
        self._send = send

    async def get(self, message_id: str) -> Message:
        """Fetch a message that is still waiting or being delivered (`NotFound` otherwise)."""
        response = await self._send(_Request("GET", _message_path(message_id)))
        return Message.from_json(_json(response))

    async def cancel(self, message_id: str) -> None:
        """Stop a message from being delivered; one already in flight may still arrive."""
        await self._send(_Request("DELETE", _message_path(message_id)))


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
        self.messages = Messages(self._send)

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
        self.messages = AsyncMessages(self._send)

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
