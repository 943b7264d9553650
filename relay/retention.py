"""Retention: what finished more than ``retention_days`` ago is deleted.

The ticker of either backend (the embedded relay's schedule ticker, the AWS scheduler Lambda)
calls :func:`purge_due` on every tick; it purges at most once an hour per process, for at most
a few seconds a tick (a backlog of expired runs is worked off over the next ticks). What a purge
deletes, and how each backend does it, is ``Backend.purge``'s to say.
"""

from __future__ import annotations

import logging
import time

from relay.service import RelayService

log = logging.getLogger("relay.retention")

PASS = "retention"  # its name in RelayService.passes_due
EVERY_MS = 3_600_000  # how often a process purges
BUDGET_SECONDS = 5.0  # the most one tick spends purging


async def purge_due(service: RelayService, now: int) -> int:
    """Purge if an hour passed since this process last finished a purge; how many went."""
    if now < service.passes_due.get(PASS, 0):
        return 0
    before = now - service.settings.retention_days * 86_400_000
    deadline = time.monotonic() + BUDGET_SECONDS
    total = 0
    while gone := await service.backend.purge(before, now):
        total += gone
        if time.monotonic() > deadline:
            return total  # the rest on the next tick
    service.passes_due[PASS] = now + EVERY_MS
    if total:
        log.info("purged %d finished messages, runs, DLQ entries and dedup ids", total)
    return total
