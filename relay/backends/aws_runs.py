"""Workflow runs on DynamoDB: a run item and entry items in the run's own partition, changed in
the same transaction as the message items that carry them (the accept seam of aws.py).

===================  ============  =================  ===========================================
item                 pk            sk                 also
===================  ============  =================  ===========================================
run                  W#<run id>    W                  st (RunState), ent (entry count: the next
                                                      index, and the append's condition), rec
                                                      (WorkflowRun.to_record JSON), co, rsp, did;
                                                      gp = W, gs = <created_at:013d><run id>,
                                                      url, lb (the ``by-time`` index: listings)
entry                W#<run id>    E#<index:010d>     mid, t (ms), b | bs (body inline | S3 key
                                                      run/<run id>/<message id>: unique, so a
                                                      racer that loses an index cannot overwrite
                                                      the winner's body)
===================  ============  =================  ===========================================

Entry 0 is the initial payload, so the run item stays small (~0.5 KB: one write unit) whatever
the payload; :meth:`Runs.get` reads both in one BatchGetItem.

An append (a publish of step messages) reads the run item (consistent), then writes ONE
transaction: the run item's Put with ``ent`` + n, conditional on ``st = RUN_STARTED AND ent =
<as read>``, the n entry items and the n message groups (:meth:`AwsBackend.accept_items`).
Parallel appends to one run race on ``ent``: the loser's transaction is cancelled on item 0 and
the append is rebuilt on a fresh read, so indexes are distinct and ordered. An Init is the run
item's Put conditional on ``attribute_not_exists(pk)``: an existing run id answers
deduplicated and stores nothing. A transaction holds at most 100 items: an append of more steps
than fit is written as several transactions, each conditional on the count the previous one
left (each part is atomic and ordered; the whole is not, which only a crash between parts
shows).

Cost (measured with infra/meter.py, items under 1 KB; in a transaction every write bills
double): an append of one step = run Put 2 + entry Put 2 + message Put 2 + the log index entry
the message lists itself with 1 = 7 WRU (a plain publish: 2), plus 0.5 RRU for the read; n steps
in one publish = 4n + 2 WRU + one log page (2); an Init = 8 WRU (its run's ``by-time`` entry
included). ``get_run`` 1 RRU (BatchGetItem of run + entry 0), ``run_entries`` a consistent
Query (0.5 RRU per 4 KB), ``end_run`` 2 WRU (the index entry's ``st`` changes) + 1 RRU. Plain
messages never touch this module, so their cost is unchanged (bench/aws_cost.py).

A settlement that ``fails_run`` (aws.py's settle) reads the run item: a run going on ends in
the settle's transaction (:meth:`Runs.end_update`, conditional on ``st = RUN_STARTED``; if
that condition loses a race, the settle is written again without it and without follow-ups);
a run that had ended keeps its state and the follow-ups are dropped (one failure callback).

Listings: the run item sits in the sparse GSI ``by-time`` under ``gp`` = W (one partition),
``gs`` = creation time + id. An append does not change ``st``/``url``/``lb``, so it costs the
index nothing; creation and end write one index entry each (1 WRU). ``list_runs`` queries the
partition newest first from its cursor (filters on the projected ``st``/``url`` applied by
DynamoDB, the rest here after a BatchGetItem of the run items); ``find_runs`` reads it oldest
first filtered on ``st`` = RUN_STARTED. Read capacity grows with the runs listed past a filter,
and one partition takes ~1000 run creations + ends a second, enough for a relay.

Runs and entries have no TTL: a run may sleep longer than any retention (the bucket's lifecycle,
400 days, still bounds its large bodies). Retention (:meth:`Runs.purge`) reads the partition of
``by-time`` from the oldest run, a bounded Query a call (filtered on ``st``: a run going on
costs its index entry's read, ~0.5 RRU per 4 KB, and nothing more), fetches the ended runs'
items (BatchGetItem) and deletes those that ended before the cutoff; the next call goes on
after the last entry read, and a sweep ends at the runs created after the cutoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from botocore.exceptions import ClientError

from relay.models import Accepted, Event, Message
from relay.workflows.model import (
    RunEnded,
    RunEntry,
    RunLogQuery,
    RunQuery,
    RunState,
    WorkflowRun,
)
from relay.workflows.protocol import CallType

if TYPE_CHECKING:
    from relay.backends.aws import AwsBackend

Item = dict[str, Any]

RUNS_GP = "W"  # the runs' partition of the by-time index
_STARTED = str(RunState.RUN_STARTED)
_TRANSACTION_ITEMS = 100
_TRANSACTION_BYTES = 3_500_000
_MAX_RACES = 20  # lost races on one run before giving up (each lost race means progress)


def run_pk(run_id: str) -> str:
    return f"W#{run_id}"


def entry_sk(index: int) -> str:
    return f"E#{index:010d}"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


@dataclass(slots=True)
class _Plan:
    """One run's share of a publish: a run to create, or appends to an existing one."""

    run: WorkflowRun
    item: Item | None  # the run item as read (None: created by this publish)
    create: bool = False
    steps: list[Message] = field(default_factory=list)


