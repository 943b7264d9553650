"""aiohttp: ``verify_signature`` guards a handler with the delivery signature check.

The handler finds the `Delivery` in ``request[RELAY_DELIVERY]`` (and, as before, the raw body in
``request[RELAY_BODY]`` and the parsed body in ``request[RELAY_JSON]``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Unpack, overload

from aiohttp import web

from relay.receiver.guard import Delivery, Guard, GuardOptions, HandlerSignal, Incoming, Reply

__all__ = ["RELAY_BODY", "RELAY_DELIVERY", "RELAY_JSON", "Handler", "verify_signature"]

RELAY_DELIVERY = web.RequestKey("relay_delivery", Delivery[Any])
"""The verified `Delivery`: ``request[RELAY_DELIVERY]``."""
RELAY_BODY = web.RequestKey("relay_body", bytes)
"""The verified raw body: ``request[RELAY_BODY]``."""
RELAY_JSON = web.RequestKey("relay_json", object)
"""The parsed body (the model instance when a model is given), or None for a body that is not
JSON: ``request[RELAY_JSON]``."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@overload
def verify_signature(handler: Handler, /) -> Handler: ...


@overload
def verify_signature(
    **options: Unpack[GuardOptions[web.Request]],
) -> Callable[[Handler], Handler]: ...


def verify_signature(
    handler: Handler | None = None, /, **options: Unpack[GuardOptions[web.Request]]
) -> Handler | Callable[[Handler], Handler]:
    """Refuse requests whose signature does not verify, with 401 ``{"error": "<what failed>"}``.

    Use as ``@verify_signature`` or ``@verify_signature(receiver=..., model=..., ...)``; the
    options are `GuardOptions`. A handler may raise `RetryLater` or `NonRetryable`.
    """

    def decorate(handler: Handler) -> Handler:
        guard: Guard[web.Request] = Guard(options)

        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            seen = f"{request.scheme}://{request.host}{request.raw_path}"
            outcome = guard.check(request, Incoming(seen, request.headers, body))
            if isinstance(outcome, Reply):
                return _response(outcome)
            request[RELAY_DELIVERY] = outcome
            request[RELAY_BODY] = body
            request[RELAY_JSON] = outcome.data
            try:
                return await handler(request)
            except HandlerSignal as signal:
                return _response(signal.reply())

        return guarded

    return decorate if handler is None else decorate(handler)


def _response(reply: Reply) -> web.Response:
    return web.Response(
        status=reply.status,
        body=reply.body,
        content_type=reply.content_type,
        headers=reply.headers,
    )
