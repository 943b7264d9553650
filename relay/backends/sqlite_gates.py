"""Queues and flow control on SQLite: a ``gates`` row for every unfinished message that is in a
queue, holds a queue slot for its source (a callback), or has a flow-control key.

A gated message that may not start yet is *parked*: its ``visible_at`` is NULL, so lease() does
not see it. Each lease first runs :func:`admit` in the same transaction: relay.admission decides
what passes, and what passes gets its ``visible_at`` back. Nothing is counted apart from the rows
— a queue's slots in use are the distinct slots of its started rows, a key's attempts under way
its started rows — and the rows change in the transactions that settle or cancel a message, so a
crash can neither leak a slot nor free one early. A lease that expires keeps its slot: the
message is attempted again, and its outcome releases it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from relay import admission, queues
from relay.admission import KeyGate, QueueGate, Waiting
from relay.flow_control import FlowControl, FlowKey, FlowKeyUsage
from relay.models import Message, MessageState

SCHEMA = """
CREATE TABLE IF NOT EXISTS gates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- acceptance order: a queue's order
    message_id TEXT NOT NULL UNIQUE,
    queue TEXT,  -- the queue whose slot it waits for or holds
    slot TEXT,  -- the slot it holds (its id, or its source's for a callback); NULL while in line
    flow_key TEXT,
    stage INTEGER NOT NULL,  -- 0: in its queue's line, 1: in its key's wait list, 2: started
    due INTEGER NOT NULL  -- ms: when it may start (its first attempt, or its next retry)
);
CREATE INDEX IF NOT EXISTS gates_queue_line ON gates (stage, queue, seq);
CREATE INDEX IF NOT EXISTS gates_key_line ON gates (stage, flow_key, due, seq);
CREATE INDEX IF NOT EXISTS gates_held ON gates (queue, slot) WHERE stage > 0;
CREATE INDEX IF NOT EXISTS gates_waiting ON gates (due) WHERE stage < 2;
CREATE TABLE IF NOT EXISTS flow_keys (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL  -- relay.flow_control.FlowKey as JSON
);
"""

IN_LINE, WAIT_LIST, STARTED = 0, 1, 2


def accepted(c: sqlite3.Connection, messages: Sequence[Message]) -> None:
    """Gate the stored ``messages`` that need it (parking those that may not start yet) and
    apply their flow-control values to their keys."""
    rows = []
    for m in messages:
        slot = queues.slot_of(m)
        if slot is None and m.flow_control_key is None:
            continue
        if m.queue_name is not None:
            stage, held = IN_LINE, None
        else:
            stage = WAIT_LIST if m.flow_control_key is not None else STARTED
            held = slot[1] if slot is not None else None
        queue = slot[0] if slot is not None else None
        rows.append((m.id, queue, held, m.flow_control_key, stage, m.not_before))
        if m.flow_control_key is not None:
            key = load_key(c, m.flow_control_key)
            store_key(c, key.configured(_given(m)))
    c.executemany(
        "INSERT INTO gates (message_id, queue, slot, flow_key, stage, due) VALUES (?,?,?,?,?,?)",
        rows,
    )
    c.executemany(
        "UPDATE messages SET visible_at = NULL WHERE id = ?",
        [(row[0],) for row in rows if row[4] != STARTED],
    )


def settled(c: sqlite3.Connection, message_id: str, state: MessageState, due: int | None) -> None:
    """An attempt's outcome was stored: a finished message frees what it held; a retrying one
    keeps its queue slot but goes back to its key's wait list."""
    if state.final:
        c.execute("DELETE FROM gates WHERE message_id = ?", (message_id,))
        return
    row = c.execute("SELECT flow_key FROM gates WHERE message_id = ?", (message_id,)).fetchone()
    if row is None or due is None:
        return
    if row[0] is None:
        c.execute("UPDATE gates SET due = ? WHERE message_id = ?", (due, message_id))
        return
    c.execute(
        "UPDATE gates SET due = ?, stage = ? WHERE message_id = ?", (due, WAIT_LIST, message_id)
    )
    c.execute("UPDATE messages SET visible_at = NULL WHERE id = ?", (message_id,))


def cancelled(c: sqlite3.Connection, message_id: str) -> None:
    c.execute("DELETE FROM gates WHERE message_id = ?", (message_id,))


