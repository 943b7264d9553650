"""The QStash v2 wire format: header names, value formats and the API's error type."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

# Publish-side headers (case-insensitive on the wire; stored here lower-cased).
PREFIX = "upstash-"
FORWARD_PREFIX = "upstash-forward-"
CALLBACK_PREFIX = "upstash-callback-"
FAILURE_CALLBACK_PREFIX = "upstash-failure-callback-"
H_METHOD = "upstash-method"
H_DELAY = "upstash-delay"
H_NOT_BEFORE = "upstash-not-before"
H_RETRIES = "upstash-retries"
H_RETRY_DELAY = "upstash-retry-delay"
H_CALLBACK = "upstash-callback"
H_FAILURE_CALLBACK = "upstash-failure-callback"
H_TIMEOUT = "upstash-timeout"
H_DEDUP_ID = "upstash-deduplication-id"
H_CONTENT_DEDUP = "upstash-content-based-deduplication"
H_LABEL = "upstash-label"
H_REDACT = "upstash-redact-fields"
H_HEADER_FORWARD = "upstash-header-forward"
H_CONTENT_TYPE = "content-type"
# Schedule-side headers (POST /v2/schedules/{destination}).
H_CRON = "upstash-cron"
H_SCHEDULE_ID = "upstash-schedule-id"
H_QUEUE_NAME = "upstash-queue-name"

# Delivery-side headers.
D_SIGNATURE = "Upstash-Signature"
D_MESSAGE_ID = "Upstash-Message-Id"
D_RETRIED = "Upstash-Retried"
D_TOPIC = "Upstash-Topic-Name"
D_SCHEDULE = "Upstash-Schedule-Id"
D_CALLER_IP = "Upstash-Caller-Ip"
D_NON_RETRYABLE = "Upstash-NonRetryable-Error"
D_CONTENT_TYPE = "Content-Type"
USER_AGENT = "Upstash-QStash"

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
NON_RETRYABLE_STATUS = 489

# The QStash dev server's documented user-1 credentials (reference §5): `relay dev` uses them so
# that apps already set up for `qstash dev` (and the TS SDK's QSTASH_DEV mode) work untouched.
DEV_TOKEN = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="
DEV_CURRENT_SIGNING_KEY = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
DEV_NEXT_SIGNING_KEY = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"
# relay's own: the Standard Webhooks secret of `relay dev`, fixed so that a receiver configured
# once keeps working across restarts. Public, like the keys above: for development only.
DEV_WEBHOOK_SECRET = "whsec_cmVsYXktZGV2LXdlYmhvb2stc2VjcmV0LTAwMDAwMDA="


class ApiError(Exception):
    """An error answered to an API caller as QStash does: ``{"error": message}`` with a status."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    """400: the request is malformed; nothing was stored."""


class Unauthorized(ApiError):
    """401: missing or wrong token."""

    status = 401


class NotFound(ApiError):
    """404: no such message, DLQ entry or route."""

    status = 404


class PayloadTooLarge(ApiError):
    """413: the body is over the configured limit."""

    status = 413


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}


def parse_duration(text: str, *, what: str = "duration") -> float:
    """Seconds in ``5s``, ``2m``, ``1h30m``, ``7d`` or a bare number; BadRequest if not."""
    value = text.strip()
    if re.fullmatch(r"\d+", value):
        return float(value)
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(value):
        raise BadRequest(
            f"invalid {what} {text!r}: use a number with a unit, like 10s, 5m, 2h or 7d"
        )
    return total


def parse_int(text: str, *, what: str, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer header value within bounds, or BadRequest naming the header."""
    try:
        value = int(text.strip())
    except ValueError:
        raise BadRequest(f"invalid {what} {text!r}: must be an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and at most {maximum}"
        raise BadRequest(f"invalid {what} {value}: must be at least {minimum}{upper}")
    return value


_REDACT_FIELD = re.compile(r"(body)|headers?|headers?\[([^\]]+)\]")


def parse_redact_fields(text: str) -> str | None:
    """``Upstash-Redact-Fields`` in canonical form: ``body``, ``header`` (all headers) and
    ``header[<Name>]``, comma-separated (the docs' ``headers`` spelling is accepted); None when
    empty. An unknown field is a BadRequest: a misspelt one would leave data shown."""
    fields: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        match = _REDACT_FIELD.fullmatch(part)
        if match is None:
            raise BadRequest(
                f"invalid Upstash-Redact-Fields {part!r}: use body, header or header[<Name>]"
            )
        name = match.group(2)
        field = "body" if match.group(1) else f"header[{name.strip()}]" if name else "header"
        if field not in fields:
            fields.append(field)
    return ",".join(fields) or None


def parse_bool(text: str) -> bool:
    """``true``/``True``/``1`` (the Python SDK sends ``True``)."""
    return text.strip().lower() in {"true", "1", "yes"}


def compact_json(obj: Any) -> bytes:
    """JSON exactly as JavaScript's ``JSON.stringify`` writes it (byte-exact for the SDKs)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def b64(data: bytes) -> str:
    """Standard base64 with padding, as QStash puts bodies in JSON."""
    return base64.b64encode(data).decode("ascii")


def header_map(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Name → list of values, the shape QStash uses for headers in JSON."""
    result: dict[str, list[str]] = {}
    for name, value in pairs:
        result.setdefault(name, []).append(value)
    return result


def with_headers(pairs: Iterable[tuple[str, str]], own: Mapping[str, str]) -> list[tuple[str, str]]:
    """``pairs`` with ``own`` set: a name in ``own`` replaces every spelling of it in ``pairs``,
    so that no header goes out twice in two cases."""
    replaced = {name.lower() for name in own}
    return [(k, v) for k, v in pairs if k.lower() not in replaced] + list(own.items())


def lower_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """A plain dict with lower-cased names; for repeated names the last value wins."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {name.lower(): value for name, value in items}
