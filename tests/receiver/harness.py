"""The receiver contract, once for every framework: a real app receives real deliveries from the
in-process relay, accepts them, and refuses what it must, each refusal with its own message.

Each framework's test module builds the same small app (routes below) on a real server and
subclasses `ReceiverContract` with an ``app`` fixture. The routes:

- ``POST /orders``: `AppState.receiver` (replay protection on), ``model=OrderPlaced``
- ``POST /other``: the same receiver, no model (a token for /orders must fail here)
- ``POST /strangers``: `AppState.strangers`, whose keys the relay does not sign with
- ``POST /retry``: raises ``RetryLater(30, "warehouse busy")``
- ``POST /fail``: raises ``NonRetryable("order 42 cannot be shipped")``
- ``POST /proxied``: ``trust_forwarded=True``
- ``POST /public``: ``public_url=<proxy>/base`` (the proxy strips ``/base``)

Every accepting handler calls ``state.record(path, headers, delivery)`` and answers 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import uvicorn
from aiohttp import web
from pydantic import BaseModel
from werkzeug.serving import make_server

from relay.receiver import Delivery, Receiver
from relay.server import EmbeddedRelay
from relay.signing import generate_keys
from tests.conftest import Api

ORDER_BODY = b'{"order_id": 42, "sku": "kettle"}'
JSON = {"Content-Type": "application/json"}
RETRY_SECONDS = 30
NOT_SHIPPABLE = "order 42 cannot be shipped"


class OrderPlaced(BaseModel):
    order_id: int
    sku: str


class FakeTime:
    """The receivers' clock: real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Handled:
    """A delivery a handler accepted, with the request headers (lower-case names)."""

    path: str
    headers: dict[str, str]
    delivery: Delivery[Any]

    @property
    def body(self) -> bytes:
        return self.delivery.body


@dataclass
class AppState:
    """What an app under test shares with the test: receivers, clock, accepted deliveries."""

    relay: EmbeddedRelay
    public_url: str = ""
    clock: FakeTime = field(default_factory=FakeTime)
    handled: list[Handled] = field(default_factory=list)

    def __post_init__(self) -> None:
        keys = self.relay.service.keys
        self.receiver = Receiver(keys.current, keys.next, replay_protection=True, clock=self.clock)
        strangers = generate_keys()
        self.strangers = Receiver(strangers.current, strangers.next, clock=self.clock)

    def record(self, path: str, headers: Mapping[str, str], delivery: Delivery[Any]) -> str:
        self.handled.append(Handled(path, {k.lower(): v for k, v in headers.items()}, delivery))
        return "ok"

    async def wait_handled(self, count: int, timeout: float = 10) -> list[Handled]:
        deadline = time.monotonic() + timeout
        while len(self.handled) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.handled)} deliveries handled, not {count}")
            await asyncio.sleep(0.01)
        return self.handled


@dataclass
class AppUnderTest:
    """A running app: its base URL, its state, and the key its error bodies use."""

    base: str
    state: AppState
    error_key: str = "error"

    def url(self, path: str) -> str:
        return self.base + path

    async def send(
        self, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str | None]:
        """Send a request as the relay would (a replay of a captured one, typically)."""
        kept = {
            k: v
            for k, v in headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.url(path), data=body, headers=kept, skip_auto_headers=("Content-Type",)
            ) as response,
        ):
            return response.status, self.error_of(await response.read())

    def error_of(self, body: bytes | str) -> str | None:
        try:
            data = json.loads(body)
        except ValueError:
            return None
        return data.get(self.error_key) if isinstance(data, dict) else None


