"""Readiness: whether the store takes a write and gives it back, for ``GET /readyz``."""

from __future__ import annotations

import asyncio
import secrets
import time
import weakref

from relay.backends.base import Backend

HEARTBEAT_SETTING = "heartbeat"
READY_TIMEOUT = 2.0  # seconds: a probe must answer before its own timeout (1 s to 10 s, usually)
# The probe is public (no token): however often it is called, the store is written at most once
# a second per process.
READY_MAX_AGE = 1.0

_recent: weakref.WeakKeyDictionary[Backend, tuple[float, str | None]] = weakref.WeakKeyDictionary()


async def store_problem(
    backend: Backend,
    now: int,
    *,
    timeout: float = READY_TIMEOUT,
    max_age: float = READY_MAX_AGE,
) -> str | None:
    """None if the store took a heartbeat write and read it back (within the last
    ``max_age`` seconds), else what went wrong.

    Several processes may share a store (Lambda containers): a newer heartbeat read back is as
    good as our own.
    """
    checked = _recent.get(backend)
    if checked is not None and time.monotonic() - checked[0] < max_age:
        return checked[1]
    problem = await _round_trip(backend, now, timeout)
    _recent[backend] = (time.monotonic(), problem)
    return problem


async def _round_trip(backend: Backend, now: int, timeout: float) -> str | None:
    beat = f"{now:013d}:{secrets.token_hex(4)}"
    try:
        async with asyncio.timeout(timeout):
            await backend.put_setting(HEARTBEAT_SETTING, beat)
            read = await backend.get_setting(HEARTBEAT_SETTING)
    except TimeoutError:
        return f"the store did not answer a write and a read within {timeout:g}s"
    except Exception as exc:
        return f"the store failed a write and a read: {type(exc).__name__}: {exc}"
    if read is None or read < beat:
        return "the store did not give back the heartbeat it was given"
    return None
