"""What every framework adapter does, once: decide the URL the relay signed, verify the raw body,
parse it (into a pydantic model when asked), and turn a handler's `RetryLater` or `NonRetryable`
into the answer the relay understands. An adapter only reads its framework's request and writes
a `Reply` out as its framework's response."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypedDict, TypeVar

from pydantic import BaseModel, ValidationError

from relay.protocol import D_NON_RETRYABLE, D_RETRIED, NON_RETRYABLE_STATUS
from relay.receiver.verifier import Headers, Receiver, Verified
from relay.signing import SignatureError

__all__ = [
    "Delivery",
    "GuardOptions",
    "HandlerSignal",
    "NonRetryable",
    "Reply",
    "RetryLater",
]

log = logging.getLogger("relay.receiver")

R = TypeVar("R")  # the framework's request type
T = TypeVar("T")


# --- what a handler raises ----------------------------------------------------------------------


class HandlerSignal(Exception):
    """Raised by a guarded handler to steer the relay; every adapter answers its `reply`."""

    def reply(self) -> Reply:
        raise NotImplementedError


class RetryLater(HandlerSignal):
    """Try this delivery again in ``seconds`` (answered 503 with ``Retry-After``).

    It uses one of the message's retries; the relay ignores waits longer than a day.
    """

    def __init__(self, seconds: float, reason: str = "") -> None:
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self.seconds = seconds
        self.reason = reason
        super().__init__(reason or f"retry in {seconds} seconds")

    def reply(self) -> Reply:
        seconds = math.ceil(self.seconds)
        error = f"retry later ({seconds}s)" + (f": {self.reason}" if self.reason else "")
        return Reply(503, error, {"Retry-After": str(seconds)})


class NonRetryable(HandlerSignal):
    """Fail this message now, without further retries: it goes to the dead-letter queue and its
    failure callback fires (answered 489 with ``Upstash-NonRetryable-Error: true``)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)

    def reply(self) -> Reply:
        return Reply(NON_RETRYABLE_STATUS, self.reason, {D_NON_RETRYABLE: "true"})


# --- what an adapter writes out -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer the guard gives instead of the handler's: ``{"error": ...}`` with a status."""

    status: int
    error: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> bytes:
        return json.dumps({"error": self.error}).encode()

    @property
    def content_type(self) -> str:
        return "application/json"


@dataclass(frozen=True, slots=True)
class Delivery(Generic[T]):
    """A verified delivery, handed to the guarded handler.

    ``body`` is the raw bytes that were signed; ``data`` the body parsed: an instance of the
    ``model`` given to ``verify_signature``, else the JSON value for a JSON content type, else
    None. ``message_id`` is stable across retries: deduplicate on it (delivery is at least once).
    """

    body: bytes
    data: T
    message_id: str | None
    retried: int
    verified: Verified


@dataclass(frozen=True, slots=True)
class Incoming:
    """A request as the adapter read it: the URL its server saw (``scheme://host`` and the raw
    path and query), the headers (case-insensitive), the raw body."""

    url: str
    headers: Headers
    body: bytes


class GuardOptions(TypedDict, Generic[R], total=False):
    """The options of every adapter's ``verify_signature``.

    ``receiver``: the `Receiver` (default: one from the environment, made at the first request).
    ``model``: a pydantic model the body is parsed into (``delivery.data``).
    Which URL the token must be for, first that applies: ``check_url=False`` skips the check;
    ``url``, a fixed URL or a function of the framework's request; ``public_url``, the
    ``scheme://host[/prefix]`` the relay publishes to, followed by the request's path and query;
    ``trust_forwarded``, take scheme and host from ``X-Forwarded-Proto`` / ``X-Forwarded-Host``
    (only behind a proxy that sets them); else the URL the server saw.
    """

    receiver: Receiver | None
    model: type[BaseModel] | None
    url: str | Callable[[R], str] | None
    public_url: str | None
    trust_forwarded: bool
    check_url: bool


class Guard(Generic[R]):
    """One ``verify_signature`` decoration: the options, and the check every request goes
    through."""

    def __init__(self, options: GuardOptions[R]) -> None:
        unknown = set(options) - set(GuardOptions.__optional_keys__)
        if unknown:
            raise TypeError(f"unknown verify_signature option(s): {', '.join(sorted(unknown))}")
        self.receiver = options.get("receiver")
        self.model = options.get("model")
        self.url = options.get("url")
        public_url = options.get("public_url")
        self.public_url = public_url.rstrip("/") if public_url else None
        self.trust_forwarded = options.get("trust_forwarded", False)
        self.check_url = options.get("check_url", True)

    def check(self, request: R, incoming: Incoming) -> Delivery[Any] | Reply:
        """The verified delivery, or the refusal to answer instead of calling the handler."""
        if self.receiver is None:
            try:
                self.receiver = Receiver()
            except ValueError as exc:
                # The relay retries a 500, so fixing the configuration loses nothing.
                log.error("relay receiver is not configured: %s", exc)
                return Reply(500, f"receiver is not configured: {exc}")
        try:
            verified = self.receiver.verify_request(
                headers=incoming.headers, body=incoming.body, url=self.url_for(request, incoming)
            )
        except SignatureError as exc:
            return Reply(401, str(exc))
        data = self.parse(incoming)
        if isinstance(data, Reply):
            return data
        retried = incoming.headers.get(D_RETRIED.lower()) or "0"
        return Delivery(
            body=incoming.body,
            data=data,
            message_id=verified.message_id,
            retried=int(retried) if retried.isdigit() else 0,
            verified=verified,
        )

    def url_for(self, request: R, incoming: Incoming) -> str | None:
        """The URL the token must be for (None: not checked)."""
        if not self.check_url:
            return None
        if isinstance(self.url, str):
            return self.url
        if self.url is not None:
            return self.url(request)
        scheme, _, rest = incoming.url.partition("://")
        slash = rest.find("/")
        host, path = (rest[:slash], rest[slash:]) if slash >= 0 else (rest, "/")
        if self.public_url is not None:
            return self.public_url + path
        if self.trust_forwarded:
            scheme = _first(incoming.headers.get("x-forwarded-proto")) or scheme
            host = _first(incoming.headers.get("x-forwarded-host")) or host
        return f"{scheme}://{host}{path}"

    def parse(self, incoming: Incoming) -> Any:
        """The body as ``delivery.data``, or a 400 `Reply` when it cannot be parsed."""
        if self.model is not None:
            try:
                return self.model.model_validate_json(incoming.body)
            except ValidationError as exc:
                return Reply(400, _validation_message(self.model, exc))
        if not incoming.body or not is_json(incoming.headers.get("content-type") or ""):
            return None
        try:
            return json.loads(incoming.body)
        except ValueError:
            return Reply(400, "body is not valid JSON")


def is_json(content_type: str) -> bool:
    """``application/json`` or a ``+json`` type, parameters aside."""
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


def _first(value: str | None) -> str | None:
    # Each proxy on the way appends its own; the first is what the client used.
    return value.split(",", 1)[0].strip() or None if value else None


def _validation_message(model: type[BaseModel], exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"body is not a valid {model.__name__}: {where}: {first['msg']}{more}"
