"""The waiters' indexes (relay.workflows.waiters finds waiters through them, never by reading
every one), the sweep that keeps them complete, and the wake-ups of deadlines.

Each waiter has two entries: in the *deadline index* (kind ``DUE``, key ``due_key``: 13 digits of
ms, then the waiter's key, so key order is deadline order), read by key range (``due``,
``next_deadline``, ``arm_entering``); and in the *run index* (kind ``OF_RUN``: the run id, then
the deadline index key), read by the run's key prefix (``of_run``). A wait puts them before its
waiter (``index``), a claim drops them after deleting it (``unindex``): a crash between leaves
entries without a waiter (stale: expiry drops them when due).

A waiter stored without entries (before the indexes existed, or by an older version still
serving during a rolling deploy) would never time out: the *sweep* (``sweep``) reads the
waiters in key order, a page at a time, reads each one's two entries by key and puts those
missing (``index_missing``, by ``index``: the rule a wait follows). A pass sweeps for at most
``SWEEP_BUDGET_SECONDS``; a sweep not done goes on at the process's next pass, from the key it
got to (kept in the setting ``_SWEEP_AT``, beside the claim ``_SWEPT`` that lets one process
sweep at a time); the next sweep starts an hour after one is done. Listing the index key
ranges instead would not bound the work: a page of waiters (ordered by event id) has deadlines
and runs all over both indexes. The first sweep on a store is the migration to the indexes.

Wake-ups: a backend that brings them (``wake_reach``: AWS, by SQS delay, up to 15 minutes ahead)
gets one per deadline, and the delivery runtime runs ``waiters.expire`` for it (``TIMER``). A wait
arms its own deadline if it is within reach (``arm``); a later one is armed by the first pass that
sees it within reach (``arm_entering``), the setting ``_ARMED`` keeping how far passes armed. A
wake-up that finds its waiter answered, or comes twice, does nothing: answering is a claim.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from relay.service import RelayService, work_for

DUE = "workflow_waiter_due"  # the deadline index: an entry per waiter, keys in deadline order
OF_RUN = "workflow_waiter_of_run"  # the run index: an entry per waiter, <run id>\0<its due_key>
_KINDS = (DUE, OF_RUN)
TIMER = "workflow_waiter"  # the wake-up's name: the delivery runtime runs ``waiters.expire``
_ARMED = "workflow_waiters_armed"  # setting: passes sent the wake-ups of deadlines up to it (ms)
SWEEP = "workflow-waiter-sweep"  # its name in RelayService.passes_due
_SWEPT = "workflow_waiters_swept"  # setting: when (ms) a pass last swept (``_sweep_from``)
_SWEEP_AT = "workflow_waiters_sweep_at"  # setting: the waiter key a sweep under way got to
SWEEP_EVERY_MS = 3_600_000  # from a sweep done to the next
SWEEP_PAGE = 100  # waiters listed at a time (on DynamoDB one Query page, ~100 KB at most)
SWEEP_BUDGET_SECONDS = 2.0  # the most one pass spends sweeping (give or take one page)
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


# --- the sweep ----------------------------------------------------------------------------------

Page = Callable[[str, int], Awaitable[Sequence[Indexed]]]
"""The stored waiters whose key comes after a key ("": from the first), in key order, at most
so many (relay.workflows.waiters lists them)."""


async def sweep(service: RelayService, now: int, waiters_after: Page) -> int:
    """Go on with the sweep if this pass is to (``_sweep_from``): pages of ``SWEEP_PAGE``
    waiters from where it got to, for up to ``SWEEP_BUDGET_SECONDS`` (and one page), putting
    the entries missing; then note how far it got. How many waiters it indexed."""
    claim = await _sweep_from(service, now)
    if claim is None:
        return 0
    mark, position = claim
    found = 0

    async def step() -> bool:
        nonlocal found, position
        page = await waiters_after(position, SWEEP_PAGE)
        found += await index_missing(service, page)
        if len(page) < SWEEP_PAGE:
            return False
        position = page[-1].key
        return True

    more = await work_for(SWEEP_BUDGET_SECONDS, step)
    held = await _mark(service, mark, str(now))
    if held and more:
        await service.backend.put_setting(_SWEEP_AT, position)
    elif held:
        await service.backend.delete_setting(_SWEEP_AT)
    service.passes_due[SWEEP] = now if held and more else now + SWEEP_EVERY_MS
    return found


async def _sweep_from(service: RelayService, now: int) -> tuple[str, str] | None:
    """Whether this pass sweeps: the setting ``_SWEPT`` as this pass holds it, and the key
    the sweep goes on after ("": the first waiter); None: not this pass.

    ``_SWEPT`` says when (ms) a pass last swept, ``_SWEEP_AT`` how far a sweep under way got
    (absent: none is). The process that stored ``_SWEPT`` goes on at its next pass; any other
    due starts the next sweep an hour after one was done, or takes one under way over (from
    where it got to) an hour after its last pass, by a compare-and-set that one of them wins
    (passes at the same ms may both win, and sweep alike). Otherwise one dict look-up, or once
    an hour a read of the setting. (``_SWEPT`` stays a number: the versions before
    ``_SWEEP_AT`` read it so.)"""
    if now < service.passes_due.get(SWEEP, 0):
        return None
    db = service.backend
    stored = await db.get_setting(_SWEPT)
    if stored is not None and stored == service.pass_marks.get(SWEEP):
        position = await db.get_setting(_SWEEP_AT)
        if position is not None:
            return stored, position
    if stored is not None and now < int(stored) + SWEEP_EVERY_MS:
        service.passes_due[SWEEP] = int(stored) + SWEEP_EVERY_MS
        return None
    service.passes_due[SWEEP] = now + SWEEP_EVERY_MS
    claim = str(now)
    if not await _mark(service, stored, claim):
        return None
    return claim, await db.get_setting(_SWEEP_AT) or ""


async def _mark(service: RelayService, stored: str | None, value: str) -> bool:
    """Store ``value`` in ``_SWEPT`` if ``stored`` is still there; whether this process holds
    the sweep now (``RelayService.pass_marks`` keeps what it stored)."""
    won = await service.backend.put_setting(
        _SWEPT, value, if_absent=stored is None, replacing=stored
    )
    if won == value:
        service.pass_marks[SWEEP] = value
    else:
        service.pass_marks.pop(SWEEP, None)
    return won == value


async def index_missing(service: RelayService, stored: Sequence[Indexed]) -> int:
    """Put the entries of the waiters ``stored`` that lack one; how many. Reads each waiter's
    entries by key (at most two reads a waiter, concurrently), and writes only for what is
    missing. A waiter answered since it was listed gets stale entries, dropped when due. A
    deadline within reach already is not armed: the scheduler's pass (every minute) answers it."""
    indexed = await asyncio.gather(*(_indexed(service, w) for w in stored))
    missing = [w for w, found in zip(stored, indexed, strict=True) if not found]
    for waiter in missing:
        await index(service, waiter)
    return len(missing)


async def _indexed(service: RelayService, waiter: Indexed) -> bool:
    """Whether both of the waiter's entries are stored (the second is read only if the first is)."""
    for kind in _KINDS:
        key = _entry_key(kind, waiter.run_id, waiter.deadline, waiter.key)
        if await service.backend.get_record(kind, key) is None:
            return False
    return True


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
