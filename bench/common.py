"""Shared pieces: constants, ports, subprocess helpers, the receiver handle, result records."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOST = "127.0.0.1"

# QStash dev-server credentials (`relay dev` uses the same ones).
DEV_TOKEN = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="
DEV_CURRENT_KEY = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
DEV_NEXT_KEY = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"
DEV_KEYS: tuple[str, str] = (DEV_CURRENT_KEY, DEV_NEXT_KEY)

CONCURRENCY = 64  # in-flight deliveries for the raw loop and the arq worker (max_jobs)
DEFAULT_N = 10_000
DEFAULT_ROUNDS = 3
DEFAULT_WARMUP = 500
PAYLOAD_PAD = "x" * 64
CONTENDED_CORES = 0.2  # CPU used by other processes (in cores) above which a run is "disturbed"


def make_body(i: int) -> bytes:
    """The message body used by every system: ~90 bytes of JSON."""
    return json.dumps({"i": i, "pad": PAYLOAD_PAD}, separators=(",", ":")).encode()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an unsorted list; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class ThroughputResult:
    name: str
    n: int
    seconds: float
    delivered: int
    bad_signatures: int = 0
    duplicates: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else math.nan

    @property
    def foreign_cores(self) -> float:
        return float(self.extra.get("foreign_cores", 0.0))

    @property
    def disturbed(self) -> bool:
        return self.foreign_cores > CONTENDED_CORES


@dataclass
class LatencyResult:
    target_rate: float
    duration: float
    sent: int
    ok: int
    errors: int
    achieved_rate: float
    service_ms: dict[str, float]  # from the moment the request was issued
    corrected_ms: dict[str, float]  # from the scheduled send time (no coordinated omission)
    delivered: int
    extra: dict[str, Any] = field(default_factory=dict)


def run_main(main: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run(main)``, with SIGTERM (e.g. from ``timeout``) cancelling the main task like
    Ctrl-C does, so every ``async with`` unwinds and the child processes are stopped."""

    async def wrapper() -> int:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main

    try:
        return asyncio.run(wrapper())
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("interrupted; child processes stopped", file=sys.stderr)
        return 130


_LIVE: set[ManagedProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    for process in list(_LIVE):
        process.stop(timeout=2)


class ManagedProcess:
    """A child process whose output goes to a log file; stopped with SIGTERM, then SIGKILL
    (also at interpreter exit, should a caller forget)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(self.env or {})},
        )
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        assert self.proc is not None, "start() first"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        _LIVE.discard(self)

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):
            self.log_path.unlink()


async def wait_http(url: str, proc: ManagedProcess | None, timeout: float = 20.0) -> None:
    """Poll ``url`` until it answers any HTTP status; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            if proc is not None and not proc.alive():
                raise RuntimeError(f"{proc.name} exited during startup:\n{proc.log_tail()}")
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    await resp.read()
                    return
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                tail = proc.log_tail() if proc is not None else ""
                raise TimeoutError(f"{url} did not answer within {timeout:.0f}s\n{tail}")
            await asyncio.sleep(0.05)


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _system_busy_seconds() -> float:
    """CPU seconds spent by all CPUs outside idle/iowait since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def _process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads); 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class CpuMeter:
    """How much CPU the benchmark's own processes and everything else used over a window.

    ``foreign`` = machine-wide busy time minus the listed processes' time, in cores: another job
    on the machine (tests, a build) shows up there and marks the run as disturbed. /proc
    resolution is 10 ms, so windows under a second are rough.
    """

    def __init__(self, pids: list[int]) -> None:
        self.pids = [os.getpid(), *pids]
        self._start: tuple[float, float, float] | None = None

    def _sample(self) -> tuple[float, float, float]:
        ours = sum(_process_cpu_seconds(pid) for pid in self.pids)
        return time.monotonic(), _system_busy_seconds(), ours

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> dict[str, float]:
        assert self._start is not None, "CpuMeter.start() first"
        t0, busy0, ours0 = self._start
        t1, busy1, ours1 = self._sample()
        elapsed = max(t1 - t0, 1e-9)
        ours = (ours1 - ours0) / elapsed
        return {"ours_cores": ours, "foreign_cores": max(0.0, (busy1 - busy0) / elapsed - ours)}


def machine_busy_cores(seconds: float = 1.0) -> float:
    """Cores' worth of CPU the whole machine used over ``seconds`` (blocking)."""
    b0, t0 = _system_busy_seconds(), time.monotonic()
    time.sleep(seconds)
    return (_system_busy_seconds() - b0) / (time.monotonic() - t0)


class Receiver:
    """Handle on the counting receiver running in its own process (``python -m bench.receiver``).

    Timestamps it reports are ``time.monotonic()`` values, i.e. CLOCK_MONOTONIC on Linux, which is
    system-wide and so comparable with the driver's own ``time.monotonic()``.
    """

    def __init__(self, keys: tuple[str, ...] = DEV_KEYS, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.hook_url = f"{self.base}/hook"
        self.process = ManagedProcess(
            "receiver",
            [PYTHON, "-m", "bench.receiver", "--port", str(self.port), "--keys", ",".join(keys)],
        )
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Receiver:
        self.process.start()
        await wait_http(f"{self.base}/_bench/stats", self.process)
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
        self.process.stop()
        self.process.cleanup()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use Receiver as an async context manager"
        return self._session

    async def reset(self, target: int) -> None:
        """Zero the counters; the receiver records when the ``target``-th valid delivery arrives."""
        async with self.session.post(f"{self.base}/_bench/reset", json={"target": target}) as r:
            r.raise_for_status()

    async def stats(self) -> dict[str, Any]:
        async with self.session.get(f"{self.base}/_bench/stats") as r:
            r.raise_for_status()
            data: dict[str, Any] = await r.json()
            return data

    async def wait(self, timeout: float) -> dict[str, Any]:
        """Block until the target count is reached; returns stats incl. ``t_target``."""
        async with self.session.get(
            f"{self.base}/_bench/wait",
            params={"timeout": str(timeout)},
            timeout=aiohttp.ClientTimeout(total=timeout + 10),
        ) as r:
            r.raise_for_status()
            data: dict[str, Any] = await r.json()
        if data.get("t_target") is None:
            raise TimeoutError(
                f"receiver got {data['count']}/{data['target']} valid deliveries in {timeout:.0f}s "
                f"(bad signatures: {data['bad']}, first errors: {data['errors']})"
            )
        return data


def machine_info() -> dict[str, str]:
    import platform
    from importlib import metadata

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for dist in ("aiohttp", "arq", "redis"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{dist} {metadata.version(dist)}")
    redis_version = "not installed"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=5
        ).stdout
        redis_version = out.split("v=", 1)[1].split()[0] if "v=" in out else out.strip()
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "libraries": ", ".join(versions),
        "redis-server": redis_version,
    }
