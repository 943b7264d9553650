"""relay.receiver.aws_lambda: the receiver contract on Lambda handlers behind an emulated API
Gateway. A real HTTP server receives each real delivery and turns it into the event that API
Gateway (REST API, HTTP API) or a function URL sends, as AWS builds it from the request: the
handler runs on that event and its proxy result becomes the HTTP answer."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from aiohttp import web

from relay.receiver import Delivery, NonRetryable, RetryLater
from relay.receiver.aws_lambda import Event, verify_signature
from tests.receiver.harness import (
    NOT_SHIPPABLE,
    RETRY_SECONDS,
    AppState,
    AppUnderTest,
    OrderPlaced,
    Proxy,
    ReceiverContract,
)

LambdaHandler = Callable[[Event, Any], Any]
_TEXT = ("text/", "application/json", "application/xml")


def make_handlers(state: AppState) -> dict[str, LambdaHandler]:
    receiver = state.receiver

    def record(event: Event, delivery: Delivery[Any]) -> dict[str, Any]:
        path = event.get("rawPath") or event["path"]
        return {"statusCode": 200, "body": state.record(path, event["headers"], delivery)}

    @verify_signature(receiver=receiver, model=OrderPlaced)
    def orders(event: Event, context: Any, delivery: Delivery[OrderPlaced]) -> dict[str, Any]:
        return record(event, delivery)

    @verify_signature(receiver=receiver)
    def other(event: Event, context: Any, delivery: Delivery[Any]) -> dict[str, Any]:
        return record(event, delivery)

    @verify_signature(receiver=state.strangers)
    def strangers(event: Event, context: Any, delivery: Delivery[Any]) -> dict[str, Any]:
        return record(event, delivery)

    @verify_signature(receiver=receiver)
    def retry(event: Event, context: Any, delivery: Delivery[Any]) -> dict[str, Any]:
        raise RetryLater(RETRY_SECONDS, "warehouse busy")

    @verify_signature(receiver=receiver)
    def fail(event: Event, context: Any, delivery: Delivery[Any]) -> dict[str, Any]:
        raise NonRetryable(NOT_SHIPPABLE)

    @verify_signature(receiver=receiver, trust_forwarded=True)
    def proxied(event: Event, context: Any, delivery: Delivery[Any]) -> dict[str, Any]:
        return record(event, delivery)

    @verify_signature(receiver=receiver, public_url=state.public_url)
    def public(event: Event, context: Any, delivery: Delivery[Any]) -> dict[str, Any]:
        return record(event, delivery)

    return {
        "/orders": orders,
        "/other": other,
        "/strangers": strangers,
        "/retry": retry,
        "/fail": fail,
        "/proxied": proxied,
        "/public": public,
    }


def _body(raw: bytes, content_type: str) -> tuple[str, bool]:
    # API Gateway passes text as is and base64-encodes everything else.
    if content_type.startswith(_TEXT):
        return raw.decode(), False
    return base64.b64encode(raw).decode(), True


def rest_api_event(request: web.Request, raw: bytes) -> dict[str, Any]:
    """A REST API (payload 1.0) event: decoded query parameters, headers as sent."""
    url = urlsplit(request.raw_path)
    multi: dict[str, list[str]] = {}
    for key, value in parse_qsl(url.query, keep_blank_values=True):
        multi.setdefault(key, []).append(value)
    headers = {**request.headers, "X-Forwarded-Proto": request.scheme}
    body, encoded = _body(raw, request.content_type)
    return {
        "resource": "/{proxy+}",
        "path": url.path,
        "httpMethod": request.method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in multi.items()} or None,
        "multiValueQueryStringParameters": multi or None,
        "requestContext": {
            "path": url.path,  # a custom domain with an empty base path: no stage prefix
            "stage": "prod",
            "domainName": request.host,
            "httpMethod": request.method,
        },
        "body": body,
        "isBase64Encoded": encoded,
    }


def http_api_event(request: web.Request, raw: bytes, *, function_url: bool) -> dict[str, Any]:
    """An HTTP API payload 2.0 event (a function URL sends the same format)."""
    url = urlsplit(request.raw_path)
    headers = {k.lower(): v for k, v in request.headers.items()}
    headers["x-forwarded-proto"] = request.scheme
    body, encoded = _body(raw, request.content_type)
    domain = "abc.lambda-url.eu-west-1.on.aws" if function_url else request.host
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": url.path,
        "rawQueryString": url.query,
        "headers": headers,
        "requestContext": {
            "domainName": domain,
            "http": {"method": request.method, "path": url.path, "protocol": "HTTP/1.1"},
            "stage": "$default",
        },
        "body": body,
        "isBase64Encoded": encoded,
    }


EVENTS: dict[str, Callable[[web.Request, bytes], dict[str, Any]]] = {
    "rest-api": rest_api_event,
    "http-api": lambda r, b: http_api_event(r, b, function_url=False),
    "function-url": lambda r, b: http_api_event(r, b, function_url=True),
}


class TestAwsLambda(ReceiverContract):
    @pytest.fixture(params=sorted(EVENTS))
    async def app(
        self, request: pytest.FixtureRequest, state: AppState, proxy: Proxy
    ) -> AsyncIterator[AppUnderTest]:
        handlers = make_handlers(state)
        to_event = EVENTS[request.param]

        async def gateway(http: web.Request) -> web.Response:
            handler = handlers[http.path]
            event = to_event(http, await http.read())
            result = await asyncio.to_thread(handler, event, None)
            body = result.get("body", "")
            if result.get("isBase64Encoded"):
                body = base64.b64decode(body)
            return web.Response(
                status=result["statusCode"], body=body, headers=result.get("headers") or {}
            )

        app = web.Application()
        app.router.add_post("/{tail:.*}", gateway)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        under_test = AppUnderTest(f"http://127.0.0.1:{runner.addresses[0][1]}", state)
        proxy.target = under_test.base
        try:
            yield under_test
        finally:
            await runner.cleanup()


def test_binary_bodies_arrive_base64_encoded_and_are_verified(state: AppState) -> None:
    from relay.signing import sign

    body = b"\x00\xffbinary"
    url = "https://abc.lambda-url.eu-west-1.on.aws/orders?x=1"
    token = sign(state.relay.service.keys.current, url=url, body=body)
    seen: list[bytes] = []

    @verify_signature(receiver=state.receiver)
    def handler(event: Event, context: Any, delivery: Delivery[Any]) -> dict[str, Any]:
        seen.append(delivery.body)
        return {"statusCode": 204}

    event = {
        "version": "2.0",
        "rawPath": "/orders",
        "rawQueryString": "x=1",
        "headers": {"upstash-signature": token, "content-type": "application/octet-stream"},
        "requestContext": {"domainName": "abc.lambda-url.eu-west-1.on.aws"},
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
    }
    assert handler(event, None) == {"statusCode": 204}
    assert seen == [body]
