"""Retention: what finished more than ``retention_days`` ago is deleted.

The ticker of either backend (the embedded relay's schedule ticker, the AWS scheduler Lambda)
calls :func:`purge_due` on every tick; a sweep starts at most once an hour per process and takes
at most about ``BUDGET_SECONDS`` of a tick (each ``Backend.purge`` call is bounded); a sweep not
done by then goes on at the next tick (a first purge of a large store, a backlog of expired
runs). What a purge deletes, and how each backend does it, is ``Backend.purge``'s to say.
"""

from __future__ import annotations

import logging

from relay.service import RelayService, work_for

log = logging.getLogger("relay.retention")

PASS = "retention"  # its name in RelayService.passes_due
EVERY_MS = 3_600_000  # how often a process starts a sweep
BUDGET_SECONDS = 5.0  # the most one tick spends purging (give or take one Backend.purge call)


async def purge_due(service: RelayService, now: int, *, budget: float = BUDGET_SECONDS) -> int:
    """Purge for up to ``budget`` seconds if due: an hour after this process last finished a
    sweep, or at once (the next tick) while one is under way; how many went."""
    if now < service.passes_due.get(PASS, 0):
        return 0
    before = now - service.settings.retention_days * 86_400_000
    total = 0

    async def step() -> bool:
        nonlocal total
        gone, more = await service.backend.purge(before, now)
        total += gone
        return more

    more = await work_for(budget, step)
    service.passes_due[PASS] = now if more else now + EVERY_MS
    if total:
        log.info("purged %d finished messages, runs, DLQ entries and dedup ids", total)
    return total
