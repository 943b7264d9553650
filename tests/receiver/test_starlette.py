"""relay.receiver.starlette: the receiver contract on a Starlette app served by a real uvicorn
server thread."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from relay.receiver import Delivery, NonRetryable, RetryLater
from relay.receiver.starlette import verify_signature
from tests.receiver.harness import (
    NOT_SHIPPABLE,
    RETRY_SECONDS,
    AppState,
    AppUnderTest,
    OrderPlaced,
    Proxy,
    ReceiverContract,
    asgi_server,
)


def make_starlette(state: AppState) -> Starlette:
    receiver = state.receiver

    def record(request: Request, delivery: Delivery[Any]) -> Response:
        return PlainTextResponse(state.record(request.url.path, request.headers, delivery))

    @verify_signature(receiver=receiver, model=OrderPlaced)
    async def orders(request: Request, delivery: Delivery[OrderPlaced]) -> Response:
        return record(request, delivery)

    @verify_signature(receiver=receiver)
    def other(request: Request, delivery: Delivery[Any]) -> Response:  # sync: thread pool
        return record(request, delivery)

    @verify_signature(receiver=state.strangers)
    async def strangers(request: Request, delivery: Delivery[Any]) -> Response:
        return record(request, delivery)

    @verify_signature(receiver=receiver)
    async def retry(request: Request, delivery: Delivery[Any]) -> Response:
        raise RetryLater(RETRY_SECONDS, "warehouse busy")

    @verify_signature(receiver=receiver)
    def fail(request: Request, delivery: Delivery[Any]) -> Response:
        raise NonRetryable(NOT_SHIPPABLE)

    @verify_signature(receiver=receiver, trust_forwarded=True)
    async def proxied(request: Request, delivery: Delivery[Any]) -> Response:
        return record(request, delivery)

    @verify_signature(receiver=receiver, public_url=state.public_url)
    async def public(request: Request, delivery: Delivery[Any]) -> Response:
        return record(request, delivery)

    endpoints = {
        "/orders": orders,
        "/other": other,
        "/strangers": strangers,
        "/retry": retry,
        "/fail": fail,
        "/proxied": proxied,
        "/public": public,
    }
    return Starlette(routes=[Route(p, e, methods=["POST"]) for p, e in endpoints.items()])


class TestStarlette(ReceiverContract):
    @pytest.fixture
    def app(self, state: AppState, proxy: Proxy) -> Iterator[AppUnderTest]:
        with asgi_server(make_starlette(state)) as base:
            proxy.target = base
            yield AppUnderTest(base, state)
