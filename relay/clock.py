"""Time and ids, passed in so that delays, backoff and expiry are tested without sleeping."""

from __future__ import annotations

import secrets
import time
from typing import Protocol

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class Clock(Protocol):
    """Milliseconds since the epoch."""

    def now_ms(self) -> int: ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)


class ManualClock:
    """A clock that moves only when told to: for tests of delays and backoff."""

    def __init__(self, start_ms: int | None = None) -> None:
        self._now = int(time.time() * 1000) if start_ms is None else start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> None:
        self._now += ms


class OffsetClock:
    """The wall clock moved by ``offset_ms``: `relay dev` with ``RELAY_CLOCK_OFFSET_SECONDS``, to
    see time-based behaviour (a cron schedule's next fire) without waiting for it."""

    def __init__(self, offset_ms: int) -> None:
        self.offset_ms = offset_ms

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.offset_ms


def random_id(prefix: str, length: int = 27) -> str:
    """``prefix`` + ``length`` random base58 characters, like QStash's ``msg_…`` ids."""
    # One read of the OS's randomness, spelled out in base58 (27 digits hold 158 bits).
    number = int.from_bytes(secrets.token_bytes(length * 6 // 8 + 1), "big")
    digits = []
    for _ in range(length):
        number, digit = divmod(number, 58)
        digits.append(_B58[digit])
    return prefix + "".join(digits)


class Ids:
    """The id generator; replace it to get predictable ids."""

    def message_id(self) -> str:
        return random_id("msg_")

    def dlq_id(self, now_ms: int) -> str:
        # QStash's DLQ ids look like `1725323658779-0`; ours add randomness after the time.
        return f"{now_ms}-{secrets.randbelow(10**9)}"

    def schedule_id(self) -> str:
        return random_id("scd_")
