"""relay.receiver.aiohttp.verify_signature on a real aiohttp server over 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.receiver import RELAY_BODY, RELAY_JSON, Receiver, verify_signature
from relay.signing import SigningKeys, generate_keys, sign

BODY = b'{"order":42}'


class Hook:
    """A test app: guarded handlers that record what they were given."""

    def __init__(self, keys: SigningKeys) -> None:
        self.seen: list[tuple[bytes, Any]] = []
        receiver = Receiver(keys.current, keys.next)
        self.app = web.Application()
        self.app.router.add_post("/hook", verify_signature(receiver=receiver)(self.handle))
        self.app.router.add_post(
            "/fixed",
            verify_signature(receiver=receiver, url="https://public.example/fixed")(self.handle),
        )
        self.app.router.add_post("/env", verify_signature(self.handle))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request[RELAY_BODY], request[RELAY_JSON]))
        return web.json_response({"ok": True})


@pytest.fixture
def keys() -> SigningKeys:
    return generate_keys()


@pytest.fixture
async def hook(keys: SigningKeys) -> AsyncIterator[tuple[Hook, TestServer]]:
    app = Hook(keys)
    server = TestServer(app.app, host="127.0.0.1")
    await server.start_server()
    try:
        yield app, server
    finally:
        await server.close()


async def _post(
    server: TestServer,
    path: str,
    body: bytes,
    signature: str | None,
    content_type: str = "application/json",
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": content_type}
    if signature is not None:
        headers["Upstash-Signature"] = signature
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.make_url(path), data=body, headers=headers) as response,
    ):
        return response.status, json.loads(await response.read())


async def test_signed_post_is_accepted(hook: tuple[Hook, TestServer], keys: SigningKeys) -> None:
    app, server = hook
    url = str(server.make_url("/hook"))
    status, answer = await _post(server, "/hook", BODY, sign(keys.current, url=url, body=BODY))
    assert (status, answer) == (200, {"ok": True})
    assert app.seen == [(BODY, {"order": 42})]


async def test_next_key_is_accepted(hook: tuple[Hook, TestServer], keys: SigningKeys) -> None:
    _, server = hook
    url = str(server.make_url("/hook"))
    status, _ = await _post(server, "/hook", BODY, sign(keys.next, url=url, body=BODY))
    assert status == 200


async def test_non_json_body_is_passed_raw(
    hook: tuple[Hook, TestServer], keys: SigningKeys
) -> None:
    app, server = hook
    body = b"\x00\xffbinary"
    url = str(server.make_url("/hook"))
    signature = sign(keys.current, url=url, body=body)
    status, _ = await _post(server, "/hook", body, signature, "application/octet-stream")
    assert status == 200
    assert app.seen == [(body, None)]


async def test_tampered_body_is_refused(hook: tuple[Hook, TestServer], keys: SigningKeys) -> None:
    app, server = hook
    url = str(server.make_url("/hook"))
    signature = sign(keys.current, url=url, body=BODY)
    status, answer = await _post(server, "/hook", b'{"order":43}', signature)
    assert status == 401
    assert answer == {"error": "body hash does not match the request body"}
    assert app.seen == []


async def test_wrong_key_is_refused(hook: tuple[Hook, TestServer]) -> None:
    app, server = hook
    url = str(server.make_url("/hook"))
    signature = sign(generate_keys().current, url=url, body=BODY)
    status, answer = await _post(server, "/hook", BODY, signature)
    assert status == 401
    assert "does not match the current or the next signing key" in answer["error"]
    assert app.seen == []


async def test_expired_token_is_refused(hook: tuple[Hook, TestServer], keys: SigningKeys) -> None:
    app, server = hook
    url = str(server.make_url("/hook"))
    signature = sign(keys.current, url=url, body=BODY, now=int(time.time()) - 600)
    status, answer = await _post(server, "/hook", BODY, signature)
    assert status == 401
    assert answer["error"].startswith("token expired")
    assert app.seen == []


async def test_token_for_another_url_is_refused(
    hook: tuple[Hook, TestServer], keys: SigningKeys
) -> None:
    _, server = hook
    signature = sign(keys.current, url="https://elsewhere.example/hook", body=BODY)
    status, answer = await _post(server, "/hook", BODY, signature)
    assert status == 401
    assert answer["error"].startswith("URL mismatch")


async def test_missing_signature_is_refused(hook: tuple[Hook, TestServer]) -> None:
    _, server = hook
    status, answer = await _post(server, "/hook", BODY, None)
    assert (status, answer) == (401, {"error": "missing Upstash-Signature header"})


async def test_garbage_signature_is_refused_not_crashed(hook: tuple[Hook, TestServer]) -> None:
    _, server = hook
    status, answer = await _post(server, "/hook", BODY, "garbage")
    assert (status, answer) == (401, {"error": "signature is not a well-formed JWT"})


async def test_fixed_url_replaces_the_request_url(
    hook: tuple[Hook, TestServer], keys: SigningKeys
) -> None:
    # Behind a proxy the public URL the relay signed for differs from what aiohttp sees.
    _, server = hook
    signature = sign(keys.current, url="https://public.example/fixed", body=BODY)
    status, _ = await _post(server, "/fixed", BODY, signature)
    assert status == 200


async def test_signed_invalid_json_is_a_bad_request(
    hook: tuple[Hook, TestServer], keys: SigningKeys
) -> None:
    app, server = hook
    url = str(server.make_url("/hook"))
    body = b"{not json"
    status, answer = await _post(server, "/hook", body, sign(keys.current, url=url, body=body))
    assert (status, answer) == (400, {"error": "body is not valid JSON"})
    assert app.seen == []


async def test_bare_decorator_reads_keys_from_env(
    hook: tuple[Hook, TestServer], keys: SigningKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QSTASH_CURRENT_SIGNING_KEY", keys.current)
    monkeypatch.setenv("QSTASH_NEXT_SIGNING_KEY", keys.next)
    app, server = hook
    url = str(server.make_url("/env"))
    status, _ = await _post(server, "/env", BODY, sign(keys.current, url=url, body=BODY))
    assert status == 200
    assert app.seen == [(BODY, {"order": 42})]
