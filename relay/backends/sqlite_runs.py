"""Workflow runs on SQLite: a ``runs`` row per run and a ``run_entries`` row per entry, changed
in the same transaction as the messages that carry them (on the writer thread of sqlite.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from relay.models import Accepted, Message
from relay.workflows.model import (
    RunEnded,
    RunEntry,
    RunLogQuery,
    RunQuery,
    RunState,
    WorkflowRun,
)
from relay.workflows.protocol import CallType

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    completed_at INTEGER,
    entries INTEGER NOT NULL,  -- how many entries it has: the next entry's index
    response TEXT,
    dlq_id TEXT,
    record TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (created_at) WHERE state = 'RUN_STARTED';
CREATE INDEX IF NOT EXISTS runs_ended ON runs (completed_at) WHERE state != 'RUN_STARTED';
CREATE TABLE IF NOT EXISTS run_entries (
    run_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    time INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (run_id, idx)
);
"""

# Store the messages that remain (sqlite._accept), returning their answers in order.
StoreRest = Callable[[Sequence[Message]], list[Accepted]]


def accept(
    c: sqlite3.Connection,
    messages: Sequence[Message],
    now: int,
    runs: Sequence[WorkflowRun],
    store: StoreRest,
) -> list[Accepted]:
    """Create the runs of Init messages, append step entries, check every other run message's
    run; then store what is not a duplicate Init (see Backend.accept_run_messages)."""
    new_runs = {run.message_id: run for run in runs}
    answers: dict[int, Accepted] = {}
    kept: list[Message] = []
    for position, message in enumerate(messages):
        if message.run_id is None:
            kept.append(message)
            continue
        if (run := new_runs.get(message.id)) is not None:
            existing = _row(c, run.run_id)
            if existing is not None:
                answers[position] = Accepted(existing.message_id, existing.url, deduplicated=True)
                continue
            _create(c, run, now)
            message.entry = 0
        elif message.call_type != CallType.FAILURE_CALL:
            current = _row(c, message.run_id)
            if current is None or current.state.ended:
                what = "unknown" if current is None else f"over ({current.state})"
                raise RunEnded(f"workflow run {message.run_id} is {what}")
            if message.call_type == CallType.STEP:
                message.entry = current.entries
                _append(c, current.run_id, current.entries, message, now)
        kept.append(message)
    stored = iter(store(kept))
    return [answers[i] if i in answers else next(stored) for i in range(len(messages))]


def _create(c: sqlite3.Connection, run: WorkflowRun, now: int) -> None:
    c.execute(
        "INSERT INTO runs (run_id, url, state, created_at, entries, record, payload)"
        " VALUES (?,?,?,?,?,?,?)",
        (
            run.run_id,
            run.url,
            str(RunState.RUN_STARTED),
            run.created_at,
            1,
            orjson.dumps(run.to_record()),
            run.payload,
        ),
    )
    c.execute(
        "INSERT INTO run_entries (run_id, idx, message_id, time, body) VALUES (?,?,?,?,?)",
        (run.run_id, 0, run.message_id, now, run.payload),
    )


def _append(c: sqlite3.Connection, run_id: str, index: int, message: Message, now: int) -> None:
    c.execute(
        "INSERT INTO run_entries (run_id, idx, message_id, time, body) VALUES (?,?,?,?,?)",
        (run_id, index, message.id, now, message.body),
    )
    c.execute("UPDATE runs SET entries = ? WHERE run_id = ?", (index + 1, run_id))


_COLUMNS = "state, completed_at, entries, response, dlq_id, record, payload"


