"""The arq worker process for baseline B: ``python -m bench.arq_worker --redis-port P --url U``.

One job = sign the body with ``relay.signing.sign`` and POST it to the receiver through one
aiohttp session shared by all jobs. arq defaults except ``max_jobs`` (64) and ``poll_delay`` (set by
the driver, see bench.arq_baseline). Per-job logging is off (no log handler is configured), which
only helps arq.
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
from arq.connections import RedisSettings
from arq.worker import func, run_worker

from relay.signing import sign


async def deliver(ctx: dict[str, Any], body: bytes, message_id: str) -> int:
    session: aiohttp.ClientSession = ctx["session"]
    url: str = ctx["url"]
    headers = {
        "Content-Type": "application/json",
        "Upstash-Signature": sign(ctx["key"], url=url, body=body),
        "Upstash-Message-Id": message_id,
    }
    async with session.post(url, data=body, headers=headers) as resp:
        await resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"receiver answered {resp.status}")
        return resp.status


async def startup(ctx: dict[str, Any]) -> None:
    connector = aiohttp.TCPConnector(limit=ctx["max_jobs"])
    ctx["session"] = aiohttp.ClientSession(connector=connector)
    print("READY", flush=True)


async def shutdown(ctx: dict[str, Any]) -> None:
    session: aiohttp.ClientSession | None = ctx.get("session")
    if session is not None:
        await session.close()


class WorkerSettings:
    functions = [func(deliver, name="deliver")]
    on_startup = startup
    on_shutdown = shutdown


def main(argv: list[str] | None = None) -> None:
    from bench.common import CONCURRENCY, DEV_CURRENT_KEY, HOST

    parser = argparse.ArgumentParser(description="arq worker for the relay benchmark")
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--url", required=True, help="receiver URL")
    parser.add_argument("--key", default=DEV_CURRENT_KEY)
    parser.add_argument("--max-jobs", type=int, default=CONCURRENCY)
    parser.add_argument("--poll-delay", type=float, default=0.5, help="arq default: 0.5 s")
    args = parser.parse_args(argv)
    run_worker(
        WorkerSettings,  # type: ignore[arg-type]
        redis_settings=RedisSettings(host=HOST, port=args.redis_port),
        max_jobs=args.max_jobs,
        poll_delay=args.poll_delay,
        ctx={"url": args.url, "key": args.key, "max_jobs": args.max_jobs},
    )


if __name__ == "__main__":
    main()
