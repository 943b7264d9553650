"""Flow control: `Upstash-Flow-Control-Key` with `Upstash-Flow-Control-Value` limits how many calls
to a key's destinations run at once (``parallelism``) and start per period (``rate`` per
``period``). Excess messages wait in the key's wait list; none is rejected. The rule that lets
them through is relay.admission; this module parses the headers, keeps a key's settings and
answers the management API (``/v2/flowControl``).

A key's limits are those of the latest message published with a value for it (QStash keeps
each message's own and honours the highest while older ones are pending; relay switches at
once). A message with the key and an empty value (the Python SDK sends that when given only a
key) leaves the limits as they are. ``pin`` fixes limits against later messages until ``unpin``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from relay import protocol as p
from relay.admission import DEFAULT_PERIOD_MS, KeyGate
from relay.protocol import BadRequest, NotFound

if TYPE_CHECKING:
    from relay.service import RelayService

H_KEY = "upstash-flow-control-key"
H_VALUE = "upstash-flow-control-value"
MAX_PERIOD_SECONDS = 7 * 86_400
MAX_LIMIT = 1_000_000  # parallelism and rate: far above any endpoint, inside a JSON integer
_KEY = re.compile(r"[^/\s?#%]{1,256}")


@dataclass(slots=True, frozen=True)
class FlowControl:
    """A message's flow-control headers, parsed; a limit left out is None."""

    key: str
    parallelism: int | None = None
    rate: int | None = None
    period: int | None = None  # seconds

    @property
    def limits(self) -> bool:
        """Whether the value set any limit (an empty one sets none)."""
        return (self.parallelism, self.rate, self.period) != (None, None, None)


def parse(key: str | None, value: str | None) -> FlowControl | None:
    """The flow control of a publish's headers; BadRequest naming what is wrong."""
    if key is None:
        if value is not None and value.strip():
            raise BadRequest("Upstash-Flow-Control-Value needs an Upstash-Flow-Control-Key")
        return None
    key = key.strip()
    check_key(key)
    limits: dict[str, int] = {}
    for part in (value or "").split(","):
        if not part.strip():
            continue
        name, sep, raw = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in ("parallelism", "rate", "period"):
            raise BadRequest(
                f"invalid Upstash-Flow-Control-Value part {part.strip()!r}: use"
                " parallelism=<n>, rate=<n>, period=<duration>"
            )
        if name == "period":
            limits[name] = parse_period(raw.strip())
        else:
            limits[name] = p.parse_int(
                raw, what=f"flow-control {name}", minimum=1, maximum=MAX_LIMIT
            )
    return FlowControl(key, limits.get("parallelism"), limits.get("rate"), limits.get("period"))


def parse_period(raw: str) -> int:
    """A rate period in whole seconds: a duration (``10s``, ``2m``, ``1h``) or bare seconds."""
    seconds = p.parse_duration(raw, what="flow-control period")
    if not 1 <= seconds <= MAX_PERIOD_SECONDS or seconds != int(seconds):
        raise BadRequest(
            f"invalid flow-control period {raw!r}: whole seconds from 1s to 1 week (7d)"
        )
    return int(seconds)


def check_key(key: str) -> None:
    if not _KEY.fullmatch(key):
        raise BadRequest(
            f"invalid flow-control key {key!r}: 1 to 256 characters, no spaces, '/', '?', '#'"
            " or '%'"
        )