def _row(c: sqlite3.Connection, run_id: str) -> WorkflowRun | None:
    row = c.execute(f"SELECT {_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else _from_row(row)


def _from_row(row: Sequence[Any]) -> WorkflowRun:
    state, completed_at, entries, response, dlq_id, record, payload = row
    return WorkflowRun.from_record(
        orjson.loads(record),
        bytes(payload),
        state=RunState(state),
        completed_at=completed_at,
        entries=entries,
        response=response,
        dlq_id=dlq_id,
    )


def get(c: sqlite3.Connection, run_id: str) -> WorkflowRun | None:
    return _row(c, run_id)


def entries(c: sqlite3.Connection, run_id: str, upto: int | None) -> list[RunEntry]:
    rows = c.execute(
        "SELECT idx, message_id, body, time FROM run_entries WHERE run_id = ? AND idx <= ?"
        " ORDER BY idx",
        (run_id, upto if upto is not None else 2**62),
    )
    return [RunEntry(index=i, message_id=m, body=bytes(b), time=t) for i, m, b, t in rows]


def end(
    c: sqlite3.Connection,
    run_id: str,
    state: RunState,
    now: int,
    *,
    response: str | None = None,
    dlq_id: str | None = None,
) -> tuple[WorkflowRun, bool] | None:
    """End a run that is going on; the run and whether this call ended it."""
    ended = c.execute(
        "UPDATE runs SET state = ?, completed_at = ?, response = ?, dlq_id = ?"
        " WHERE run_id = ? AND state = ?",
        (str(state), now, response, dlq_id, run_id, str(RunState.RUN_STARTED)),
    ).rowcount
    run = _row(c, run_id)
    return None if run is None else (run, ended > 0)


def find(c: sqlite3.Connection, query: RunQuery) -> list[WorkflowRun]:
    rows = c.execute(
        f"SELECT {_COLUMNS} FROM runs WHERE state = ? ORDER BY created_at",
        (str(RunState.RUN_STARTED),),
    )
    found: list[WorkflowRun] = []
    for row in rows:
        run = _from_row(row)
        if query.matches(run):
            found.append(run)
            if query.count is not None and len(found) >= query.count:
                break
    return found


def listed(c: sqlite3.Connection, query: RunLogQuery) -> list[WorkflowRun]:
    """Runs newest first (ties: by id), before the query's ``(created_at, run_id)`` cursor."""
    where, args = ["(created_at, run_id) < (?, ?)"], [*query.before]
    for condition, value in (
        ("run_id = ?", query.run_id),
        ("url = ?", query.url),
        ("state = ?", query.state),
        ("created_at = ?", query.created_at),
        ("created_at >= ?", query.from_time),
        ("created_at <= ?", query.to_time),
        ("',' || json_extract(record, '$.label') || ',' LIKE '%,' || ? || ',%'", query.label),
    ):
        if value is not None:
            where.append(condition)
            args.append(value)
    rows = c.execute(
        f"SELECT {_COLUMNS} FROM runs WHERE {' AND '.join(where)}"
        " ORDER BY created_at DESC, run_id DESC LIMIT ?",
        (*args, query.count),
    )
    return [_from_row(row) for row in rows]


def copy(c: sqlite3.Connection, source: str, run: WorkflowRun, upto: int | None) -> None:
    """Create ``run`` with ``source``'s entries 1 to ``upto`` after its entry 0."""
    _create(c, run, run.created_at)
    copied = c.execute(
        "INSERT INTO run_entries (run_id, idx, message_id, time, body)"
        " SELECT ?, idx, message_id, time, body FROM run_entries"
        " WHERE run_id = ? AND idx BETWEEN 1 AND ?",
        (run.run_id, source, upto if upto is not None else 2**62),
    ).rowcount
    c.execute("UPDATE runs SET entries = ? WHERE run_id = ?", (1 + copied, run.run_id))


def purge(c: sqlite3.Connection, before: int, limit: int) -> int:
    """Delete up to ``limit`` runs that ended before ``before``, with their entries."""
    ended = [
        row[0]
        for row in c.execute(
            "SELECT run_id FROM runs WHERE state != 'RUN_STARTED' AND completed_at < ? LIMIT ?",
            (before, limit),
        )
    ]
    if ended:
        marks = ",".join("?" * len(ended))
        c.execute(f"DELETE FROM run_entries WHERE run_id IN ({marks})", ended)
        c.execute(f"DELETE FROM runs WHERE run_id IN ({marks})", ended)
    return len(ended)
