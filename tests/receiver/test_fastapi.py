"""relay.receiver.starlette's FastAPI dependency: the receiver contract on a FastAPI app served
by a real uvicorn server thread.

No ``from __future__ import annotations`` here: FastAPI evaluates endpoint annotations at run
time, and string annotations cannot see the dependencies local to `make_app`.
"""

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from starlette.requests import Request

from relay.receiver import Delivery, NonRetryable, RetryLater
from relay.receiver.starlette import verified
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


def make_app(state: AppState) -> FastAPI:
    app = FastAPI()
    receiver = state.receiver
    Verified = Annotated[Delivery[Any], Depends(verified(receiver=receiver))]

    def record(request: Request, delivery: Delivery[Any]) -> str:
        return state.record(request.url.path, request.headers, delivery)

    @app.post("/orders")
    async def orders(
        request: Request,
        delivery: Annotated[
            Delivery[OrderPlaced], Depends(verified(OrderPlaced, receiver=receiver))
        ],
    ) -> str:
        return record(request, delivery)

    @app.post("/other")
    def other(request: Request, delivery: Verified) -> str:
        return record(request, delivery)

    @app.post("/strangers")
    async def strangers(
        request: Request,
        delivery: Annotated[Delivery[Any], Depends(verified(receiver=state.strangers))],
    ) -> str:
        return record(request, delivery)

    @app.post("/retry")
    async def retry(delivery: Verified) -> str:
        raise RetryLater(RETRY_SECONDS, "warehouse busy")

    @app.post("/fail")
    def fail(delivery: Verified) -> str:
        raise NonRetryable(NOT_SHIPPABLE)

    @app.post("/proxied")
    async def proxied(
        request: Request,
        delivery: Annotated[
            Delivery[Any], Depends(verified(receiver=receiver, trust_forwarded=True))
        ],
    ) -> str:
        return record(request, delivery)

    @app.post("/public")
    async def public(
        request: Request,
        delivery: Annotated[
            Delivery[Any], Depends(verified(receiver=receiver, public_url=state.public_url))
        ],
    ) -> str:
        return record(request, delivery)

    return app


class TestFastAPI(ReceiverContract):
    @pytest.fixture
    def app(self, state: AppState, proxy: Proxy) -> Iterator[AppUnderTest]:
        with asgi_server(make_app(state)) as base:
            proxy.target = base
            yield AppUnderTest(base, state, error_key="detail")