class Proxy:
    """A reverse proxy on 127.0.0.1: forwards to ``target`` with ``X-Forwarded-Proto/Host``
    set and its own address hidden from the app, as nginx does; strips a ``/base`` prefix."""

    def __init__(self) -> None:
        self.base = ""
        self.target = ""

    def url(self, path: str) -> str:
        return self.base + path

    async def handle(self, request: web.Request) -> web.Response:
        path = request.raw_path.removeprefix("/base")
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")
        }
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-Host"] = request.host
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                self.target + path,
                data=await request.read(),
                headers=headers,
                skip_auto_headers=("Content-Type",),
            ) as response,
        ):
            body = await response.read()
            kept = {
                k: v
                for k, v in response.headers.items()
                if k.lower() in ("content-type", "retry-after", "upstash-nonretryable-error")
            }
            return web.Response(status=response.status, body=body, headers=kept)


async def attempt_event(api: Api, message_id: str, state: str) -> dict[str, Any]:
    """The log event of the message's attempt that ended in ``state`` (waiting for it)."""
    await api.wait_state(message_id, state)
    [event] = [e for e in await api.events(messageId=message_id) if e["state"] == state]
    return event


def response_header(event: Mapping[str, Any], name: str) -> list[str] | None:
    """A header of the destination's answer, by case-insensitive name (ASGI servers send
    lower-case names)."""
    found = {k.lower(): v for k, v in event["responseHeader"].items()}
    return found.get(name.lower())


