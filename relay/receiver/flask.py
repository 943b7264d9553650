"""Flask: ``verify_signature`` guards a view with the delivery signature check.

The view is called with its URL arguments and ``delivery=`` the verified `Delivery`::

    @app.post("/jobs/order")
    @verify_signature(model=OrderPlaced)
    def order(delivery: Delivery[OrderPlaced]) -> str: ...

The raw body is read with ``request.get_data()`` before anything parses it; a ``before_request``
hook that reads ``request.form`` first would leave nothing to verify.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Unpack, overload

import flask

from relay.receiver.guard import Delivery, Guard, GuardOptions, HandlerSignal, Incoming, Reply

__all__ = ["Delivery", "verify_signature"]

View = Callable[..., Any]


@overload
def verify_signature(view: View, /) -> View: ...


@overload
def verify_signature(**options: Unpack[GuardOptions[flask.Request]]) -> Callable[[View], View]: ...


def verify_signature(
    view: View | None = None, /, **options: Unpack[GuardOptions[flask.Request]]
) -> View | Callable[[View], View]:
    """Refuse requests whose signature does not verify, with 401 ``{"error": "<what failed>"}``.

    Use as ``@verify_signature`` or ``@verify_signature(receiver=..., model=..., ...)`` below the
    route decorator; the options are `GuardOptions`. A view may be async (Flask runs it) and may
    raise `RetryLater` or `NonRetryable`.
    """

    def decorate(view: View) -> View:
        guard: Guard[flask.Request] = Guard(options)

        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            request = flask.request
            body = request.get_data(cache=True)
            outcome = guard.check(request, Incoming(request.url, request.headers, body))
            if isinstance(outcome, Reply):
                return _response(outcome)
            try:
                return flask.current_app.ensure_sync(view)(*args, delivery=outcome, **kwargs)
            except HandlerSignal as signal:
                return _response(signal.reply())

        return guarded

    return decorate if view is None else decorate(view)


def _response(reply: Reply) -> flask.Response:
    return flask.Response(
        reply.body, status=reply.status, headers=reply.headers, content_type=reply.content_type
    )
