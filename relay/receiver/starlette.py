"""Starlette and FastAPI: ``verify_signature`` guards an endpoint; ``verified`` is the same check
as a FastAPI dependency.

Starlette: the endpoint is called with the request and ``delivery=`` the verified `Delivery`::

    @verify_signature(model=OrderPlaced)
    async def order(request: Request, delivery: Delivery[OrderPlaced]) -> Response: ...

FastAPI (its endpoints' signatures belong to FastAPI, so the check is a dependency)::

    @app.post("/jobs/order")
    async def order(delivery: Annotated[Delivery[OrderPlaced], Depends(verified(OrderPlaced))]):
        ...

A refused request raises ``HTTPException`` (FastAPI answers ``{"detail": "<what failed>"}``); an
endpoint's `RetryLater` / `NonRetryable` is answered by the dependency's exit code.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, Unpack, overload

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from relay.receiver.guard import Delivery, Guard, GuardOptions, HandlerSignal, Incoming, Reply

__all__ = ["Delivery", "verified", "verify_signature"]

Endpoint = Callable[..., Any]
M = TypeVar("M", bound=BaseModel)


@overload
def verify_signature(endpoint: Endpoint, /) -> Callable[[Request], Awaitable[Response]]: ...


@overload
def verify_signature(
    **options: Unpack[GuardOptions[Request]],
) -> Callable[[Endpoint], Callable[[Request], Awaitable[Response]]]: ...


def verify_signature(
    endpoint: Endpoint | None = None, /, **options: Unpack[GuardOptions[Request]]
) -> (
    Callable[[Request], Awaitable[Response]]
    | Callable[[Endpoint], Callable[[Request], Awaitable[Response]]]
):
    """Refuse requests whose signature does not verify, with 401 ``{"error": "<what failed>"}``.

    For Starlette routes; the options are `GuardOptions`. The endpoint may be sync (run in the
    thread pool) and may raise `RetryLater` or `NonRetryable`.
    """

    def decorate(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        guard: Guard[Request] = Guard(options)
        is_async = inspect.iscoroutinefunction(endpoint)

        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            outcome = await _check(guard, request)
            if isinstance(outcome, Reply):
                return _response(outcome)
            try:
                if is_async:
                    result = await endpoint(request, delivery=outcome)
                else:
                    result = await run_in_threadpool(endpoint, request, delivery=outcome)
            except HandlerSignal as signal:
                return _response(signal.reply())
            return result  # type: ignore[no-any-return]

        return guarded

    return decorate if endpoint is None else decorate(endpoint)


@overload
def verified(
    model: type[M], /, **options: Unpack[GuardOptions[Request]]
) -> Callable[[Request], AsyncIterator[Delivery[M]]]: ...


@overload
def verified(
    model: None = None, /, **options: Unpack[GuardOptions[Request]]
) -> Callable[[Request], AsyncIterator[Delivery[Any]]]: ...


def verified(
    model: type[BaseModel] | None = None, /, **options: Unpack[GuardOptions[Request]]
) -> Callable[[Request], AsyncIterator[Delivery[Any]]]:
    """A FastAPI dependency (``Depends(verified(Model))``) giving the verified `Delivery`.

    A refusal raises ``HTTPException`` with the status and message; `RetryLater` and
    `NonRetryable` raised by the endpoint become their answers in the dependency's exit code.
    """
    guard: Guard[Request] = Guard({**options, "model": model} if model else options)

    async def dependency(request: Request) -> AsyncIterator[Delivery[Any]]:
        outcome = await _check(guard, request)
        if isinstance(outcome, Reply):
            raise HTTPException(outcome.status, outcome.error, outcome.headers)
        try:
            yield outcome
        except HandlerSignal as signal:
            reply = signal.reply()
            raise HTTPException(reply.status, reply.error, reply.headers) from None

    return dependency


async def _check(guard: Guard[Request], request: Request) -> Delivery[Any] | Reply:
    body = await request.body()
    return guard.check(request, Incoming(_seen_url(request), request.headers, body))


def _seen_url(request: Request) -> str:
    # The raw path as it arrived: Starlette's `request.url` rebuilds it from the decoded one.
    raw_path = request.scope.get("raw_path")
    if not raw_path:
        return str(request.url)
    query = request.scope.get("query_string", b"")
    target = raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    return f"{request.url.scheme}://{request.url.netloc}{target}"


def _response(reply: Reply) -> Response:
    return Response(reply.body, reply.status, reply.headers, media_type=reply.content_type)
