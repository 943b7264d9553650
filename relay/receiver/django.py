"""Django: ``verify_signature`` guards a view (sync or async) with the delivery signature check.

The view is called with the request, its URL arguments and ``delivery=`` the verified
`Delivery`::

    @verify_signature(model=OrderPlaced)
    def order(request: HttpRequest, delivery: Delivery[OrderPlaced]) -> HttpResponse: ...

The guarded view is exempt from CSRF checks: the signature is its authentication. The URL
checked is ``request.build_absolute_uri()``, so Django's own proxy settings
(``SECURE_PROXY_SSL_HEADER``, ``USE_X_FORWARDED_HOST``) apply, as do the `GuardOptions`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Unpack, overload

from django.http import HttpRequest, HttpResponse

from relay.receiver.guard import Delivery, Guard, GuardOptions, HandlerSignal, Incoming, Reply

__all__ = ["Delivery", "verify_signature"]

View = Callable[..., Any]


@overload
def verify_signature(view: View, /) -> View: ...


@overload
def verify_signature(**options: Unpack[GuardOptions[HttpRequest]]) -> Callable[[View], View]: ...


def verify_signature(
    view: View | None = None, /, **options: Unpack[GuardOptions[HttpRequest]]
) -> View | Callable[[View], View]:
    """Refuse requests whose signature does not verify, with 401 ``{"error": "<what failed>"}``.

    Use as ``@verify_signature`` or ``@verify_signature(receiver=..., model=..., ...)``; the
    options are `GuardOptions`. The view may raise `RetryLater` or `NonRetryable`.
    """

    def decorate(view: View) -> View:
        guard: Guard[HttpRequest] = Guard(options)

        def check(request: HttpRequest) -> Delivery[Any] | Reply:
            # `request.body` is the raw bytes, kept by Django once read.
            incoming = Incoming(request.build_absolute_uri(), request.headers, request.body)
            return guard.check(request, incoming)

        guarded: View
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def guarded_async(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                outcome = check(request)
                if isinstance(outcome, Reply):
                    return _response(outcome)
                try:
                    return await view(request, *args, delivery=outcome, **kwargs)
                except HandlerSignal as signal:
                    return _response(signal.reply())

            guarded = guarded_async
        else:

            @functools.wraps(view)
            def guarded_sync(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                outcome = check(request)
                if isinstance(outcome, Reply):
                    return _response(outcome)
                try:
                    return view(request, *args, delivery=outcome, **kwargs)
                except HandlerSignal as signal:
                    return _response(signal.reply())

            guarded = guarded_sync
        # What `csrf_exempt` sets; set directly so that an async view stays async on Django 4.2.
        guarded.__dict__["csrf_exempt"] = True
        return guarded

    return decorate if view is None else decorate(view)


def _response(reply: Reply) -> HttpResponse:
    response = HttpResponse(reply.body, status=reply.status, content_type=reply.content_type)
    for name, value in reply.headers.items():
        response[name] = value
    return response
