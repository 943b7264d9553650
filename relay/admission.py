"""Which waiting messages may start: the one rule of queues and flow control, for both backends.

A message in a queue waits for a slot of its queue; a message with a flow-control key waits for
a slot and a rate token of its key; one with both waits for its queue first. Backends keep the
state (SQLite in rows updated with the lease, AWS in conditional DynamoDB items) and ask
:func:`admit` what may pass; it is pure, so the rule is tested without a store.

- A queue is FIFO by enqueue order: its head blocks everything behind it, while it is not due
  yet too. A slot is held from the first attempt until the message is DELIVERED or FAILED, its
  retries, backoff waits and callbacks included (QStash: "the next message will be ACTIVE only
  after the last message is either DELIVERED or FAILED").
- A flow-control key limits *calls*: a slot is held for one attempt, from its start until its
  outcome is stored; every attempt, a retry too, spends a rate token. A message waiting out its
  retry backoff holds no slot of its key (it holds its queue slot).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_PERIOD_MS = 1000


@dataclass(slots=True)
class QueueGate:
    """A queue's limits and the slots in use."""

    parallelism: int = 1
    paused: bool = False
    held: int = 0


@dataclass(slots=True)
class KeyGate:
    """A flow-control key's limits (None: no limit), attempts under way and rate window."""

    parallelism: int | None = None
    rate: int | None = None
    period: int = DEFAULT_PERIOD_MS  # ms
    paused: bool = False
    running: int = 0
    window_start: int = 0  # ms
    window_count: int = 0

    def rate_count(self, now: int) -> int:
        """Tokens spent in the window running at ``now`` (0 once it has ended)."""
        return self.window_count if now < self.window_start + self.period else 0

    def take(self, now: int) -> int | None:
        """Start one attempt if the limits allow: None when taken, else when to look again
        (0: not before something else changes — a release, a resume)."""
        if self.paused or (self.parallelism is not None and self.running >= self.parallelism):
            return 0
        if now >= self.window_start + self.period:
            self.window_start, self.window_count = now, 0
        if self.rate is not None and self.window_count >= self.rate:
            return self.window_start + self.period
        self.running += 1
        self.window_count += 1
        return None


@dataclass(slots=True)
class Waiting:
    """A message waiting to start: for a slot of ``queue`` (None: it needs none, or holds one
    already), then for ``flow_key`` (None: no key)."""

    message_id: str
    due: int  # ms
    queue: str | None = None
    flow_key: str | None = None


@dataclass(slots=True)
class Admission:
    """What :func:`admit` let through."""

    queued: list[str] = field(default_factory=list)  # took a queue slot
    started: list[str] = field(default_factory=list)  # may be attempted now
    wake_at: int | None = None  # when a refused message may pass with nothing else changing

    def _wake(self, at: int) -> None:
        if at > 0:
            self.wake_at = at if self.wake_at is None else min(self.wake_at, at)


def admit(
    waiting: Sequence[Waiting],
    queues: Mapping[str, QueueGate],
    keys: Mapping[str, KeyGate],
    now: int,
) -> Admission:
    """Decide which of ``waiting`` start now, taking their slots and tokens from the gates (which
    are updated in place for the caller to store). Each queue's messages must come in queue
    order; a queue or key missing from the mappings has the defaults (parallelism 1 for a queue,
    no limits for a key)."""
    result = Admission()
    blocked: set[str] = set()
    defaults: dict[str, QueueGate] = {}
    for_key: list[Waiting] = []
    for message in waiting:
        if message.queue is None:
            for_key.append(message)
            continue
        if message.queue in blocked:
            continue
        gate = queues.get(message.queue) or defaults.setdefault(message.queue, QueueGate())
        if message.due > now or gate.paused or gate.held >= gate.parallelism:
            blocked.add(message.queue)  # the head waits, and so does everything behind it
            if message.due > now:
                result._wake(message.due)
            continue
        gate.held += 1
        result.queued.append(message.message_id)
        for_key.append(Waiting(message.message_id, message.due, None, message.flow_key))
    # A key's wait list goes by due time; a message that just took its queue slot joins it.
    for message in sorted(for_key, key=lambda m: m.due):
        if message.due > now:
            result._wake(message.due)
            continue
        if message.flow_key is not None:
            key = keys.get(message.flow_key)
            if key is not None and (retry_at := key.take(now)) is not None:
                result._wake(retry_at)
                continue
        result.started.append(message.message_id)
    return result
