"""The counting receiver: an aiohttp app that verifies `Upstash-Signature` and counts deliveries.

It runs in its own process (``python -m bench.receiver --port P --keys K1,K2``) so that the sender
under test and the receiver do not share one event loop: on a loopback benchmark the sending loop is
the bottleneck, and a shared loop would charge the receiver's work to whichever system is measured.

Endpoints:
- ``POST /hook`` (and any ``/hook/...`` path): the destination. 200 when the signature verifies
  (HS256 over the body, ``sub`` == the request URL), else 401.
- ``POST /_bench/reset`` ``{"target": N}``: zero the counters and arm the N-th-delivery timestamp.
- ``GET /_bench/stats``: counters as JSON.
- ``GET /_bench/wait?timeout=S``: long-poll until the target is reached (or S seconds), then stats.

Timestamps are ``time.monotonic()`` (CLOCK_MONOTONIC, system-wide on Linux).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from aiohttp import web

from relay.signing import SignatureError, verify

MAX_ERRORS_KEPT = 5


class Counter:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.reset(0)

    def reset(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.bad = 0
        self.duplicates = 0
        self.seen: set[str] = set()
        self.errors: list[str] = []
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.t_target: float | None = None
        self.reached = asyncio.Event()
        if target <= 0:
            self.reached.set()

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "count": self.count,
            "bad": self.bad,
            "duplicates": self.duplicates,
            "errors": self.errors,
            "t_first": self.t_first,
            "t_last": self.t_last,
            "t_target": self.t_target,
        }


COUNTER = web.AppKey("counter", Counter)


async def hook(request: web.Request) -> web.Response:
    counter = request.app[COUNTER]
    body = await request.read()
    token = request.headers.get("Upstash-Signature", "")
    url = f"http://{request.host}{request.raw_path}"
    try:
        verify(token, counter.keys, body=body, url=url)
    except SignatureError as exc:
        counter.bad += 1
        if len(counter.errors) < MAX_ERRORS_KEPT:
            counter.errors.append(str(exc))
        return web.Response(status=401, text=str(exc))
    now = time.monotonic()
    message_id = request.headers.get("Upstash-Message-Id")
    if message_id is not None:
        if message_id in counter.seen:
            counter.duplicates += 1
        else:
            counter.seen.add(message_id)
    counter.count += 1
    if counter.t_first is None:
        counter.t_first = now
    counter.t_last = now
    if counter.count == counter.target:
        counter.t_target = now
        counter.reached.set()
    return web.Response(text="ok")


async def reset(request: web.Request) -> web.Response:
    data = await request.json()
    request.app[COUNTER].reset(int(data.get("target", 0)))
    return web.json_response({"ok": True})


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[COUNTER].as_dict())


async def wait(request: web.Request) -> web.Response:
    counter = request.app[COUNTER]
    timeout = float(request.query.get("timeout", "60"))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(counter.reached.wait(), timeout)
    return web.json_response(counter.as_dict())


def make_app(keys: tuple[str, ...]) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[COUNTER] = Counter(keys)
    app.router.add_post("/hook", hook)
    app.router.add_post("/hook/{tail:.*}", hook)
    app.router.add_post("/_bench/reset", reset)
    app.router.add_get("/_bench/stats", stats)
    app.router.add_get("/_bench/wait", wait)
    return app


def main(argv: list[str] | None = None) -> None:
    from bench.common import DEV_KEYS, HOST

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keys", default=",".join(DEV_KEYS), help="comma-separated signing keys")
    args = parser.parse_args(argv)
    keys = tuple(k for k in args.keys.split(",") if k)
    web.run_app(make_app(keys), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
