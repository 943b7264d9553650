"""Bad input: a clear QStash-shaped error with the right status, and nothing stored."""

from __future__ import annotations

import pytest

from relay.server import EmbeddedRelay
from tests.conftest import Api, Receiver

BAD_HEADERS = [
    ({"Upstash-Delay": "soon"}, "Upstash-Delay"),
    ({"Upstash-Delay": "-5s"}, "Upstash-Delay"),
    ({"Upstash-Delay": "400d"}, "Upstash-Delay"),
    ({"Upstash-Retries": "many"}, "Upstash-Retries"),
    ({"Upstash-Retries": "-1"}, "Upstash-Retries"),
    ({"Upstash-Retries": "1000"}, "Upstash-Retries"),
    ({"Upstash-Retry-Delay": "__import__('os')"}, "retry delay"),
    ({"Upstash-Retry-Delay": "retried ** 2"}, "retry delay"),
    ({"Upstash-Method": "BREW"}, "method"),
    ({"Upstash-Timeout": "0s"}, "Upstash-Timeout"),
    ({"Upstash-Not-Before": "tomorrow"}, "Upstash-Not-Before"),
    ({"Upstash-Callback": "ftp://x"}, "callback"),
    ({"Upstash-Callback": "http://127.0.0.1:1/cb", "Upstash-Callback-Retries": "x"}, "callback"),
]


@pytest.mark.parametrize(("headers", "mentions"), BAD_HEADERS)
async def test_bad_headers(
    api: Api, receiver: Receiver, headers: dict[str, str], mentions: str
) -> None:
    status, answer = await api.call(
        "POST", "/v2/publish/" + receiver.url("/v"), data="x", headers=headers
    )
    assert status == 400
    assert mentions.lower() in answer["error"].lower()
    assert await api.events() == []


@pytest.mark.parametrize("destination", ["ftp://example.com/x", "http://", "https:///nohost"])
async def test_bad_url(api: Api, destination: str) -> None:
    status, answer = await api.call("POST", "/v2/publish/" + destination, data="x")
    assert status == 400 and "url" in answer["error"]
    assert await api.events() == []


async def test_missing_destination(api: Api) -> None:
    status, answer = await api.call("POST", "/v2/publish/", data="x")
    assert status in (400, 404) and answer["error"]


async def test_oversized_body(relay: EmbeddedRelay, api: Api, receiver: Receiver) -> None:
    body = b"x" * (relay.settings.max_body_bytes + 1)
    status, answer = await api.call("POST", "/v2/publish/" + receiver.url("/big"), data=body)
    assert status == 413 and "limit" in answer["error"]
    assert await api.events() == []


async def test_missing_and_wrong_token(relay: EmbeddedRelay, api: Api, receiver: Receiver) -> None:
    url = relay.url + "/v2/publish/" + receiver.url("/auth")
    async with api.session.post(url, data="x") as response:
        assert response.status == 401
        assert "token" in (await response.json())["error"]
    async with api.session.post(
        url, data="x", headers={"Authorization": "Bearer nope"}
    ) as response:
        assert response.status == 401
        assert (await response.json())["error"] == "invalid token"
    assert await api.events() == []


async def test_unknown_route_and_method(api: Api) -> None:
    status, answer = await api.call("GET", "/v2/nothing-here")
    assert status == 404 and answer["error"]
    status, answer = await api.call("PUT", "/v2/batch")
    assert status == 405 and answer["error"]


async def test_url_group_not_found(api: Api) -> None:
    status, answer = await api.call("POST", "/v2/publish/my-group", data="x")
    assert status == 404 and "my-group" in answer["error"]
