"""AWS Lambda: ``verify_signature`` guards a handler behind API Gateway (REST API events, HTTP
API payload formats 1.0 and 2.0) or a Lambda function URL.

The handler is called with the event, the context and ``delivery=`` the verified `Delivery`, and
returns its proxy result as usual::

    @verify_signature(model=OrderPlaced)
    def handler(event: dict, context: object, delivery: Delivery[OrderPlaced]) -> dict: ...

A base64-encoded body (``isBase64Encoded``) is decoded before verifying. The URL checked is
``https://<Host header or domainName>`` and the path the client used (with the stage, as it
appears in the request) and its query; REST API events carry no raw query string, so theirs
is re-encoded, and a query that was encoded unusually needs ``url=`` or ``public_url=``.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Callable, Mapping
from typing import Any, Unpack, overload
from urllib.parse import quote, urlencode

from relay.receiver.guard import Delivery, Guard, GuardOptions, HandlerSignal, Incoming, Reply

__all__ = ["Delivery", "Event", "verify_signature"]

Event = Mapping[str, Any]
Handler = Callable[..., Any]
LambdaHandler = Callable[[Event, Any], Any]


@overload
def verify_signature(handler: Handler, /) -> LambdaHandler: ...


@overload
def verify_signature(
    **options: Unpack[GuardOptions[Event]],
) -> Callable[[Handler], LambdaHandler]: ...


def verify_signature(
    handler: Handler | None = None, /, **options: Unpack[GuardOptions[Event]]
) -> LambdaHandler | Callable[[Handler], LambdaHandler]:
    """Answer a proxy result with 401 ``{"error": "<what failed>"}`` for a request whose
    signature does not verify, instead of calling the handler.

    The options are `GuardOptions` (``url`` may be a function of the event). The handler may
    raise `RetryLater` or `NonRetryable`.
    """

    def decorate(handler: Handler) -> LambdaHandler:
        guard: Guard[Event] = Guard(options)

        @functools.wraps(handler)
        def guarded(event: Event, context: Any) -> Any:
            try:
                incoming = incoming_request(event)
            except ValueError as exc:
                return proxy_result(Reply(400, str(exc)))
            outcome = guard.check(event, incoming)
            if isinstance(outcome, Reply):
                return proxy_result(outcome)
            try:
                return handler(event, context, delivery=outcome)
            except HandlerSignal as signal:
                return proxy_result(signal.reply())

        return guarded

    return decorate if handler is None else decorate(handler)


def incoming_request(event: Event) -> Incoming:
    """The URL, headers (lower-cased) and raw body of an API Gateway or function URL event."""
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    context = event.get("requestContext") or {}
    scheme = headers.get("x-forwarded-proto", "https").split(",")[0].strip()
    host = headers.get("host") or str(context.get("domainName") or "localhost")
    target = _TARGETS.get(str(event.get("version")), _rest_target)(event)
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except binascii.Error:
            raise ValueError("the event's body is not valid base64") from None
    else:
        raw = body.encode() if isinstance(body, str) else bytes(body)
    return Incoming(f"{scheme}://{host}{target}", headers, raw)


def _http_api_target(event: Event) -> str:
    # Payload format 2.0 (HTTP APIs, function URLs) keeps the path and query string as sent.
    path = str(event.get("rawPath") or "/")
    query = str(event.get("rawQueryString") or "")
    return path + ("?" + query if query else "")


def _rest_target(event: Event) -> str:
    # REST API events and HTTP API format 1.0: `requestContext.path` is the path the client
    # used (stage or base path included); the query string arrives decoded.
    context = event.get("requestContext") or {}
    path = str(context.get("path") or event.get("path") or "/")
    params = event.get("multiValueQueryStringParameters")
    if params:
        pairs = [(k, v) for k, values in params.items() for v in values]
    else:
        pairs = list((event.get("queryStringParameters") or {}).items())
    query = urlencode(pairs, quote_via=quote)
    return quote(path, safe="/%:@!$&'()*+,;=-._~") + ("?" + query if query else "")


_TARGETS: dict[str, Callable[[Event], str]] = {"2.0": _http_api_target, "1.0": _rest_target}


def proxy_result(reply: Reply) -> dict[str, Any]:
    """A `Reply` as the proxy integration's response."""
    return {
        "statusCode": reply.status,
        "headers": {"Content-Type": reply.content_type, **reply.headers},
        "body": reply.body.decode(),
        "isBase64Encoded": False,
    }
