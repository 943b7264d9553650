"""Baseline B, "arq + Redis": Debian's redis-server on port 6390, one arq worker process
(max_jobs 64, poll_delay 0.05 s) whose job signs and POSTs the body to the receiver.

Timing runs from the first ``enqueue_job`` to the N-th delivery at the receiver, like the relay's
"first publish to N-th delivery". arq has no bulk enqueue, so the driver enqueues with 64
concurrent ``enqueue_job`` calls while the worker is already draining the queue.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from bench.common import (
    CONCURRENCY,
    DEV_CURRENT_KEY,
    HOST,
    PYTHON,
    CpuMeter,
    ManagedProcess,
    Receiver,
    ThroughputResult,
    make_body,
    port_open,
)

REDIS_PORT = 6390
# arq's default poll_delay (0.5 s) caps this setup at ~610 msg/s; 0.05 s gives ~900 msg/s and
# lower values no more, so the baseline uses the faster setting (in arq's favour).
ARQ_POLL_DELAY = 0.05


class RedisUnavailable(RuntimeError):
    pass


class RedisServer:
    """``redis-server --bind 127.0.0.1 --port 6390 --daemonize yes --save "" --appendonly no``,
    with its log/pid/dir in a temporary directory; shut down (nosave) on exit."""

    def __init__(self, port: int = REDIS_PORT) -> None:
        self.port = port
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-redis-"))

    def __enter__(self) -> RedisServer:
        if shutil.which("redis-server") is None:
            raise RedisUnavailable(
                "redis-server is not installed (Debian: apt-get install -y redis-server)"
            )
        if port_open(self.port):
            raise RedisUnavailable(f"port {self.port} is already in use; stop that process first")
        subprocess.run(
            [
                "redis-server",
                "--bind", HOST,
                "--port", str(self.port),
                "--daemonize", "yes",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.tmp),
                "--logfile", str(self.tmp / "redis.log"),
                "--pidfile", str(self.tmp / "redis.pid"),
            ],
            check=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self._ping():
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"redis-server did not start; see {self.tmp / 'redis.log'}")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        return int((self.tmp / "redis.pid").read_text().strip())

    def _ping(self) -> bool:
        result = subprocess.run(
            ["redis-cli", "-h", HOST, "-p", str(self.port), "ping"],
            capture_output=True,
            text=True,
        )
        return result.stdout.strip() == "PONG"

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        subprocess.run(
            ["redis-cli", "-h", HOST, "-p", str(self.port), "shutdown", "nosave"],
            capture_output=True,
        )
        deadline = time.monotonic() + 10
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(self.tmp, ignore_errors=True)


async def _enqueue_all(pool: ArqRedis, ids: range, prefix: str, concurrency: int) -> None:
    it = iter(ids)

    async def enqueuer() -> None:
        for i in it:
            job = await pool.enqueue_job("deliver", make_body(i), f"{prefix}_{i}")
            if job is None:
                raise RuntimeError(f"job {prefix}_{i} was not enqueued")

    await asyncio.gather(*(enqueuer() for _ in range(concurrency)))


async def run_arq(
    receiver: Receiver,
    n: int,
    *,
    warmup: int = 500,
    max_jobs: int = CONCURRENCY,
    key: str = DEV_CURRENT_KEY,
    timeout: float = 180.0,
    redis_port: int = REDIS_PORT,
    poll_delay: float = ARQ_POLL_DELAY,
) -> ThroughputResult:
    with RedisServer(redis_port) as redis:
        worker = ManagedProcess(
            "arq-worker",
            [
                PYTHON, "-m", "bench.arq_worker",
                "--redis-port", str(redis_port),
                "--url", receiver.hook_url,
                "--key", key,
                "--max-jobs", str(max_jobs),
                "--poll-delay", str(poll_delay),
            ],
        )  # fmt: skip
        worker.start()
        pool = await create_pool(RedisSettings(host=HOST, port=redis_port))
        try:
            deadline = time.monotonic() + 20
            while "READY" not in worker.log_tail():
                if not worker.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"arq worker did not start:\n{worker.log_tail()}")
                await asyncio.sleep(0.05)
            if warmup:
                await receiver.reset(warmup)
                await _enqueue_all(pool, range(warmup), "warm", CONCURRENCY)
                await receiver.wait(timeout)
            await receiver.reset(n)
            meter = CpuMeter([receiver.pid, worker.pid, redis.pid])
            meter.start()
            t0 = time.monotonic()
            await _enqueue_all(pool, range(n), "arq", CONCURRENCY)
            t_enqueued = time.monotonic() - t0
            stats = await receiver.wait(timeout)
            cpu = meter.stop()
        finally:
            await pool.aclose()
            worker.stop()
            worker.cleanup()
    return ThroughputResult(
        name="arq + Redis",
        n=n,
        seconds=stats["t_target"] - t0,
        delivered=stats["count"],
        bad_signatures=stats["bad"],
        duplicates=stats["duplicates"],
        extra={"enqueue_seconds": t_enqueued, "poll_delay": poll_delay, **cpu},
    )
