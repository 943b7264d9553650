"""The recovery pass (on the ticker, so also soon after a start): finishes what a crash
interrupted between a decision and its result entry, so no run is left waiting forever.

- a Wait step claimed (or being claimed) whose result was not published: ``waiters.recover``;
- an invoked run's result claimed but not published: its stored intent, delivered again;
- an invoked run that ended but whose end was not followed up (the parent not told, its
  waiters not dropped): ``runs.ended`` again, which is idempotent.

Passes may overlap (two scheduler invocations on AWS, a slow one and the next): each intent is
re-published only by the pass that claims it (``outbox.claim``).
"""

from __future__ import annotations

from relay.service import RelayService
from relay.workflows import invoke, outbox, runs, waiters

UNREPORTED = "workflow-unreported"  # its name in RelayService.passes_due


async def recover(service: RelayService, now: int) -> int | None:
    """Run the pass at ``now`` (ms); when the next intent left becomes stale, for a ticker
    that sleeps until then."""
    intents = await outbox.stored(service)
    stale = outbox.stale(intents, now)
    await waiters.recover(service, stale, now)
    for intent in stale:
        if not intent.key.startswith(invoke.INTENT):
            continue
        if claim := await outbox.claim(service, intent.key, now):
            await outbox.deliver(service, intent, claim=claim)
    if now >= service.passes_due.get(UNREPORTED, 0):
        # Reads every invoked run still pending (a look-up each): once a grace period is enough
        # for what only a crash leaves behind, not on every tick.
        service.passes_due[UNREPORTED] = now + outbox.GRACE
        for run in await invoke.unreported(service, now):
            await runs.ended(service, run)
    waiting = [i.created_at + outbox.GRACE for i in intents if i.created_at + outbox.GRACE > now]
    return min(waiting, default=None)
