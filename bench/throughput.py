"""Delivery throughput of the raw loop, arq + Redis and the relay, against one receiver process.

``python -m bench.throughput [--n 10000] [--rounds 3] [--only raw,arq,relay]``
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import aiohttp

from bench.arq_baseline import RedisUnavailable, run_arq
from bench.common import (
    DEFAULT_N,
    DEFAULT_ROUNDS,
    DEFAULT_WARMUP,
    Receiver,
    ThroughputResult,
    run_main,
)
from bench.raw_loop import run_raw
from bench.relay_proc import RELAY_MISSING, relay_available
from bench.relay_throughput import run_relay_throughput

SYSTEMS = ("raw", "arq", "relay")


async def _run_one(
    system: str, receiver: Receiver, n: int, warmup: int, publish_concurrency: int
) -> ThroughputResult:
    if system == "raw":
        return await run_raw(receiver, n, warmup=warmup)
    if system == "arq":
        return await run_arq(receiver, n, warmup=warmup)
    if system == "relay":
        if not relay_available():
            raise FileNotFoundError(RELAY_MISSING)
        return await run_relay_throughput(
            receiver, n, warmup=warmup, publish_concurrency=publish_concurrency
        )
    raise ValueError(f"unknown system {system!r}")


async def run_throughput(
    receiver: Receiver,
    n: int,
    *,
    systems: Sequence[str] = SYSTEMS,
    rounds: int = DEFAULT_ROUNDS,
    warmup: int = DEFAULT_WARMUP,
    publish_concurrency: int = 1,
    log: bool = True,
) -> tuple[dict[str, list[ThroughputResult]], dict[str, str]]:
    """Run ``rounds`` rounds, each running every system once (interleaved, so drift in machine
    speed hits all systems alike). Returns the runs per system and, per system, why it was
    skipped or failed (a system that fails is not retried in later rounds)."""
    results: dict[str, list[ThroughputResult]] = {s: [] for s in systems}
    problems: dict[str, str] = {}
    for round_no in range(1, rounds + 1):
        for system in systems:
            if system in problems:
                continue
            if log:
                print(f"[throughput {round_no}/{rounds}] {system}: {n} messages ...", flush=True)
            try:
                result = await _run_one(system, receiver, n, warmup, publish_concurrency)
            except (
                RedisUnavailable,
                FileNotFoundError,
                RuntimeError,
                TimeoutError,
                OSError,
                aiohttp.ClientError,
            ) as exc:
                problems[system] = f"{type(exc).__name__}: {exc}"
                if log:
                    print(f"[throughput] {system}: FAILED {problems[system]}", flush=True)
                continue
            results[system].append(result)
            if log:
                print(f"[throughput {round_no}/{rounds}] {system}: {format_result(result)}")
    return {s: runs for s, runs in results.items() if runs}, problems


def median_run(runs: Sequence[ThroughputResult]) -> ThroughputResult:
    """The run with the median rate (the lower middle one for an even count), among the runs no
    other process disturbed when there are any."""
    clean = [r for r in runs if not r.disturbed] or list(runs)
    ordered = sorted(clean, key=lambda r: r.rate)
    return ordered[(len(ordered) - 1) // 2]


def format_result(r: ThroughputResult) -> str:
    extra = ", ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.extra.items()
    )
    return (
        f"{r.rate:,.0f} msg/s ({r.n} in {r.seconds:.2f}s; delivered {r.delivered}, "
        f"bad signatures {r.bad_signatures}, duplicates {r.duplicates}; {extra})"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="delivery throughput benchmark")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="messages per system")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="median of this many")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--only", default=",".join(SYSTEMS), help="comma list of raw,arq,relay")
    parser.add_argument("--publish-concurrency", type=int, default=1, help="batch calls in flight")
    return parser.parse_args(argv)


async def amain(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    systems = [s.strip() for s in args.only.split(",") if s.strip()]
    async with Receiver() as receiver:
        results, problems = await run_throughput(
            receiver,
            args.n,
            systems=systems,
            rounds=args.rounds,
            warmup=args.warmup,
            publish_concurrency=args.publish_concurrency,
        )
    medians = {s: median_run(runs) for s, runs in results.items()}
    for system, runs in results.items():
        rates = ", ".join(f"{r.rate:,.0f}" for r in runs)
        print(f"{system}: median {medians[system].rate:,.0f} msg/s (runs: {rates})")
    relay = medians.get("relay")
    if relay is not None:
        for base in ("raw", "arq"):
            if base in medians:
                print(f"relay / {base}: {relay.rate / medians[base].rate:.2f}x")
    return 1 if problems else 0


def main() -> None:
    raise SystemExit(run_main(amain()))


if __name__ == "__main__":
    main()
