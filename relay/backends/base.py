"""The storage port: what the core needs from a backend, and nothing about how it is kept.

Dispatch is modelled on SQS: a due message is *leased* (taken with a visibility deadline and a
receipt); it is settled with that receipt only after its outcome is stored; a lease that is never
settled expires and the message is delivered again. So a crash at any point means a redelivery,
never a loss. The SQLite backend keeps dispatch in a table indexed by visible-at; the AWS backend
keeps it in SQS (visibility timeout) beside DynamoDB.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from relay.flow_control import FlowKey, FlowKeyUsage
from relay.models import (
    Accepted,
    DlqEntry,
    DlqQuery,
    Event,
    EventQuery,
    Lease,
    Message,
    MessageCounts,
    MessageQuery,
    MessageState,
    Outcome,
    Page,
    PendingQuery,
    QueueStats,
    Settlement,
)
from relay.workflows.model import RunEntry, RunLogQuery, RunQuery, RunState, WorkflowRun


class Backend(Protocol):
    """Durable state and dispatch for the relay core; both backends implement it."""

    async def open(self) -> None:
        """Prepare storage; a single-owner backend also releases leases a crash left behind."""

    async def close(self) -> None:
        """Release connections; pending work stays stored."""

    async def get_setting(self, name: str) -> str | None:
        """A stored setting (token, signing keys), or None."""

    async def put_setting(
        self, name: str, value: str, *, if_absent: bool = False, replacing: str | None = None
    ) -> str:
        """Store a setting and return the value stored afterwards: ``value``, or the existing
        one when ``if_absent`` and there is one, or when ``replacing`` is given and the stored
        value is not that (a compare-and-set; ``""`` if none is stored)."""

    async def delete_setting(self, name: str, *, if_value: str | None = None) -> bool:
        """Delete a setting, only if its stored value is ``if_value`` when that is given (a
        compare-and-delete); False if nothing was deleted."""

    async def put_record(self, kind: str, key: str, value: dict[str, Any]) -> None:
        """Store a configuration record (a URL group, a schedule, a queue), replacing any."""

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None: ...

    async def list_records(
        self,
        kind: str,
        prefix: str = "",
        *,
        start: str | None = None,
        stop: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The records of ``kind`` whose key starts with ``prefix`` and lies in ``[start,
        stop)`` (either bound optional), in key order, the first ``limit`` of them (None: all)."""

    async def delete_record(self, kind: str, key: str) -> bool:
        """Delete a record; False if there was none."""

    # --- wake-ups: a pass (waiter timeouts) run at its deadline by the transport -------------

    @property
    def wake_reach(self) -> int | None:
        """How far ahead (ms) :meth:`wake_at` can bring a wake-up; None: it brings none (the
        embedded ticker sleeps until the next deadline instead)."""

    async def wake_at(self, timer: str, due: int, now: int) -> None:
        """Have the pass named ``timer`` run at ``due`` (ms, within ``wake_reach`` of ``now``)
        by whoever takes dispatch: on AWS an SQS record that the delivery function's lease
        turns into ``TimerDue`` for its runtime. Extra or early wake-ups must be harmless."""

    async def accept(
        self, messages: Sequence[Message], events: Sequence[Event], now: int, dedup_window: int
    ) -> list[Accepted]:
        """Store messages and their events durably, all or nothing, then make each due at its
        ``not_before``. A message whose ``dedup_key`` was seen within ``dedup_window`` ms is not
        stored; its answer carries the first message's id and ``deduplicated=True``."""

    async def lease(self, now: int, limit: int, visibility: int) -> list[Lease]:
        """Take up to ``limit`` due messages for ``visibility`` ms, marking them ACTIVE (with an
        ACTIVE event each). Expired leases are due again."""

    async def settle(self, lease: Lease, settlement: Settlement, now: int) -> bool:
        """Store an attempt's outcome, its events, follow-up messages and DLQ entry atomically and
        end (or, for RETRY, re-time) the lease. False if the lease was lost or the message was
        cancelled meanwhile; then nothing but the events is stored. A settlement that
        ``fails_run`` ends that run as failed; if the run had ended before, its follow-ups are
        not stored (one failure callback per run)."""

    async def cancel(self, message_ids: Sequence[str], now: int) -> list[str]:
        """Cancel messages not yet finished; returns the ids cancelled (CANCELED event each)."""

    async def find_pending(self, query: PendingQuery) -> list[str]:
        """The ids of the messages not yet finished that ``query`` matches (bulk cancel by
        filter, rare: a backend may read every pending message to answer it)."""

    async def get_message(self, message_id: str) -> Message | None: ...

    async def list_events(self, query: EventQuery) -> Page:
        """Events, newest first, filtered; ``Page.items`` are Event."""

    async def list_dlq(self, query: DlqQuery) -> Page:
        """DLQ entries, newest first, filtered; ``Page.items`` are DlqEntry."""

    async def get_dlq(self, dlq_id: str) -> DlqEntry | None: ...

    async def delete_dlq(self, dlq_ids: Sequence[str]) -> int:
        """Delete DLQ entries; returns how many existed."""

    async def next_due(self) -> int | None:
        """When the earliest pending message becomes due (ms), for a worker that sleeps until
        then; None when nothing is pending or the backend cannot tell (SQS pushes instead)."""

    async def queue_stats(self, now: int) -> QueueStats:
        """How many messages are due, waiting and in flight at ``now``, and since when the
        longest-waiting due one has been due: the metrics' queue gauges (approximate on SQS)."""

    # --- queues and flow control (relay.queues, relay.flow_control, relay.admission) ----------
    # A message in a queue or with a flow-control key is leased only once admitted; the state
    # that admits it is kept with the leases and settlements, so a crash frees nothing early
    # and holds nothing forever.

    async def queue_lags(self, names: Sequence[str]) -> dict[str, int]:
        """How many messages enqueued to each queue have not finished yet."""

    async def admit_waiting(self, now: int, *, queue: str | None = None) -> None:
        """A queue's settings changed (resumed, more parallelism, deleted): start what may start
        now. A backend that admits at every lease has nothing to do."""

    async def flow_keys(self, now: int, keys: Sequence[str] | None = None) -> list[FlowKeyUsage]:
        """The flow-control keys (all of them when ``keys`` is None; unknown ones left out)."""

    async def change_flow_key(
        self, key: str, change: Callable[[FlowKey], FlowKey], now: int
    ) -> FlowKey:
        """Store ``change`` of the key (of a fresh key if there is none), then start what may
        start now; returns the stored key."""

    async def in_flight(self, now: int) -> int:
        """How many attempts are under way (live leases) at ``now``; approximate on SQS."""

    # --- the console's views -----------------------------------------------------------------

    async def list_messages(self, query: MessageQuery) -> Page:
        """Messages, newest first, filtered; ``Page.items`` are Message without their bodies
        (``b""``: ``get_message`` has it)."""

    async def count_messages(self) -> MessageCounts:
        """How many stored messages are in each state: exact, or (a large store that keeps no
        counts) an estimate from a sample, which says so."""

    async def list_outcomes(self, since: int, limit: int) -> list[Outcome]:
        """The attempt outcomes (DELIVERED, RETRY and FAILED events) at or after ``since``,
        newest first, at most ``limit``: throughput and latency figures."""

    # --- workflow runs (relay.workflows) ------------------------------------------------------
    # A run and its entries change only together with the messages that carry them, so that a
    # backend can do each change in one conditional transaction (DynamoDB: a run item with its
    # state and entry count as the condition, entry items, message items).

    async def accept_run_messages(
        self,
        messages: Sequence[Message],
        events: Sequence[Event],
        now: int,
        dedup_window: int,
        runs: Sequence[WorkflowRun],
    ) -> list[Accepted]:
        """``accept`` for a publish holding workflow messages (``run_id`` set). The Init message
        of each of ``runs`` (``run.message_id``) creates it with entry 0 (a known run id: the
        message is not stored, its answer is the Init message's id, ``deduplicated``); every
        other step message becomes its run's next entry, in the order given, its ``entry`` set
        to the index. A run message other than a failure call for a run that has ended or is
        unknown raises RunEnded, and nothing is stored."""

    async def get_run(self, run_id: str) -> WorkflowRun | None: ...

    async def run_entries(self, run_id: str, upto: int | None = None) -> list[RunEntry]:
        """A run's entries in order, from entry 0 up to and including ``upto`` (all: None)."""

    async def end_run(
        self, run_id: str, state: RunState, now: int, *, response: str | None = None
    ) -> tuple[WorkflowRun, bool] | None:
        """End a run (success, failure or cancel) keeping ``response``; idempotent: the run,
        and whether this call ended it (False: it had ended before). None if unknown."""

    async def find_runs(self, query: RunQuery) -> list[WorkflowRun]:
        """The runs not yet ended that ``query`` matches, oldest first, at most its count."""

    async def list_runs(self, query: RunLogQuery) -> list[WorkflowRun]:
        """Runs in any state, newest first, that ``query`` matches (the workflow logs):
        those created before its cursor, at most its count."""

    async def purge(self, before: int, now: int) -> tuple[int, bool]:
        """Delete what finished before ``before`` (ms) — messages in a final state with their
        events, DLQ entries, ended workflow runs with their entries — and dedup ids expired
        by ``now``, a bounded amount of work per call, the next call going on from there;
        returns how many rows or items went, and whether there is more to look at (False: a
        sweep is done; True even when this call deleted nothing). A backend whose store
        expires them itself (DynamoDB's TTL) deletes the rest."""

    async def copy_run(self, source: str, run: WorkflowRun, upto: int | None) -> None:
        """Create ``run`` (entry 0: its payload) with the entries 1 to ``upto`` (all: None) of
        run ``source`` after it, undelivered: a failed run resumed from the DLQ."""


def kept_events(events: Sequence[Event], stored_ids: Collection[str]) -> list[Event]:
    """The events ``accept`` stores: all but the CREATED events of deduplicated messages."""
    return [e for e in events if e.message_id in stored_ids or e.state != MessageState.CREATED]


def key_range(prefix: str, start: str | None, stop: str | None) -> tuple[str, str | None]:
    """The keys ``list_records`` lists as one range ``[low, high)`` (``high`` None: unbounded):
    those starting with ``prefix`` end before ``prefix`` + U+10FFFF (a next character no relay
    key holds), and in UTF-8 byte order, which both backends compare by, as in code points."""
    low = prefix if start is None else max(prefix, start)
    bounds = [b for b in (prefix + "\U0010ffff" if prefix else None, stop) if b is not None]
    return low, min(bounds, default=None)
