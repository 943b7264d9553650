"""relay.http.lambda_adapter: HTTP API payload 2.0 / function URL events in, proxy results out,
through the same route table as the aiohttp app (here over a real SQLite backend)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay import protocol as p
from relay.backends.sqlite import SqliteBackend
from relay.clock import ManualClock
from relay.config import Settings
from relay.http.api import ApiResponse
from relay.http.lambda_adapter import handle_event, request_from_event, result_from_response
from relay.service import RelayService
from relay.signing import SigningKeys


def event(
    method: str = "POST",
    raw_path: str = "/v2/publish/https://example.com/hook",
    raw_query: str = "",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    base64_body: bool = False,
    stage: str = "$default",
    cookies: list[str] | None = None,
) -> dict[str, Any]:
    """An event as API Gateway sends it: headers lower-cased, raw path and query."""
    built: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": {"authorization": f"Bearer {p.DEV_TOKEN}", **(headers or {})},
        "requestContext": {
            "http": {"method": method, "path": raw_path, "sourceIp": "203.0.113.9"},
            "stage": stage,
        },
        "isBase64Encoded": base64_body,
    }
    if body is not None:
        built["body"] = base64.b64encode(body).decode() if base64_body else body.decode()
    if cookies:
        built["cookies"] = cookies
    return built


def test_raw_path_and_query_keep_the_destination_intact() -> None:
    request = request_from_event(
        event(raw_path="/v2/publish/https://example.com/a%20b", raw_query="x=1&note=two%20words")
    )
    assert request.method == "POST"
    assert request.path == "/v2/publish/https://example.com/a%20b"
    assert request.query == "x=1&note=two%20words"
    assert request.remote == "203.0.113.9"


def test_base64_body_is_decoded() -> None:
    raw = bytes(range(256))
    assert request_from_event(event(body=raw, base64_body=True)).body == raw
    assert request_from_event(event(body="Zoë".encode())).body == "Zoë".encode()
    assert request_from_event(event(body=None)).body == b""


def test_cookies_come_back_as_one_header() -> None:
    request = request_from_event(event(cookies=["a=1", "b=2"]))
    assert request.header("Cookie") == "a=1; b=2"


def test_a_named_stage_is_taken_off_the_path() -> None:
    request = request_from_event(event(raw_path="/prod/v2/messages/msg_1", stage="prod"))
    assert request.path == "/v2/messages/msg_1"


def test_json_answers_are_text_and_binary_answers_base64() -> None:
    text = result_from_response(ApiResponse.json({"messageId": "msg_1"}, 201))
    assert text == {
        "statusCode": 201,
        "headers": {"Content-Type": "application/json"},
        "body": '{"messageId":"msg_1"}',
        "isBase64Encoded": False,
    }
    binary = result_from_response(ApiResponse(200, b"\xff\x00", {"Content-Type": "x/y"}))
    assert binary["isBase64Encoded"] is True
    assert base64.b64decode(binary["body"]) == b"\xff\x00"


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[RelayService]:
    backend = SqliteBackend(tmp_path / "relay.db")
    await backend.open()
    try:
        yield RelayService(
            backend,
            Settings(),
            keys=SigningKeys(p.DEV_CURRENT_SIGNING_KEY, p.DEV_NEXT_SIGNING_KEY),
            token=p.DEV_TOKEN,
            clock=ManualClock(),
        )
    finally:
        await backend.close()


async def test_publish_and_read_back_through_events(service: RelayService) -> None:
    published = await handle_event(
        service,
        event(
            raw_path="/v2/publish/https://example.com/hook",
            raw_query="tenant=a",
            body=b'{"id":1}',
            headers={"content-type": "application/json", "upstash-delay": "10s"},
        ),
        max_request_bytes=1000,
    )
    assert published["statusCode"] == 201, published
    message_id = json.loads(published["body"])["messageId"]
    fetched = await handle_event(
        service, event("GET", f"/v2/messages/{message_id}"), max_request_bytes=1000
    )
    assert fetched["statusCode"] == 200
    message = json.loads(fetched["body"])
    assert message["url"] == "https://example.com/hook?tenant=a"
    assert message["body"] == '{"id":1}'


async def test_errors_are_qstash_shaped(service: RelayService) -> None:
    unauthorized = await handle_event(
        service, event(headers={"authorization": "Bearer nope"}), max_request_bytes=1000
    )
    assert unauthorized["statusCode"] == 401
    assert "error" in json.loads(unauthorized["body"])
    too_big = await handle_event(service, event(body=b"x" * 1001), max_request_bytes=1000)
    assert too_big["statusCode"] == 413
