"""The waiters' indexes (relay.workflows.waiters finds waiters through them, never by reading
every one), their one-time migration, and the wake-ups of deadlines.

Each waiter has two entries: in the *deadline index* (kind ``DUE``, key ``due_key``: 13 digits of
ms, then the waiter's key, so key order is deadline order), read by key range (``due``,
``next_deadline``, ``arm_entering``); and in the *run index* (kind ``OF_RUN``: the run id, then
the deadline index key), read by the run's key prefix (``of_run``). A wait puts them before its
waiter (``index``), a claim drops them after deleting it (``unindex``): a crash between leaves
entries without a waiter (stale: expiry drops them when due).

Waiters stored before the indexes existed are indexed once (``migration_due``, ``migrated``),
by the first pass that finds the setting ``_INDEXED`` absent (overlapping passes put the same
entries).

Wake-ups: a backend that brings them (``wake_reach``: AWS, by SQS delay, up to 15 minutes ahead)
gets one per deadline, and the delivery runtime runs ``waiters.expire`` for it (``TIMER``). A wait
arms its own deadline if it is within reach (``arm``); a later one is armed by the first pass that
sees it within reach (``arm_entering``), the setting ``_ARMED`` keeping how far passes armed. A
wake-up that finds its waiter answered, or comes twice, does nothing: answering is a claim.
"""

from __future__ import annotations

from typing import Any, Protocol

from relay.service import RelayService

DUE = "workflow_waiter_due"  # the deadline index: an entry per waiter, keys in deadline order
OF_RUN = "workflow_waiter_of_run"  # the run index: an entry per waiter, <run id>\0<its due_key>
_KINDS = (DUE, OF_RUN)
TIMER = "workflow_waiter"  # the wake-up's name: the delivery runtime runs ``waiters.expire``
_ARMED = "workflow_waiters_armed"  # setting: passes sent the wake-ups of deadlines up to it (ms)
_INDEXED = "workflow_waiters_indexed"  # setting: the waiters stored before the index have entries
_NEVER = 2**63 - 1  # ms: a pass of RelayService.passes_due not due again
_LAST_DUE = 10**13 - 1  # ms: the last deadline the index keys tell apart


class Indexed(Protocol):
    """What the indexes keep of a waiter (``waiters.Waiter``)."""

    @property
    def key(self) -> str: ...
    @property
    def run_id(self) -> str: ...
    @property
    def deadline(self) -> int: ...
    @property
    def created_at(self) -> int: ...


def due_key(deadline: int, key: str) -> str:
    """A waiter's deadline index key: key order is deadline order (13 digits of ms)."""
    return f"{_due_bound(deadline)}\0{key}"


def _due_bound(deadline: int) -> str:
    """The index keys below this are those of deadlines before ``deadline`` (one past 13 digits,
    some time in 2286, is kept at the last 13-digit instant, lest it sort as due now)."""
    return f"{min(deadline, _LAST_DUE):013d}"


def _entry_key(kind: str, run_id: str, deadline: int, key: str) -> str:
    """A waiter's key in index ``kind``; the run index's is per deadline too (a wait stored
    again with another deadline has entries of its own; the stale ones go as those do)."""
    due = due_key(deadline, key)
    return due if kind == DUE else f"{run_id}\0{due}"


# --- writing and reading ------------------------------------------------------------------------


async def index(service: RelayService, waiter: Indexed) -> None:
    """The waiter's entries in both indexes (put before the waiter)."""
    entry = {
        "key": waiter.key,
        "runId": waiter.run_id,
        "deadline": waiter.deadline,
        "createdAt": waiter.created_at,
    }
    for kind in _KINDS:
        key = _entry_key(kind, waiter.run_id, waiter.deadline, waiter.key)
        await service.backend.put_record(kind, key, entry)


async def unindex(service: RelayService, run_id: str, deadline: int, key: str) -> None:
    """Drop a waiter's entries (after the waiter)."""
    for kind in _KINDS:
        await service.backend.delete_record(kind, _entry_key(kind, run_id, deadline, key))


async def due(service: RelayService, now: int) -> list[dict[str, Any]]:
    """The deadline index entries due at ``now``."""
    return await service.backend.list_records(DUE, stop=_due_bound(now + 1))


async def next_deadline(service: RelayService, now: int) -> int | None:
    """The first deadline after ``now`` (ms), if any."""
    after = await service.backend.list_records(DUE, start=_due_bound(now + 1), limit=1)
    return int(after[0]["deadline"]) if after else None


async def of_run(service: RelayService, run_id: str) -> list[dict[str, Any]]:
    """The run index entries of ``run_id``'s waiters."""
    return await service.backend.list_records(OF_RUN, f"{run_id}\0")


# --- the migration -----------------------------------------------------------------------------


async def migration_due(service: RelayService) -> bool:
    """Whether the waiters stored before the indexes existed may lack entries: until a process
    sees the setting ``_INDEXED`` set (then it reads it no more: ``passes_due``, never due)."""
    if _INDEXED in service.passes_due:
        return False
    if await service.backend.get_setting(_INDEXED) is None:
        return True
    service.passes_due[_INDEXED] = _NEVER
    return False


async def migrated(service: RelayService) -> None:
    """Mark the waiters stored before the indexes indexed."""
    await service.backend.put_setting(_INDEXED, "1", if_absent=True)
    service.passes_due[_INDEXED] = _NEVER


# --- wake-ups ----------------------------------------------------------------------------------


async def arm(service: RelayService, deadline: int, now: int) -> None:
    """A new wait's wake-up, if its deadline is within the backend's reach."""
    reach = service.backend.wake_reach
    if reach is not None and deadline - now <= reach:
        await service.backend.wake_at(TIMER, deadline, now)


async def arm_entering(service: RelayService, now: int) -> None:
    """Send the wake-ups of deadlines beyond reach at their wait that are within it now, each
    once: the index entries after ``_ARMED`` up to this pass's horizon, which ``_ARMED`` then
    moves to (after the sends: a crash between repeats them, harmless; and only forward, by a
    conditional write). Concurrent passes may send one twice (harmless); a wait registered
    while a pass lists, with a timeout a few milliseconds over the reach, can be missed: the
    scheduler's pass answers it then."""
    reach = service.backend.wake_reach
    if reach is None:
        return
    horizon = now + reach
    stored = await service.backend.get_setting(_ARMED)
    armed = max(int(stored or 0), now)
    if armed >= horizon:
        return
    entering = await service.backend.list_records(
        DUE, start=_due_bound(armed + 1), stop=_due_bound(horizon + 1)
    )
    late = {int(e["deadline"]) for e in entering if e["deadline"] - e["createdAt"] > reach}
    for deadline in sorted(late):
        await service.backend.wake_at(TIMER, deadline, now)
    if entering:
        await service.backend.put_setting(
            _ARMED, str(horizon), if_absent=stored is None, replacing=stored
        )
