"""The whole benchmark: throughput of raw loop / arq / relay, then relay publish latency; prints a
table and updates docs/benchmarks.md.

``.venv/bin/python -m bench.run`` (``make bench``). Options: ``--n``, ``--rate``, ``--duration``,
``--only``, ``--no-latency``, ``--no-doc``, ``--check`` (exit 1 when a target is missed). Exits 1
when a part fails or cannot run (e.g. the relay is not installed).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp

from bench.common import (
    CONTENDED_CORES,
    DEFAULT_N,
    DEFAULT_ROUNDS,
    DEFAULT_WARMUP,
    ROOT,
    Receiver,
    machine_busy_cores,
    machine_info,
    run_main,
)
from bench.publish_latency import format_latency, run_publish_latency
from bench.relay_proc import RELAY_MISSING, relay_available, relay_command
from bench.report import DOC_PATH, Report, console_table, write_doc
from bench.throughput import SYSTEMS, run_throughput


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="messages per throughput run")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="median of this many")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--only", default=",".join(SYSTEMS), help="throughput systems to run")
    parser.add_argument("--rate", type=float, default=500.0, help="publish-latency req/s")
    parser.add_argument("--duration", type=float, default=10.0, help="publish-latency seconds")
    parser.add_argument("--no-latency", action="store_true", help="skip the publish latency run")
    parser.add_argument("--no-doc", action="store_true", help=f"do not write {DOC_PATH.name}")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args(argv)


async def _wait_for_quiet_machine(patience: float = 30.0) -> None:
    """Give other jobs on the machine up to ``patience`` seconds to finish before measuring."""
    deadline = time.monotonic() + patience
    while (busy := await asyncio.to_thread(machine_busy_cores, 1.0)) > CONTENDED_CORES:
        if time.monotonic() > deadline:
            print(f"[run] machine still busy ({busy:.2f} cores); measuring anyway", flush=True)
            return
        print(f"[run] machine busy ({busy:.2f} cores used by others); waiting ...", flush=True)


async def amain(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    systems = [s.strip() for s in args.only.split(",") if s.strip()]
    await _wait_for_quiet_machine()
    latency = None
    async with Receiver() as receiver:
        throughput, problems = await run_throughput(
            receiver, args.n, systems=systems, rounds=args.rounds, warmup=args.warmup
        )
        if args.no_latency:
            problems["latency"] = "skipped (--no-latency)"
        elif not relay_available():
            problems["latency"] = RELAY_MISSING
        else:
            print(f"[latency] {args.rate:g} req/s for {args.duration:g}s ...", flush=True)
            try:
                latency = await run_publish_latency(
                    receiver, rate=args.rate, duration=args.duration
                )
                print(f"[latency] {format_latency(latency)}", flush=True)
            except (RuntimeError, TimeoutError, OSError, aiohttp.ClientError) as exc:
                problems["latency"] = f"{type(exc).__name__}: {exc}"
                print(f"[latency] FAILED {problems['latency']}", flush=True)
    machine = machine_info()
    if relay_available():
        machine["relay"] = " ".join(relay_command()).replace(f"{ROOT}/", "")
    report = Report(
        machine=machine,
        n=args.n,
        rounds=args.rounds,
        throughput=throughput,
        latency=latency,
        problems=problems,
    )
    print()
    print(console_table(report))
    print(f"\n(total {time.monotonic() - started:.0f}s)")
    if not args.no_doc:
        print(f"wrote {write_doc(report)}")
    failed = [k for k in problems if not (k == "latency" and args.no_latency)]
    if failed:
        print(f"failed or not run: {', '.join(failed)}")
        return 1
    if args.check and not all(c.met for c in report.checks()):
        return 1
    return 0


def main() -> None:
    raise SystemExit(run_main(amain()))


if __name__ == "__main__":
    main()