def admit(c: sqlite3.Connection, now: int, limit: int) -> int | None:
    """Let through what may start at ``now`` (at most about ``limit``) by giving it back its
    ``visible_at``; returns when a parked message may pass next with nothing else changing."""
    waiting: list[Waiting] = []
    queue_gates: dict[str, QueueGate] = {}
    for name in _distinct(c, "queue", IN_LINE):
        line = queue_gates[name] = queues.gate(_queue_record(c, name), _held(c, name))
        free = 0 if line.paused else min(line.parallelism - line.held, limit)
        if free <= 0:
            continue
        rows = c.execute(
            "SELECT message_id, due, flow_key FROM gates WHERE stage = ? AND queue = ?"
            " ORDER BY seq LIMIT ?",
            (IN_LINE, name, free),
        )
        waiting += [Waiting(mid, due, name, key) for mid, due, key in rows]
    key_gates: dict[str, KeyGate] = {}
    stored: dict[str, FlowKey] = {}
    keys = dict.fromkeys(
        [*_distinct(c, "flow_key", WAIT_LIST), *(w.flow_key for w in waiting if w.flow_key)]
    )
    for name in keys:
        stored[name] = key = load_key(c, name)
        gate = key_gates[name] = key.gate(_running(c, name))
        free = limit
        if gate.parallelism is not None:
            free = min(free, gate.parallelism - gate.running)
        if gate.paused or free <= 0:
            continue
        rows = c.execute(
            "SELECT message_id, due FROM gates WHERE stage = ? AND flow_key = ? AND due <= ?"
            " ORDER BY due, seq LIMIT ?",
            (WAIT_LIST, name, now, free),
        )
        waiting += [Waiting(mid, due, None, name) for mid, due in rows]
    if not waiting:
        return _next_wake(c, now, None)
    result = admission.admit(waiting, queue_gates, key_gates, now)
    c.executemany(
        "UPDATE gates SET slot = message_id, stage = ? WHERE message_id = ?",
        [(WAIT_LIST, mid) for mid in result.queued],
    )
    c.executemany(
        "UPDATE gates SET stage = ? WHERE message_id = ?",
        [(STARTED, mid) for mid in result.started],
    )
    c.executemany(
        "UPDATE messages SET visible_at = (SELECT due FROM gates WHERE message_id = ?)"
        " WHERE id = ?",
        [(mid, mid) for mid in result.started],
    )
    for name, key in stored.items():
        gate = key_gates[name]
        if (gate.window_start, gate.window_count) != (key.window_start, key.window_count):
            store_key(c, key.with_window(gate))
    return _next_wake(c, now, result.wake_at)


def queue_lags(c: sqlite3.Connection, names: Sequence[str]) -> dict[str, int]:
    if not names:
        return {}
    marks = ",".join("?" * len(names))
    rows = c.execute(
        f"SELECT queue, COUNT(*) FROM gates WHERE queue IN ({marks})"
        " AND (slot IS NULL OR slot = message_id) GROUP BY queue",
        list(names),
    )
    return {name: count for name, count in rows}


def flow_keys(c: sqlite3.Connection, now: int, keys: Sequence[str] | None) -> list[FlowKeyUsage]:
    if keys is None:
        rows = c.execute("SELECT value FROM flow_keys ORDER BY key").fetchall()
    else:
        marks = ",".join("?" * len(keys))
        rows = c.execute(
            f"SELECT value FROM flow_keys WHERE key IN ({marks}) ORDER BY key", list(keys)
        ).fetchall()
    usages = []
    for (value,) in rows:
        key = FlowKey.from_record(orjson.loads(value))
        waiting = c.execute(
            "SELECT COUNT(*) FROM gates WHERE stage = ? AND flow_key = ? AND due <= ?",
            (WAIT_LIST, key.key, now),
        ).fetchone()[0]
        usages.append(FlowKeyUsage(key, _running(c, key.key), waiting))
    return usages


def change_key(c: sqlite3.Connection, name: str, change: Callable[[FlowKey], FlowKey]) -> FlowKey:
    key = change(load_key(c, name))
    store_key(c, key)
    return key


def load_key(c: sqlite3.Connection, name: str) -> FlowKey:
    row = c.execute("SELECT value FROM flow_keys WHERE key = ?", (name,)).fetchone()
    return FlowKey(name) if row is None else FlowKey.from_record(orjson.loads(row[0]))


def store_key(c: sqlite3.Connection, key: FlowKey) -> None:
    c.execute(
        "INSERT OR REPLACE INTO flow_keys (key, value) VALUES (?, ?)",
        (key.key, orjson.dumps(key.to_record())),
    )


def _given(message: Message) -> FlowControl:
    assert message.flow_control_key is not None
    return FlowControl(
        message.flow_control_key, message.flow_parallelism, message.flow_rate, message.flow_period
    )


def _distinct(c: sqlite3.Connection, column: str, stage: int) -> list[str]:
    """The distinct values of ``column`` at ``stage``: one index probe per value, not a scan of
    every waiting row (a paused queue may hold many)."""
    found: list[str] = []
    value = c.execute(
        f"SELECT MIN({column}) FROM gates WHERE stage = ? AND {column} IS NOT NULL", (stage,)
    ).fetchone()[0]
    while value is not None:
        found.append(value)
        value = c.execute(
            f"SELECT MIN({column}) FROM gates WHERE stage = ? AND {column} > ?", (stage, value)
        ).fetchone()[0]
    return found


def _held(c: sqlite3.Connection, queue: str) -> int:
    return int(
        c.execute(
            "SELECT COUNT(DISTINCT slot) FROM gates WHERE queue = ? AND stage > 0", (queue,)
        ).fetchone()[0]
    )


def _running(c: sqlite3.Connection, key: str) -> int:
    return int(
        c.execute(
            "SELECT COUNT(*) FROM gates WHERE stage = ? AND flow_key = ?", (STARTED, key)
        ).fetchone()[0]
    )


def _queue_record(c: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    row = c.execute(
        "SELECT value FROM records WHERE kind = ? AND key = ?", (queues.QUEUE, name)
    ).fetchone()
    return None if row is None else dict(orjson.loads(row[0]))


def _next_wake(c: sqlite3.Connection, now: int, wake: int | None) -> int | None:
    """The earlier of ``wake`` and the next due time of a parked message."""
    later = c.execute("SELECT MIN(due) FROM gates WHERE stage < 2 AND due > ?", (now,)).fetchone()[
        0
    ]
    candidates = [t for t in (wake, later) if t is not None]
    return min(candidates, default=None)
