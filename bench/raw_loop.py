"""Baseline A, the "raw loop": one aiohttp client signing and POSTing N messages, 64 in flight.

This is the ceiling for a Python relay on this machine: no persistence, no queue, nothing but
sign + HTTP POST from one asyncio event loop to the receiver process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp

from bench.common import (
    CONCURRENCY,
    DEV_CURRENT_KEY,
    CpuMeter,
    Receiver,
    ThroughputResult,
    make_body,
)
from relay.signing import sign


async def _post_all(
    session: aiohttp.ClientSession,
    url: str,
    ids: range,
    key: str,
    concurrency: int,
    prefix: str,
) -> int:
    """POST every message in ``ids`` with ``concurrency`` workers; returns the number of non-2xx."""
    failures = 0
    it: Iterator[int] = iter(ids)

    async def worker() -> None:
        nonlocal failures
        for i in it:
            body = make_body(i)
            headers = {
                "Content-Type": "application/json",
                "Upstash-Signature": sign(key, url=url, body=body),
                "Upstash-Message-Id": f"{prefix}_{i}",
            }
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status >= 300:
                    failures += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures


async def run_raw(
    receiver: Receiver,
    n: int,
    *,
    warmup: int = 500,
    concurrency: int = CONCURRENCY,
    key: str = DEV_CURRENT_KEY,
    timeout: float = 120.0,
) -> ThroughputResult:
    url = receiver.hook_url
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        if warmup:
            await receiver.reset(warmup)
            await _post_all(session, url, range(warmup), key, concurrency, "warm")
            await receiver.wait(timeout)
        await receiver.reset(n)
        meter = CpuMeter([receiver.pid])
        meter.start()
        t0 = time.monotonic()
        failures = await _post_all(session, url, range(n), key, concurrency, "raw")
        t_client = time.monotonic() - t0
        stats = await receiver.wait(timeout)
        cpu = meter.stop()
    return ThroughputResult(
        name="raw loop",
        n=n,
        seconds=stats["t_target"] - t0,
        delivered=stats["count"],
        bad_signatures=stats["bad"],
        duplicates=stats["duplicates"],
        extra={"client_seconds": t_client, "non_2xx": failures, **cpu},
    )