@dataclass(slots=True)
class FlowKey:
    """What a backend keeps of one key: its limits (None: none), pins and pause, and its rate
    window. The attempts under way and the wait list are counted from the messages."""

    key: str
    parallelism: int | None = None
    rate: int | None = None
    period: int = DEFAULT_PERIOD_MS  # ms
    paused: bool = False
    pinned_parallelism: bool = False
    pinned_rate: bool = False
    window_start: int = 0  # ms
    window_count: int = 0

    def configured(self, given: FlowControl) -> FlowKey:
        """The key after a message with ``given`` is accepted: its limits, where not pinned."""
        if not given.limits:
            return self
        changed = replace(self)
        if not self.pinned_parallelism:
            changed.parallelism = given.parallelism
        if not self.pinned_rate:
            changed.rate = given.rate
            changed.period = (given.period or 1) * 1000
        return changed

    def gate(self, running: int) -> KeyGate:
        return KeyGate(
            parallelism=self.parallelism,
            rate=self.rate,
            period=self.period,
            paused=self.paused,
            running=running,
            window_start=self.window_start,
            window_count=self.window_count,
        )

    def with_window(self, gate: KeyGate) -> FlowKey:
        """The key with the rate window ``gate`` ended with."""
        return replace(self, window_start=gate.window_start, window_count=gate.window_count)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FlowKey:
        return cls(**record)


@dataclass(slots=True)
class FlowKeyUsage:
    """A key with what its messages do now: attempts under way, messages due and waiting."""

    key: FlowKey
    running: int
    waiting: int


def info_json(usage: FlowKeyUsage, now: int) -> dict[str, Any]:
    """The FlowControlInfo of ``GET /v2/flowControl/{key}`` (period in seconds, start in unix
    seconds, 0 for a limit that is not set)."""
    key = usage.key
    gate = key.gate(usage.running)
    return {
        "flowControlKey": key.key,
        "waitListSize": usage.waiting,
        "parallelismMax": key.parallelism or 0,
        "parallelismCount": usage.running,
        "rateMax": key.rate or 0,
        "rateCount": gate.rate_count(now),
        "ratePeriod": key.period // 1000,
        "ratePeriodStart": key.window_start // 1000,
        "isPaused": key.paused,
        "isPinnedParallelism": key.pinned_parallelism,
        "isPinnedRate": key.pinned_rate,
    }


# --- the management API (relay.http.queue_api) ----------------------------------------------


async def get_info(service: RelayService, key: str) -> dict[str, Any]:
    now = service.clock.now_ms()
    found = await service.backend.flow_keys(now, [key])
    if not found:
        raise NotFound(f"flow-control key {key!r} not found")
    return info_json(found[0], now)


async def list_info(service: RelayService, search: str | None = None) -> list[dict[str, Any]]:
    """Every key, or those whose name contains ``search``."""
    now = service.clock.now_ms()
    found = await service.backend.flow_keys(now)
    return [info_json(u, now) for u in found if not search or search in u.key.key]


async def change(
    service: RelayService,
    key: str,
    *,
    paused: bool | None = None,
    pin: FlowControl | None = None,
    unpin: tuple[bool, bool] = (False, False),
    reset_rate: bool = False,
) -> None:
    """Pause or resume a key, pin or unpin its limits, or start a new rate window now; a key
    not seen yet is made, so that it can be set up before its first message."""
    check_key(key)
    now = service.clock.now_ms()

    def apply(state: FlowKey) -> FlowKey:
        state = replace(state)
        if paused is not None:
            state.paused = paused
        if pin is not None:
            if pin.parallelism is not None:
                state.parallelism, state.pinned_parallelism = pin.parallelism, True
            if pin.rate is not None or pin.period is not None:
                state.rate = pin.rate if pin.rate is not None else state.rate
                state.period = pin.period * 1000 if pin.period is not None else state.period
                state.pinned_rate = True
        unpin_parallelism, unpin_rate = unpin
        if unpin_parallelism:
            state.pinned_parallelism = False
        if unpin_rate:
            state.pinned_rate = False
        if reset_rate:
            state.window_start, state.window_count = now, 0
        return state

    await service.backend.change_flow_key(key, apply, now)
    service.notify_listeners()


async def global_parallelism(service: RelayService) -> dict[str, int]:
    """``GET /v2/globalParallelism``: attempts under way, and how many may run at once (the
    embedded worker's concurrency; on AWS, per delivery function instance)."""
    running = await service.backend.in_flight(service.clock.now_ms())
    return {
        "parallelismMax": service.settings.delivery_concurrency,
        "parallelismCount": running,
    }