class Runs:
    """The run methods of :class:`AwsBackend` (wired like aws_gates.Gates)."""

    def __init__(self, backend: AwsBackend) -> None:
        self._b = backend
        self._purged_to: str | None = None  # the by-time ``gs`` a purge sweep goes on after

    # --- accepting ----------------------------------------------------------------------------

    async def accept(
        self,
        messages: Sequence[Message],
        events: Sequence[Event],
        now: int,
        dedup_window: int,
        runs: Sequence[WorkflowRun],
    ) -> list[Accepted]:
        """Backend.accept_run_messages: see the module docstring."""
        from relay.backends import aws

        b = self._b
        use_dedup = dedup_window > 0
        keys = sorted({m.dedup_key for m in messages if use_dedup and m.dedup_key})
        known = await b._dedup_entries(keys, now) if keys else {}
        places = await b._gates.places(messages, now)  # once, as accept does (queue numbers)
        sent: set[str] = set()  # copies already sent: a retry after a lost race sends no more
        for attempt in range(_MAX_RACES):
            answers, plans, kept = await self._plan(messages, now, runs)
            results, stored = aws._deduplicate(kept, known if use_dedup else None)
            stored_ids = {m.id for m in stored}
            for plan in plans.values():
                plan.steps = [m for m in plan.steps if m.id in stored_ids]
                for offset, step in enumerate(plan.steps):
                    step.entry = plan.run.entries + offset
            groups, others = await b.accept_items(
                stored, events, now, places, dedup_window if use_dedup else 0
            )
            by_message = dict(zip((m.id for m in stored), groups, strict=False))
            rest = groups[len(stored) :]  # the log pages
            run_of = {m.id: m.run_id for m in stored if m.run_id is not None}
            transactions: list[list[Item]] = []
            for plan in plans.values():
                mine = [mid for mid, rid in run_of.items() if rid == plan.run.run_id]
                transactions += await self._run_writes(plan, mine, by_message, now)
            for plan in plans.values():
                for mid, rid in run_of.items():
                    if rid == plan.run.run_id:
                        by_message.pop(mid, None)
            unsent = {m.id: m for m in stored if m.id not in sent}

            async def dispatch(items: Sequence[Item], unsent: dict[str, Message] = unsent) -> None:
                due = [unsent.pop(mid) for mid in aws._message_ids(items) if mid in unsent]
                sent.update(m.id for m in due)
                await b.dispatch_accepted(due, now, places)

            written = 0
            try:
                for transaction in transactions:
                    await dispatch(transaction)
                    await b._transact(transaction)
                    written += 1
            except aws.DedupConflict as conflict:
                if written:
                    raise  # a later part of a long append (each part is atomic, not the whole)
                known.update(await b._dedup_entries(conflict.keys, now))
                continue
            except ClientError as exc:
                if aws._code(exc) != "TransactionCanceledException" or written:
                    # A later part of a long append failed: earlier parts stay (each atomic).
                    raise
                if any(
                    (reason.get("Code") == "ConditionalCheckFailed")
                    and "Put" in item
                    and item["Put"]["Item"]["pk"]["S"].startswith("W#")
                    for item, reason in zip(
                        transactions[0], exc.response.get("CancellationReasons", []), strict=False
                    )
                ):
                    # A run changed since it was read: plan again on a fresh read (a short,
                    # random pause spreads the racers out).
                    await asyncio.sleep(random.uniform(0, 0.005 * attempt))
                    continue
                raise
            await b._write_all([g for g in (*by_message.values(), *rest) if g], before=dispatch)
            await b._append_events(others)
            await b.accepted(stored, now, places)
            merged = iter(results)
            return [answers[i] if i in answers else next(merged) for i in range(len(messages))]
        raise RuntimeError("workflow runs kept changing under concurrent publishes")

    async def _plan(
        self, messages: Sequence[Message], now: int, runs: Sequence[WorkflowRun]
    ) -> tuple[dict[int, Accepted], dict[str, _Plan], list[Message]]:
        """Read the runs the messages name; which Inits create a run, which messages are
        duplicates (answers by position), which steps append (RunEnded if a run is over)."""
        new_runs = {run.message_id: run for run in runs}
        ids = sorted({m.run_id for m in messages if m.run_id is not None})
        items = await self._b._batch_get([(run_pk(r), "W") for r in ids], consistent=True)
        read = {item["pk"]["S"][2:]: item for item in items}
        plans: dict[str, _Plan] = {}
        answers: dict[int, Accepted] = {}
        kept: list[Message] = []
        for position, message in enumerate(messages):
            run_id = message.run_id
            if run_id is None:
                kept.append(message)
                continue
            plan = plans.get(run_id)
            if (run := new_runs.get(message.id)) is not None:
                if plan is not None or run_id in read:
                    existing = plan.run if plan is not None else _run(read[run_id], b"")
                    answers[position] = Accepted(
                        existing.message_id, existing.url, deduplicated=True
                    )
                    continue
                plans[run_id] = _Plan(run=_fresh(run), item=None, create=True)
                message.entry = 0
            elif message.call_type != CallType.FAILURE_CALL:
                if plan is None and run_id in read:
                    plan = plans[run_id] = _Plan(run=_run(read[run_id], b""), item=read[run_id])
                if plan is None or plan.run.state.ended:
                    what = "unknown" if plan is None else f"over ({plan.run.state})"
                    raise RunEnded(f"workflow run {run_id} is {what}")
                if message.call_type == CallType.STEP:
                    plan.steps.append(message)
            kept.append(message)
        return answers, plans, kept

    async def _run_writes(
        self, plan: _Plan, message_ids: list[str], groups: dict[str, list[Item]], now: int
    ) -> list[list[Item]]:
        """The transactions of one run's share: run item first (its condition), then per step
        its entry and message group; the run's other messages (callbacks) ride along. Split
        under the transaction limits, each part conditional on the count before it."""
        b = self._b
        run = plan.run
        steps = {m.id: m for m in plan.steps}
        units: list[list[Item]] = []
        if plan.create:
            units.append(
                [
                    b._put(
                        {
                            "pk": _s(run_pk(run.run_id)),
                            "sk": _s(entry_sk(0)),
                            "mid": _s(run.message_id),
                            "t": _n(now),
                            **await b._blob("b", f"run/{run.run_id}/{run.message_id}", run.payload),
                        }
                    )
                ]
            )
        for mid in message_ids:
            unit = list(groups.get(mid, []))
            step = steps.get(mid)
            if step is not None:
                assert step.entry is not None
                unit.insert(0, await self._entry_put(run.run_id, step.entry, step, now))
            units.append(unit)
        parts: list[list[Item]] = []
        bounds: list[list[int]] = []  # per part: the entry count before it and after it
        count = 0 if plan.create else run.entries
        size = 0
        for unit in units:
            unit_size = sum(_size(i) for i in unit)
            if not parts or (
                len(parts[-1]) + len(unit) + 1 > _TRANSACTION_ITEMS
                or size + unit_size > _TRANSACTION_BYTES
            ):
                parts.append([])
                bounds.append([count, count])
                size = 0
            parts[-1] += unit
            size += unit_size
            count += sum(1 for i in unit if _is_entry(i))
            bounds[-1][1] = count
        writes = []
        for part, (before, after) in zip(parts, bounds, strict=True):
            put = b._put(self._run_item(run, after))
            if plan.create and before == 0:
                put["Put"]["ConditionExpression"] = "attribute_not_exists(pk)"
            else:
                put["Put"]["ConditionExpression"] = "st = :started AND ent = :ent"
                put["Put"]["ExpressionAttributeValues"] = {
                    ":started": _s(_STARTED),
                    ":ent": _n(before),
                }
            writes.append([put, *part])
        return writes

    async def _entry_put(self, run_id: str, index: int, message: Message, now: int) -> Item:
        return self._b._put(
            {
                "pk": _s(run_pk(run_id)),
                "sk": _s(entry_sk(index)),
                "mid": _s(message.id),
                "t": _n(now),
                **await self._b._blob("b", f"run/{run_id}/{message.id}", message.body),
            }
        )

    def _run_item(self, run: WorkflowRun, entries: int) -> Item:
        item: Item = {
            "pk": _s(run_pk(run.run_id)),
            "sk": _s("W"),
            "st": _s(str(run.state)),
            "ent": _n(entries),
            "rec": _s(orjson.dumps(run.to_record()).decode()),
            "gp": _s(RUNS_GP),
            "gs": _s(_order(run.created_at, run.run_id)),
            "url": _s(run.url),
        }
        if run.label:
            item["lb"] = _s(run.label)
        if run.completed_at is not None:
            item["co"] = _n(run.completed_at)
        if run.response is not None:
            item["rsp"] = _s(run.response)
        if run.dlq_id is not None:
            item["did"] = _s(run.dlq_id)
        return item

    # --- reading ------------------------------------------------------------------------------

    async def get(self, run_id: str) -> WorkflowRun | None:
        found = await self._b._batch_get(
            [(run_pk(run_id), "W"), (run_pk(run_id), entry_sk(0))], consistent=True
        )
        by_sk = {item["sk"]["S"]: item for item in found}
        if "W" not in by_sk:
            return None
        first = by_sk.get(entry_sk(0))
        return _run(by_sk["W"], b"" if first is None else await self._b._read(first, "b"))

    async def entries(self, run_id: str, upto: int | None) -> list[RunEntry]:
        b = self._b
        found: list[RunEntry] = []
        async for items in b._pages(
            b._db.query,
            TableName=b.table,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :low AND :high",
            ExpressionAttributeValues={
                ":pk": _s(run_pk(run_id)),
                ":low": _s(entry_sk(0)),
                ":high": _s(entry_sk(upto if upto is not None else 9_999_999_999)),
            },
            ConsistentRead=True,
        ):
            for item in items:
                found.append(
                    RunEntry(
                        index=int(item["sk"]["S"][2:]),
                        message_id=item["mid"]["S"],
                        body=await b._read(item, "b"),
                        time=int(item["t"]["N"]),
                    )
                )
        return found

    # --- ending -------------------------------------------------------------------------------

    def end_update(
        self, run_id: str, state: RunState, now: int, *, response: str | None, dlq_id: str | None
    ) -> Item:
        """The conditional Update that ends a run going on (an end_run, or in a settle's
        transaction for ``fails_run``)."""
        sets = ["st = :st", "co = :co"]
        values: Item = {":st": _s(str(state)), ":co": _n(now), ":started": _s(_STARTED)}
        if response is not None:
            sets.append("rsp = :rsp")
            values[":rsp"] = _s(response)
        if dlq_id is not None:
            sets.append("did = :did")
            values[":did"] = _s(dlq_id)
        return {
            "TableName": self._b.table,
            "Key": {"pk": _s(run_pk(run_id)), "sk": _s("W")},
            "UpdateExpression": "SET " + ", ".join(sets),
            "ConditionExpression": "st = :started",
            "ExpressionAttributeValues": values,
        }

    async def end(
        self, run_id: str, state: RunState, now: int, *, response: str | None = None
    ) -> tuple[WorkflowRun, bool] | None:
        from relay.backends import aws

        b = self._b
        if not aws.key_can_exist(run_pk(run_id), "W"):
            return None
        ended = True
        try:
            await b._call(
                b._db.update_item,
                **self.end_update(run_id, state, now, response=response, dlq_id=None),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            ended = False
        run = await self.get(run_id)
        return None if run is None else (run, ended)

    async def active(self, run_id: str) -> bool:
        item = await self._b._get(run_pk(run_id), "W")
        return item is not None and item["st"]["S"] == _STARTED

    # --- listing ------------------------------------------------------------------------------

    async def _scan_index(
        self,
        *,
        newest_first: bool,
        high: str | None,
        low: str | None,
        filters: dict[str, str],
        wanted: int | None,
        keep: Any,
    ) -> list[WorkflowRun]:
        """Page through the runs' partition of ``by-time``, fetch the run items, keep those
        ``keep`` accepts, until ``wanted`` (with their payloads)."""
        from relay.backends import aws

        b = self._b
        condition = "gp = :gp"
        values: Item = {":gp": _s(RUNS_GP)}
        if low is not None and high is not None:
            condition += " AND gs BETWEEN :low AND :high"
            values.update({":low": _s(low), ":high": _s(high)})
        names: dict[str, str] = {}
        clauses = []
        for i, (attr, value) in enumerate(filters.items()):
            names[f"#f{i}"] = attr
            values[f":f{i}"] = _s(value)
            clauses.append(f"#f{i} = :f{i}")
        found: list[WorkflowRun] = []
        pages = b._pages(
            b._db.query,
            TableName=b.table,
            IndexName=aws.TIME_INDEX,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            ScanIndexForward=not newest_first,
            # A page a little over what is wanted (a filter drops some): not 1 MB of keys.
            Limit=min(100, max(20, 2 * wanted)) if wanted is not None else 100,
            **({"FilterExpression": " AND ".join(clauses)} if clauses else {}),
            **({"ExpressionAttributeNames": names} if names else {}),
        )
        async with contextlib.aclosing(pages):
            async for page in pages:
                keys = [(i["pk"]["S"], "W") for i in page]
                for item in await b._batch_get(keys, order=True):
                    run = _run(item, b"")
                    if keep(run):
                        found.append(run)
                if wanted is not None and len(found) >= wanted:
                    found = found[:wanted]
                    break
        return await self._with_payloads(found)

    async def _with_payloads(self, runs: list[WorkflowRun]) -> list[WorkflowRun]:
        b = self._b
        firsts = await b._batch_get([(run_pk(r.run_id), entry_sk(0)) for r in runs])
        by_run = {item["pk"]["S"][2:]: item for item in firsts}
        for run in runs:
            if (first := by_run.get(run.run_id)) is not None:
                run.payload = await b._read(first, "b")
        return runs

    async def find(self, query: RunQuery) -> list[WorkflowRun]:
        if query.run_ids:
            found = []
            for run_id in query.run_ids:
                run = await self.get(run_id)
                if run is not None and not run.state.ended and query.matches(run):
                    found.append(run)
            found.sort(key=lambda r: (r.created_at, r.run_id))
            return found[: query.count] if query.count is not None else found
        filters = {"st": _STARTED}
        if query.url is not None and query.url_exact:
            filters["url"] = query.url
        return await self._scan_index(
            newest_first=False,
            low=None,
            high=None,
            filters=filters,
            wanted=query.count,
            keep=lambda run: not run.state.ended and query.matches(run),
        )

    async def listed(self, query: RunLogQuery) -> list[WorkflowRun]:
        """Newest first (ties: by id) before the query's ``(created_at, run_id)`` cursor."""
        if query.count <= 0:
            return []
        low_time = query.from_time if query.from_time is not None else 0
        high_time = query.to_time if query.to_time is not None else 2**42
        if query.created_at is not None:
            low_time = max(low_time, query.created_at)
            high_time = min(high_time, query.created_at)
        if low_time > high_time:
            return []
        before = _order(*query.before)
        high = min(_order(high_time, "\uffff"), before)
        low = _order(low_time, "")
        if high <= low:
            return []
        filters: dict[str, str] = {}
        if query.url is not None:
            filters["url"] = query.url
        if query.state is not None:
            filters["st"] = query.state

        def keep(run: WorkflowRun) -> bool:
            if query.run_id is not None and run.run_id != query.run_id:
                return False
            if _order(run.created_at, run.run_id) >= before:
                return False
            if query.label is not None:
                return query.label in (run.label or "").split(",")
            return True

        return await self._scan_index(
            newest_first=True,
            low=low,
            high=high,
            filters=filters,
            wanted=query.count,
            keep=keep,
        )

    # --- retention ----------------------------------------------------------------------------

    async def purge(self, before: int, *, reads: int) -> tuple[int, bool]:
        """Delete the runs that ended before ``before`` among the next ``reads`` entries of the
        runs' ``by-time`` partition created before it (a superset of those ended before it),
        from where the last call stopped, each with every item of its partition; how many runs
        went, and whether the sweep goes on (False: it reached the runs created since, and the
        next call starts over from the oldest)."""
        b = self._b
        entries, self._purged_to = await self._created_before(before, reads)
        keys = [(entry["pk"]["S"], "W") for entry in entries]
        runs = [_run(item, b"") for item in await b._batch_get(keys)] if keys else []
        ended = [r for r in runs if r.completed_at is not None and r.completed_at < before]
        for run in ended:
            async for items in b._pages(
                b._db.query,
                TableName=b.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": _s(run_pk(run.run_id))},
                ProjectionExpression="pk, sk",
            ):
                await b._delete_all(items)
        return len(ended), self._purged_to is not None

    async def _created_before(self, before: int, reads: int) -> tuple[list[Item], str | None]:
        """One Query of at most ``reads`` index entries after ``_purged_to``, of runs created
        before ``before``: those of ended runs (DynamoDB filters on the projected ``st``; the
        entries it leaves out are read all the same), and the ``gs`` to go on after (None:
        none are left)."""
        from relay.backends import aws

        b = self._b
        low = _order(0, "") if self._purged_to is None else f"{self._purged_to}\0"  # the next
        high = _order(before, "")
        if low >= high:
            return [], None
        answer = await b._call(
            b._db.query,
            TableName=b.table,
            IndexName=aws.TIME_INDEX,
            KeyConditionExpression="gp = :gp AND gs BETWEEN :low AND :high",
            FilterExpression="st <> :started",
            ExpressionAttributeValues={
                ":gp": _s(RUNS_GP),
                ":low": _s(low),
                ":high": _s(high),
                ":started": _s(_STARTED),
            },
            Limit=reads,
        )
        last = answer.get("LastEvaluatedKey")
        return answer.get("Items", []), None if last is None else last["gs"]["S"]

    # --- DLQ resume ---------------------------------------------------------------------------

    async def copy(self, source: str, run: WorkflowRun, upto: int | None) -> None:
        """Entries first (BatchWriteItem, unreachable until the run item exists), then the run
        item, conditional on its id being new."""
        b = self._b
        copied = [e for e in await self.entries(source, upto) if e.index >= 1]
        items = [
            {
                "pk": _s(run_pk(run.run_id)),
                "sk": _s(entry_sk(0)),
                "mid": _s(run.message_id),
                "t": _n(run.created_at),
                **await b._blob("b", f"run/{run.run_id}/{run.message_id}", run.payload),
            }
        ]
        for entry in copied:
            items.append(
                {
                    "pk": _s(run_pk(run.run_id)),
                    "sk": _s(entry_sk(entry.index)),
                    "mid": _s(entry.message_id),
                    "t": _n(entry.time),
                    **await b._blob("b", f"run/{run.run_id}/{entry.message_id}", entry.body),
                }
            )
        await b._put_all(items)
        fresh = _fresh(run)
        await b._call(
            b._db.put_item,
            TableName=b.table,
            Item=self._run_item(fresh, 1 + len(copied)),
            ConditionExpression="attribute_not_exists(pk)",
        )


def _fresh(run: WorkflowRun) -> WorkflowRun:
    """A run as created: started, one entry."""
    return WorkflowRun.from_record(run.to_record(), run.payload)


def _run(item: Item, payload: bytes) -> WorkflowRun:
    return WorkflowRun.from_record(
        orjson.loads(item["rec"]["S"]),
        payload,
        state=RunState(item["st"]["S"]),
        completed_at=int(item["co"]["N"]) if "co" in item else None,
        entries=int(item["ent"]["N"]),
        response=item["rsp"]["S"] if "rsp" in item else None,
        dlq_id=item["did"]["S"] if "did" in item else None,
    )


def _order(created_at: int, run_id: str) -> str:
    if created_at > 9_999_999_999_999:  # a cursor past any time (13 digits keep the order)
        return "9" * 13 + "\uffff"
    return f"{created_at:013d}{run_id}"


def _is_entry(item: Item) -> bool:
    put = item.get("Put")
    return put is not None and str(put["Item"]["sk"]["S"]).startswith("E#")


def _size(item: Item) -> int:
    from relay.backends import aws

    return aws._size(item)
