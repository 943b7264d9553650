"""relay.receiver.aiohttp: the receiver contract on a real aiohttp server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from relay.receiver import RELAY_DELIVERY, NonRetryable, RetryLater, verify_signature
from tests.receiver.harness import (
    NOT_SHIPPABLE,
    RETRY_SECONDS,
    AppState,
    AppUnderTest,
    OrderPlaced,
    Proxy,
    ReceiverContract,
)


def make_app(state: AppState) -> web.Application:
    receiver = state.receiver

    def record(request: web.Request) -> web.Response:
        return web.Response(
            text=state.record(request.path, request.headers, request[RELAY_DELIVERY])
        )

    @verify_signature(receiver=receiver, model=OrderPlaced)
    async def orders(request: web.Request) -> web.Response:
        return record(request)

    @verify_signature(receiver=receiver)
    async def other(request: web.Request) -> web.Response:
        return record(request)

    @verify_signature(receiver=state.strangers)
    async def strangers(request: web.Request) -> web.Response:
        return record(request)

    @verify_signature(receiver=receiver)
    async def retry(request: web.Request) -> web.Response:
        raise RetryLater(RETRY_SECONDS, "warehouse busy")

    @verify_signature(receiver=receiver)
    async def fail(request: web.Request) -> web.Response:
        raise NonRetryable(NOT_SHIPPABLE)

    @verify_signature(receiver=receiver, trust_forwarded=True)
    async def proxied(request: web.Request) -> web.Response:
        return record(request)

    @verify_signature(receiver=receiver, public_url=state.public_url)
    async def public(request: web.Request) -> web.Response:
        return record(request)

    app = web.Application()
    for path, handler in {
        "/orders": orders,
        "/other": other,
        "/strangers": strangers,
        "/retry": retry,
        "/fail": fail,
        "/proxied": proxied,
        "/public": public,
    }.items():
        app.router.add_post(path, handler)
    return app


class TestAiohttp(ReceiverContract):
    @pytest.fixture
    async def app(self, state: AppState, proxy: Proxy) -> AsyncIterator[AppUnderTest]:
        runner = web.AppRunner(make_app(state), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        app = AppUnderTest(f"http://127.0.0.1:{runner.addresses[0][1]}", state)
        proxy.target = app.base
        try:
            yield app
        finally:
            await runner.cleanup()
