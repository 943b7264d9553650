"""Publish latency: an open-loop generator at a fixed rate (default 500 req/s for 10 s) doing single
``POST /v2/publish/<receiver url>`` calls against ``relay dev``; per-request latency percentiles.

Open loop: request i is issued at ``t0 + i/rate`` whether or not earlier ones have answered (each
request is its own task; the connection pool is unbounded). Two latencies are recorded:
- service latency: from issuing the request to reading the whole response;
- corrected latency: from the *scheduled* send time, so a stalled generator or server cannot hide
  queueing (no coordinated omission). The difference includes the generator's own timer lag
  (asyncio sleeps have ~1 ms granularity), reported as ``send lag``.

``python -m bench.publish_latency [--rate 500] [--duration 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

import aiohttp

from bench.common import CpuMeter, LatencyResult, Receiver, make_body, percentile, run_main
from bench.relay_proc import RELAY_MISSING, RelayProcess, relay_available

QUANTILES = (50.0, 90.0, 99.0, 99.9)


def _summary(values_s: list[float]) -> dict[str, float]:
    out = {f"p{q:g}": percentile(values_s, q) * 1000 for q in QUANTILES}
    out["max"] = max(values_s) * 1000 if values_s else float("nan")
    out["mean"] = sum(values_s) / len(values_s) * 1000 if values_s else float("nan")
    return out


async def _open_loop(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    rate: float,
    duration: float,
    first_id: int,
) -> tuple[list[float], list[float], list[float], int, float, float]:
    """Fire ``rate * duration`` publishes on schedule.

    Returns service latencies, corrected latencies, send lags (s), error count, first send, last
    completion."""
    total = round(rate * duration)
    service: list[float] = []
    corrected: list[float] = []
    lags: list[float] = []
    errors = 0
    last_done = 0.0

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors, last_done
        body = make_body(first_id + i)
        sent = time.monotonic()
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                ok = resp.status < 300
        except aiohttp.ClientError:
            ok = False
        done = time.monotonic()
        last_done = max(last_done, done)
        if not ok:
            errors += 1
            return
        service.append(done - sent)
        corrected.append(done - scheduled)
        lags.append(sent - scheduled)

    tasks: list[asyncio.Task[None]] = []
    t0 = time.monotonic() + 0.01
    for i in range(total):
        scheduled = t0 + i / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    return service, corrected, lags, errors, t0, last_done


async def run_publish_latency(
    receiver: Receiver,
    *,
    rate: float = 500.0,
    duration: float = 10.0,
    warmup_seconds: float = 1.0,
    delivery_timeout: float = 30.0,
) -> LatencyResult:
    async with RelayProcess() as relay:
        url = f"{relay.base}/v2/publish/{receiver.hook_url}"
        headers = {**relay.auth_headers, "Content-Type": "application/json"}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            if warmup_seconds > 0:
                warm = round(rate * warmup_seconds)
                await receiver.reset(warm)
                await _open_loop(session, url, headers, rate, warmup_seconds, 10_000_000)
                await receiver.wait(delivery_timeout)
            total = round(rate * duration)
            await receiver.reset(total)
            meter = CpuMeter([receiver.pid, relay.process.pid])
            meter.start()
            service, corrected, lags, errors, t0, last_done = await _open_loop(
                session, url, headers, rate, duration, 0
            )
            with contextlib.suppress(TimeoutError):  # reported as "delivered" below
                await receiver.wait(delivery_timeout)
            stats = await receiver.stats()
            cpu = meter.stop()
    ok = len(service)
    return LatencyResult(
        target_rate=rate,
        duration=duration,
        sent=total,
        ok=ok,
        errors=errors,
        achieved_rate=ok / (last_done - t0) if last_done > t0 else float("nan"),
        service_ms=_summary(service),
        corrected_ms=_summary(corrected),
        delivered=stats["count"],
        extra={
            "send_lag_p99_ms": percentile(lags, 99) * 1000,
            "bad_signatures": stats["bad"],
            "duplicates": stats["duplicates"],
            **cpu,
        },
    )


def format_latency(r: LatencyResult) -> str:
    def fmt(d: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.2f}" for k, v in d.items())

    return (
        f"{r.ok}/{r.sent} ok at {r.achieved_rate:.0f} req/s (target {r.target_rate:.0f}), "
        f"errors {r.errors}, delivered {r.delivered}\n"
        f"  service ms:   {fmt(r.service_ms)}\n"
        f"  corrected ms: {fmt(r.corrected_ms)}\n"
        f"  send lag p99 {r.extra['send_lag_p99_ms']:.2f} ms; bad signatures "
        f"{r.extra['bad_signatures']}, duplicates {r.extra['duplicates']}; "
        f"CPU of other processes {r.extra['foreign_cores']:.2f} cores"
    )


async def amain(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="open-loop publish latency benchmark")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds at the same rate")
    args = parser.parse_args(argv)
    if not relay_available():
        print(RELAY_MISSING)
        return 1
    async with Receiver() as receiver:
        result = await run_publish_latency(
            receiver, rate=args.rate, duration=args.duration, warmup_seconds=args.warmup
        )
    print(format_latency(result))
    return 0


def main() -> None:
    raise SystemExit(run_main(amain()))


if __name__ == "__main__":
    main()
