"""The relay's delivery throughput: publish N messages with ``POST /v2/batch`` (100 per call) and
time from the first publish to the N-th verified delivery at the receiver."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp

from bench.common import CpuMeter, Receiver, ThroughputResult, make_body
from bench.relay_proc import RelayProcess

BATCH_SIZE = 100


def batch_payload(destination: str, ids: range) -> bytes:
    """The exact array the Python SDK's ``batch`` sends (4 keys per item)."""
    items: list[dict[str, Any]] = [
        {"destination": destination, "headers": {}, "body": make_body(i).decode(), "queue": None}
        for i in ids
    ]
    return json.dumps(items).encode()


async def publish_batches(
    session: aiohttp.ClientSession,
    relay: RelayProcess,
    destination: str,
    n: int,
    *,
    batch_size: int = BATCH_SIZE,
    concurrency: int = 1,
) -> int:
    """Publish ids 0..n-1 in batches; returns the number of message ids the relay answered."""
    url = f"{relay.base}/v2/batch"
    headers = {**relay.auth_headers, "Content-Type": "application/json"}
    chunks: Iterator[range] = (
        range(start, min(start + batch_size, n)) for start in range(0, n, batch_size)
    )
    accepted = 0

    async def publisher() -> None:
        nonlocal accepted
        for ids in chunks:
            payload = batch_payload(destination, ids)
            async with session.post(url, data=payload, headers=headers) as r:
                text = await r.text()
                if r.status >= 300:
                    raise RuntimeError(f"POST /v2/batch answered {r.status}: {text[:300]}")
            answer = json.loads(text)
            if not isinstance(answer, list) or len(answer) != len(ids):
                raise RuntimeError(f"unexpected /v2/batch answer: {text[:300]}")
            accepted += sum(1 for item in answer if isinstance(item, dict) and "messageId" in item)

    await asyncio.gather(*(publisher() for _ in range(concurrency)))
    return accepted


async def run_relay_throughput(
    receiver: Receiver,
    n: int,
    *,
    warmup: int = 500,
    batch_size: int = BATCH_SIZE,
    publish_concurrency: int = 1,
    timeout: float = 180.0,
) -> ThroughputResult:
    async with RelayProcess() as relay, aiohttp.ClientSession() as session:
        if warmup:
            await receiver.reset(warmup)
            await publish_batches(session, relay, receiver.hook_url, warmup, batch_size=batch_size)
            await receiver.wait(timeout)
        await receiver.reset(n)
        meter = CpuMeter([receiver.pid, relay.process.pid])
        meter.start()
        t0 = time.monotonic()
        accepted = await publish_batches(
            session,
            relay,
            receiver.hook_url,
            n,
            batch_size=batch_size,
            concurrency=publish_concurrency,
        )
        t_published = time.monotonic() - t0
        stats = await receiver.wait(timeout)
        cpu = meter.stop()
        # Anything still arriving shortly after the N-th is a duplicate or a stray retry.
        await asyncio.sleep(0.5)
        final = await receiver.stats()
    return ThroughputResult(
        name="relay",
        n=n,
        seconds=stats["t_target"] - t0,
        delivered=final["count"],
        bad_signatures=final["bad"],
        duplicates=final["duplicates"],
        extra={
            "publish_seconds": t_published,
            "accepted": accepted,
            "publish_concurrency": publish_concurrency,
            **cpu,
        },
    )
