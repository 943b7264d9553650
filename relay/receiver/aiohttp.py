"""aiohttp integration: `verify_signature` guards a handler with the delivery signature check."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import overload

from aiohttp import web

from relay.receiver.verifier import Receiver
from relay.signing import SignatureError

__all__ = ["RELAY_BODY", "RELAY_JSON", "Handler", "verify_signature"]

RELAY_BODY = web.RequestKey("relay_body", bytes)
"""The verified raw body: ``request[RELAY_BODY]``."""
RELAY_JSON = web.RequestKey("relay_json", object)
"""The parsed JSON body, or None when the content type is not JSON: ``request[RELAY_JSON]``."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UrlOf = Callable[[web.Request], str]


@overload
def verify_signature(handler: Handler, /) -> Handler: ...


@overload
def verify_signature(
    *, receiver: Receiver | None = None, url: str | UrlOf | None = None
) -> Callable[[Handler], Handler]: ...


def verify_signature(
    handler: Handler | None = None,
    /,
    *,
    receiver: Receiver | None = None,
    url: str | UrlOf | None = None,
) -> Handler | Callable[[Handler], Handler]:
    """Refuse requests whose ``Upstash-Signature`` does not verify, with 401 ``{"error": ...}``.

    Use as ``@verify_signature`` or ``@verify_signature(receiver=..., url=...)``. The receiver
    defaults to ``Receiver()`` (keys from env, read at the first request). The token must be for
    ``url`` (a string, or a function of the request for proxies); default ``str(request.url)``.
    On success the handler finds the raw body in ``request[RELAY_BODY]`` and, for a JSON
    content type, the parsed body in ``request[RELAY_JSON]`` (None otherwise).
    """

    def decorate(handler: Handler) -> Handler:
        verifier = receiver

        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            nonlocal verifier
            body = await request.read()
            signature = request.headers.get("Upstash-Signature")
            if not signature:
                return _refuse(401, "missing Upstash-Signature header")
            if verifier is None:
                verifier = Receiver()
            target = url(request) if callable(url) else url or str(request.url)
            try:
                verifier.verify(signature=signature, body=body, url=target)
            except SignatureError as exc:
                return _refuse(401, str(exc))
            request[RELAY_BODY] = body
            request[RELAY_JSON] = None
            if _is_json(request.content_type) and body:
                try:
                    request[RELAY_JSON] = json.loads(body)
                except ValueError:
                    return _refuse(400, "body is not valid JSON")
            return await handler(request)

        return guarded

    return decorate if handler is None else decorate(handler)


def _refuse(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")