class ReceiverContract:
    """The acceptance list; a subclass provides the ``app`` fixture (and the ``proxy`` in front
    of it: ``proxy.target = app.base``)."""

    async def _deliver(self, app: AppUnderTest, api: Api, path: str = "/orders") -> Handled:
        before = len(app.state.handled)
        await api.publish(app.url(path), ORDER_BODY, JSON)
        handled = await app.state.wait_handled(before + 1)
        return handled[before]

    async def test_accepts_a_real_delivery(self, app: AppUnderTest, api: Api) -> None:
        headers = {**JSON, "Upstash-Forward-X-Trace": "t-1"}
        message_id = await api.publish(app.url("/orders"), ORDER_BODY, headers)
        [handled] = await app.state.wait_handled(1)
        delivery = handled.delivery
        assert delivery.data == OrderPlaced(order_id=42, sku="kettle")
        assert delivery.body == ORDER_BODY
        assert (delivery.message_id, delivery.retried) == (message_id, 0)
        assert delivery.verified.scheme == "upstash"
        assert delivery.verified.claims["sub"] == app.url("/orders")
        assert handled.headers["x-trace"] == "t-1"
        assert handled.headers["webhook-id"] == message_id
        await api.wait_state(message_id, "DELIVERED")

    async def test_refuses_a_tampered_body(self, app: AppUnderTest, api: Api) -> None:
        captured = await self._deliver(app, api)
        tampered = captured.body.replace(b"42", b"43")
        status, error = await app.send("/orders", captured.headers, tampered)
        assert (status, error) == (401, "body hash does not match the request body")

    async def test_refuses_a_token_for_another_url(self, app: AppUnderTest, api: Api) -> None:
        captured = await self._deliver(app, api)
        status, error = await app.send("/other", captured.headers, captured.body)
        assert status == 401
        assert error == (
            f"URL mismatch: token is for {app.url('/orders')!r}, request is {app.url('/other')!r}"
        )

    async def test_refuses_an_expired_token(self, app: AppUnderTest, api: Api) -> None:
        captured = await self._deliver(app, api)
        app.state.clock.advance(301)
        status, error = await app.send("/orders", captured.headers, captured.body)
        assert status == 401
        assert error is not None and error.startswith("token expired at ")

    async def test_refuses_an_unknown_key(self, app: AppUnderTest, api: Api) -> None:
        message_id = await api.publish(app.url("/strangers"), ORDER_BODY, JSON)
        event = await attempt_event(api, message_id, "RETRY")
        assert event["responseStatus"] == 401
        assert app.error_of(event["responseBody"]) == (
            "signature does not match the current or the next signing key"
        )
        assert app.state.handled == []

    async def test_refuses_a_replayed_delivery(self, app: AppUnderTest, api: Api) -> None:
        captured = await self._deliver(app, api)
        jti = captured.delivery.verified.claims["jti"]
        status, error = await app.send("/orders", captured.headers, captured.body)
        assert (status, error) == (401, f"replayed request: jti {jti} was already accepted")
        assert len(app.state.handled) == 1

    async def test_refuses_a_missing_signature(self, app: AppUnderTest) -> None:
        status, error = await app.send("/orders", JSON, ORDER_BODY)
        assert (status, error) == (401, "missing Upstash-Signature header")

    async def test_a_body_the_model_refuses_is_a_bad_request(
        self, app: AppUnderTest, api: Api
    ) -> None:
        message_id = await api.publish(app.url("/orders"), b'{"order_id": "x"}', JSON)
        event = await attempt_event(api, message_id, "RETRY")
        assert event["responseStatus"] == 400
        error = app.error_of(event["responseBody"])
        assert error is not None
        assert error.startswith("body is not a valid OrderPlaced: order_id: Input should be")
        assert error.endswith("(and 1 more)")  # sku is missing too

    async def test_retry_later_answers_retry_after(self, app: AppUnderTest, api: Api) -> None:
        message_id = await api.publish(app.url("/retry"), ORDER_BODY, JSON)
        event = await attempt_event(api, message_id, "RETRY")
        assert event["responseStatus"] == 503
        assert response_header(event, "Retry-After") == [str(RETRY_SECONDS)]
        assert event["nextDeliveryTime"] - event["time"] == RETRY_SECONDS * 1000
        assert app.error_of(event["responseBody"]) == "retry later (30s): warehouse busy"

    async def test_non_retryable_fails_at_once(self, app: AppUnderTest, api: Api) -> None:
        message_id = await api.publish(app.url("/fail"), ORDER_BODY, JSON)
        event = await attempt_event(api, message_id, "FAILED")
        assert event["responseStatus"] == 489
        assert response_header(event, "Upstash-NonRetryable-Error") == ["true"]
        assert app.error_of(event["responseBody"]) == NOT_SHIPPABLE
        assert "RETRY" not in await api.states(message_id)
        status, dlq = await api.call("GET", "/v2/dlq", params={"messageId": message_id})
        assert status == 200 and len(dlq["messages"]) == 1

    async def test_behind_a_proxy_the_request_url_differs(
        self, app: AppUnderTest, api: Api, proxy: Proxy
    ) -> None:
        message_id = await api.publish(proxy.url("/orders"), ORDER_BODY, JSON)
        event = await attempt_event(api, message_id, "RETRY")
        assert event["responseStatus"] == 401
        assert app.error_of(event["responseBody"]) == (
            f"URL mismatch: token is for {proxy.url('/orders')!r}, "
            f"request is {app.url('/orders')!r}"
        )

    async def test_trusted_forwarded_headers_give_the_public_url(
        self, app: AppUnderTest, api: Api, proxy: Proxy
    ) -> None:
        message_id = await api.publish(proxy.url("/proxied?tenant=a&note=two%20words"), b"{}", JSON)
        [handled] = await app.state.wait_handled(1)
        assert handled.path == "/proxied"
        assert handled.delivery.verified.claims["sub"] == proxy.url(
            "/proxied?tenant=a&note=two%20words"
        )
        await api.wait_state(message_id, "DELIVERED")

    async def test_a_public_base_url_gives_the_public_url(
        self, app: AppUnderTest, api: Api, proxy: Proxy
    ) -> None:
        message_id = await api.publish(proxy.url("/base/public"), b"{}", JSON)
        [handled] = await app.state.wait_handled(1)
        assert handled.path == "/public"
        await api.wait_state(message_id, "DELIVERED")


@contextlib.contextmanager
def wsgi_server(app: Any) -> Iterator[str]:
    """A real threaded WSGI server on 127.0.0.1 for ``app``; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


@contextlib.contextmanager
def asgi_server(app: Any) -> Iterator[str]:
    """A real uvicorn server on 127.0.0.1 for ``app``, in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
