"""An in-memory stand-in for ``relay dev``, to measure the harness floor (not a relay!).

Accepts ``POST /v2/batch`` and ``POST /v2/publish/<url>`` with the dev token, queues messages in
memory and delivers them signed with 64 tasks: no database, no retries, no state. Run the
benchmark against it with::

    BENCH_RELAY_CMD=".venv/bin/python -m bench.standin_relay" .venv/bin/python -m bench.run \\
        --only relay --no-doc
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from bench.common import CONCURRENCY, DEV_CURRENT_KEY, DEV_TOKEN, HOST
from relay.signing import sign

Item = tuple[str, str, bytes]  # message id, destination, body
QUEUE = web.AppKey("queue", asyncio.Queue[Item])
TASKS = web.AppKey("tasks", list[asyncio.Task[None]])


def _authorize(request: web.Request) -> None:
    if request.headers.get("Authorization") != f"Bearer {DEV_TOKEN}":
        raise web.HTTPUnauthorized(text='{"error":"unauthorized"}', content_type="application/json")


def _message_id() -> str:
    return "msg_" + secrets.token_hex(12)


async def batch(request: web.Request) -> web.Response:
    _authorize(request)
    answer = []
    for item in await request.json():
        message_id = _message_id()
        body = (item.get("body") or "").encode()
        request.app[QUEUE].put_nowait((message_id, item["destination"], body))
        answer.append({"messageId": message_id})
    return web.json_response(answer)


async def publish(request: web.Request) -> web.Response:
    _authorize(request)
    destination = request.raw_path[len("/v2/publish/") :]
    message_id = _message_id()
    request.app[QUEUE].put_nowait((message_id, destination, await request.read()))
    return web.json_response({"messageId": message_id}, status=201)


async def index(request: web.Request) -> web.Response:
    return web.Response(text="stand-in relay")


async def _deliver_forever(queue: asyncio.Queue[Item], session: aiohttp.ClientSession) -> None:
    while True:
        message_id, destination, body = await queue.get()
        headers = {
            "Upstash-Signature": sign(DEV_CURRENT_KEY, url=destination, body=body),
            "Upstash-Message-Id": message_id,
        }
        try:
            async with session.post(destination, data=body, headers=headers) as resp:
                await resp.read()
        except aiohttp.ClientError:
            pass


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY))
    app[TASKS] = [
        asyncio.create_task(_deliver_forever(app[QUEUE], session)) for _ in range(CONCURRENCY)
    ]
    yield
    for task in app[TASKS]:
        task.cancel()
    await asyncio.gather(*app[TASKS], return_exceptions=True)
    await session.close()


def make_app() -> web.Application:
    app = web.Application()
    app[QUEUE] = asyncio.Queue()
    app.router.add_post("/v2/batch", batch)
    app.router.add_post("/v2/publish/{destination:.*}", publish)
    app.router.add_get("/", index)
    app.cleanup_ctx.append(_lifecycle)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="in-memory stand-in for `relay dev`")
    parser.add_argument("command", choices=["dev"])
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", help="ignored")
    args = parser.parse_args(argv)
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
