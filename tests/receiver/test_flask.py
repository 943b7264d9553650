"""relay.receiver.flask: the receiver contract on a Flask app served by a real WSGI server
thread."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import flask
import pytest

from relay.receiver import Delivery, NonRetryable, RetryLater
from relay.receiver.flask import verify_signature
from tests.receiver.harness import (
    NOT_SHIPPABLE,
    RETRY_SECONDS,
    AppState,
    AppUnderTest,
    OrderPlaced,
    Proxy,
    ReceiverContract,
    wsgi_server,
)


def make_app(state: AppState) -> flask.Flask:
    app = flask.Flask(__name__)
    receiver = state.receiver

    def record(delivery: Delivery[Any]) -> str:
        return state.record(flask.request.path, flask.request.headers, delivery)

    @app.post("/orders")
    @verify_signature(receiver=receiver, model=OrderPlaced)
    def orders(delivery: Delivery[OrderPlaced]) -> str:
        return record(delivery)

    @app.post("/other")
    @verify_signature(receiver=receiver)
    def other(delivery: Delivery[Any]) -> str:
        return record(delivery)

    @app.post("/strangers")
    @verify_signature(receiver=state.strangers)
    def strangers(delivery: Delivery[Any]) -> str:
        return record(delivery)

    @app.post("/retry")
    @verify_signature(receiver=receiver)
    def retry(delivery: Delivery[Any]) -> str:
        raise RetryLater(RETRY_SECONDS, "warehouse busy")

    @app.post("/fail")
    @verify_signature(receiver=receiver)
    async def fail(delivery: Delivery[Any]) -> str:  # an async view: Flask runs it
        raise NonRetryable(NOT_SHIPPABLE)

    @app.post("/proxied")
    @verify_signature(receiver=receiver, trust_forwarded=True)
    def proxied(delivery: Delivery[Any]) -> str:
        return record(delivery)

    @app.post("/public")
    @verify_signature(receiver=receiver, public_url=state.public_url)
    def public(delivery: Delivery[Any]) -> str:
        return record(delivery)

    return app


class TestFlask(ReceiverContract):
    @pytest.fixture
    def app(self, state: AppState, proxy: Proxy) -> Iterator[AppUnderTest]:
        with wsgi_server(make_app(state)) as base:
            proxy.target = base
            yield AppUnderTest(base, state)
