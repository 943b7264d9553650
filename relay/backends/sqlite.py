"""The embedded backend: one SQLite file in WAL mode, owned by one relay process.

All statements run on one thread that owns the connection. Work queued while a transaction runs
is committed together in the next one (group commit), each operation inside its own savepoint so a
failing operation rolls back alone. A message is committed before ``accept`` returns.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
import queue
import secrets
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import orjson

from relay.backends import sqlite_gates as gates
from relay.backends import sqlite_runs as _runs
from relay.backends.base import kept_events, key_range
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

T = TypeVar("T")
_Op = tuple[
    Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop, bool
]
_GROUP_LIMIT = 256
_PURGE_ROWS = 500  # rows a purge step looks at: one short transaction on the writer thread
_PURGE_STEPS = 20  # steps a purge call takes: well under retention's budget for a tick

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    retried INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    visible_at INTEGER,  -- pending: due (or leased) until then; NULL once finished
    receipt TEXT,  -- the live lease's receipt
    record TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (visible_at) WHERE visible_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    state TEXT NOT NULL,
    url TEXT NOT NULL,
    topic_name TEXT,
    queue_name TEXT,
    schedule_id TEXT,
    label TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_message ON events (message_id, seq);
CREATE TABLE IF NOT EXISTS dedup (
    key TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    url TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dedup_expiry ON dedup (expires_at);  -- retention's purge
CREATE TABLE IF NOT EXISTS dlq (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    dlq_id TEXT NOT NULL UNIQUE,
    message_id TEXT NOT NULL,
    url TEXT NOT NULL,
    topic_name TEXT,
    queue_name TEXT,
    schedule_id TEXT,
    label TEXT,
    response_status INTEGER,
    failed_at INTEGER NOT NULL,
    record TEXT NOT NULL,
    body BLOB NOT NULL,
    response TEXT NOT NULL,
    response_body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dlq_failed ON dlq (failed_at);  -- retention's purge
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class DatabaseInUse(RuntimeError):
    """Another relay process owns this database file."""


class _Connection:
    """One SQLite connection on its own thread; operations are grouped into transactions.

    An operation marked not ``durable`` (a lease, a settlement) may be committed without an
    fsync: losing it to a power cut only means a redelivery. A durable one (an accepted
    message, a cancel) makes its whole group commit with the configured ``synchronous``, and in
    WAL mode that fsync also covers every earlier commit.
    """

    def __init__(self, path: str, synchronous: str) -> None:
        self._path = path
        self._synchronous = synchronous.upper()
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="relay-sqlite", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._current_sync = ""
        # Guards the queue's end: no operation is queued behind the stop sentinel, where no one
        # would serve it and its caller would wait forever.
        self._closing = False
        self._closing_lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        with self._closing_lock:
            self._closing = True
            self._queue.put(None)
        self._thread.join()

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._closing_lock:
            if self._closing or not self._thread.is_alive():
                # Queued to no one, the operation would wait forever.
                raise sqlite3.ProgrammingError(f"the database {self._path} is closed")
            self._queue.put((fn, future, loop, durable))
        return await future

    def _serve(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA cache_size=-65536")  # 64 MiB of page cache
            conn.execute("PRAGMA mmap_size=268435456")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.executescript(SCHEMA + gates.SCHEMA + _runs.SCHEMA)
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        while True:
            op = self._queue.get()
            if op is None:
                break
            group = [op]
            while len(group) < _GROUP_LIMIT:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                group.append(nxt)
            results = self._commit(conn, group)
            if len(group) > 1 and any(error is not None for _, error in results):
                # One operation failed and took its group down: run each on its own.
                results = [self._commit(conn, [one])[0] for one in group]
            _deliver_results(group, results)
        conn.close()

    def _commit(
        self, conn: sqlite3.Connection, group: list[_Op]
    ) -> list[tuple[Any, BaseException | None]]:
        sync = self._synchronous if any(op[3] for op in group) else "NORMAL"
        if sync != self._current_sync:
            conn.execute(f"PRAGMA synchronous={sync}")
            self._current_sync = sync
        try:
            conn.execute("BEGIN IMMEDIATE")
            values = [fn(conn) for fn, _, _, _ in group]
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return [(None, exc)] * len(group)
        return [(value, None) for value in values]


def _deliver_results(group: list[_Op], results: list[tuple[Any, BaseException | None]]) -> None:
    """Resolve each operation's future on its loop: one wake-up per loop, not one per future."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]] = {}
    for (_, future, loop, _), (value, error) in zip(group, results, strict=True):
        by_loop.setdefault(loop, []).append((future, value, error))
    for loop, items in by_loop.items():
        loop.call_soon_threadsafe(_resolve_all, items)


def _resolve_all(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in items:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class SqliteBackend:
    """The `Backend` port on one SQLite file (``:memory:`` for a throwaway relay)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        purge_steps: int = _PURGE_STEPS,
        purge_rows: int = _PURGE_ROWS,
    ) -> None:
        self.path = str(path)
        self._conn = _Connection(self.path, synchronous)
        self._reader = None if self.path == ":memory:" else _Reader(self.path)
        self._lock_file: IO[bytes] | None = None
        self._gate_wake: int | None = None  # when a parked message may pass (sqlite_gates)
        self._purge_steps, self._purge_rows = purge_steps, purge_rows
        # The rowid a purge's walk of the messages goes on from (None: walked; the rest next).
        self._purge_after: int | None = 0

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(self.path + ".lock", "wb")  # noqa: SIM115 - held while open
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock_file.close()
                self._lock_file = None
                raise DatabaseInUse(f"another relay process is using {self.path}") from None
        await asyncio.to_thread(self._conn.start)
        # We are the only process on this file: leases held by a crashed predecessor are void.
        await self._conn.run(
            lambda c: c.execute(
                "UPDATE messages SET receipt = NULL, visible_at = 0 WHERE receipt IS NOT NULL"
            )
        )

    async def close(self) -> None:
        await asyncio.to_thread(self._conn.stop)
        if self._reader is not None:
            await asyncio.to_thread(self._reader.close)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # --- settings ---------------------------------------------------------------------------

    async def get_setting(self, name: str) -> str | None:
        def op(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
            return None if row is None else str(row[0])

        return await self._conn.run(op, durable=False)

    async def put_setting(
        self, name: str, value: str, *, if_absent: bool = False, replacing: str | None = None
    ) -> str:
        def op(c: sqlite3.Connection) -> str:
            if replacing is not None:
                c.execute(
                    "UPDATE settings SET value = ? WHERE name = ? AND value = ?",
                    (value, name, replacing),
                )
            else:
                verb = "INSERT OR IGNORE" if if_absent else "INSERT OR REPLACE"
                c.execute(f"{verb} INTO settings (name, value) VALUES (?, ?)", (name, value))
            row = c.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
            return "" if row is None else str(row[0])

        return await self._conn.run(op)

    async def delete_setting(self, name: str, *, if_value: str | None = None) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            if if_value is None:
                return c.execute("DELETE FROM settings WHERE name = ?", (name,)).rowcount > 0
            query = "DELETE FROM settings WHERE name = ? AND value = ?"
            return c.execute(query, (name, if_value)).rowcount > 0

        return await self._conn.run(op)

    # --- wake-ups ---------------------------------------------------------------------------

    @property
    def wake_reach(self) -> int | None:
        """None: the embedded ticker sleeps until the next deadline, nothing to bring."""
        return None

    async def wake_at(self, timer: str, due: int, now: int) -> None:
        """Nothing to do (``wake_reach`` is None)."""

    # --- configuration records --------------------------------------------------------------

    async def put_record(self, kind: str, key: str, value: dict[str, Any]) -> None:
        data = orjson.dumps(value)
        await self._conn.run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO records (kind, key, value) VALUES (?, ?, ?)",
                (kind, key, data),
            )
        )

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        def op(c: sqlite3.Connection) -> dict[str, Any] | None:
            row = c.execute(
                "SELECT value FROM records WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
            return None if row is None else dict(orjson.loads(row[0]))

        return await self._conn.run(op, durable=False)

    async def list_records(
        self,
        kind: str,
        prefix: str = "",
        *,
        start: str | None = None,
        stop: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        low, high = key_range(prefix, start, stop)

        def op(c: sqlite3.Connection) -> list[dict[str, Any]]:
            # A range of the primary key, read no further than ``limit`` rows (-1: no limit).
            rows = c.execute(
                "SELECT value FROM records WHERE kind = ? AND key >= ?"
                + ("" if high is None else " AND key < ?")
                + " ORDER BY key LIMIT ?",
                (kind, low, *(() if high is None else (high,)), -1 if limit is None else limit),
            )
            return [dict(orjson.loads(row[0])) for row in rows]

        return await self._conn.run(op, durable=False)

    async def delete_record(self, kind: str, key: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            cursor = c.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))
            return cursor.rowcount > 0

        return await self._conn.run(op)

    # --- messages ---------------------------------------------------------------------------

    async def accept(
        self, messages: Sequence[Message], events: Sequence[Event], now: int, dedup_window: int
    ) -> list[Accepted]:
        return await self._conn.run(lambda c: _accept(c, messages, events, now, dedup_window))

    async def accept_run_messages(
        self,
        messages: Sequence[Message],
        events: Sequence[Event],
        now: int,
        dedup_window: int,
        runs: Sequence[WorkflowRun],
    ) -> list[Accepted]:
        def op(c: sqlite3.Connection) -> list[Accepted]:
            def store(kept: Sequence[Message]) -> list[Accepted]:
                return _accept(c, kept, events, now, dedup_window)

            return _runs.accept(c, messages, now, runs, store)

        return await self._conn.run(op)

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        return await self._conn.run(lambda c: _runs.get(c, run_id), durable=False)

    async def run_entries(self, run_id: str, upto: int | None = None) -> list[RunEntry]:
        return await self._conn.run(lambda c: _runs.entries(c, run_id, upto), durable=False)

    async def end_run(
        self, run_id: str, state: RunState, now: int, *, response: str | None = None
    ) -> tuple[WorkflowRun, bool] | None:
        return await self._conn.run(lambda c: _runs.end(c, run_id, state, now, response=response))

    async def find_runs(self, query: RunQuery) -> list[WorkflowRun]:
        return await self._conn.run(lambda c: _runs.find(c, query), durable=False)

    async def list_runs(self, query: RunLogQuery) -> list[WorkflowRun]:
        return await self._conn.run(lambda c: _runs.listed(c, query), durable=False)

    async def purge(self, before: int, now: int) -> tuple[int, bool]:
        """At most ``purge_steps`` short steps on the writer thread, going on from where the
        last call stopped: messages walked in insertion order (no index on finishing time to
        keep up on the hot path) until they were created after ``before``, then ended runs, DLQ
        entries and expired dedup ids; the sweep after a finished one starts over."""
        total = 0
        for _ in range(self._purge_steps):
            if self._purge_after is not None:
                walk = functools.partial(
                    _purge_messages, after=self._purge_after, before=before, rows=self._purge_rows
                )
                gone, self._purge_after = await self._conn.run(walk, durable=False)
            else:
                rest = functools.partial(_purge_rest, before=before, now=now, rows=self._purge_rows)
                if not (gone := await self._conn.run(rest, durable=False)):
                    self._purge_after = 0
                    return total, False
            total += gone
        return total, True

    async def copy_run(self, source: str, run: WorkflowRun, upto: int | None) -> None:
        await self._conn.run(lambda c: _runs.copy(c, source, run, upto))

    async def lease(self, now: int, limit: int, visibility: int) -> list[Lease]:
        if limit <= 0:
            return []

        def op(c: sqlite3.Connection) -> list[Lease]:
            self._gate_wake = gates.admit(c, now, limit)
            token = secrets.token_hex(8)
            until = now + visibility
            due = [
                row[0]
                for row in c.execute(
                    "SELECT id FROM messages WHERE visible_at IS NOT NULL AND visible_at <= ?"
                    " ORDER BY visible_at LIMIT ?",
                    (now, limit),
                )
            ]
            if not due:
                return []
            c.executemany(
                "UPDATE messages SET visible_at = ?, receipt = ?, state = 'ACTIVE', updated_at = ?"
                " WHERE id = ?",
                [(until, token + mid, now, mid) for mid in due],
            )
            receipts = {mid: token + mid for mid in due}
            leases = []
            for message in _load_messages(c, due):
                message.state = MessageState.ACTIVE
                leases.append(
                    Lease(message=message, receipt=receipts[message.id], visible_until=until)
                )
            _insert_events(
                c, [Event.of(lease.message, MessageState.ACTIVE, now) for lease in leases]
            )
            return leases

        return await self._conn.run(op, durable=False)

    async def settle(self, lease: Lease, settlement: Settlement, now: int) -> bool:
        message = lease.message

        def op(c: sqlite3.Connection) -> bool:
            updated = c.execute(
                "UPDATE messages SET state = ?, retried = ?, updated_at = ?, visible_at = ?,"
                " receipt = NULL WHERE id = ? AND receipt = ?",
                (
                    str(settlement.state),
                    settlement.retried,
                    now,
                    settlement.next_due if settlement.state == MessageState.RETRY else None,
                    message.id,
                    lease.receipt,
                ),
            ).rowcount
            if not updated:
                return False
            gates.settled(c, message.id, settlement.state, settlement.next_due)
            if settlement.dlq is not None:
                _insert_dlq(c, settlement.dlq)
            follow_ups = settlement.follow_ups
            if settlement.fails_run is not None:
                dlq_id = settlement.dlq.dlq_id if settlement.dlq else None
                ended = _runs.end(c, settlement.fails_run, RunState.RUN_FAILED, now, dlq_id=dlq_id)
                if ended is None or not ended[1]:
                    follow_ups = []  # the run had ended: its failure was reported before
            _accept(c, follow_ups, settlement.events, now, 0)
            return True

        return await self._conn.run(op, durable=False)

    async def cancel(self, message_ids: Sequence[str], now: int) -> list[str]:
        def op(c: sqlite3.Connection) -> list[str]:
            cancelled = []
            for message in _load_messages(c, list(message_ids)):
                if message.state.final:
                    continue
                c.execute(
                    "UPDATE messages SET state = 'CANCELED', updated_at = ?, visible_at = NULL,"
                    " receipt = NULL WHERE id = ?",
                    (now, message.id),
                )
                gates.cancelled(c, message.id)
                _insert_events(c, [Event.of(message, MessageState.CANCELED, now)])
                cancelled.append(message.id)
            return cancelled

        return await self._conn.run(op)

    async def find_pending(self, query: PendingQuery) -> list[str]:
        def op(c: sqlite3.Connection) -> list[str]:
            rows = c.execute(
                "SELECT record FROM messages"
                " WHERE state NOT IN ('DELIVERED', 'FAILED', 'CANCELED') ORDER BY rowid"
            )
            found = (Message.from_record(orjson.loads(row[0]), b"") for row in rows)
            return [m.id for m in found if query.matches(m)]

        return await self._conn.run(op, durable=False)

    async def get_message(self, message_id: str) -> Message | None:
        found = await self._conn.run(lambda c: _load_messages(c, [message_id]), durable=False)
        return found[0] if found else None

    async def next_due(self) -> int | None:
        def op(c: sqlite3.Connection) -> int | None:
            value = c.execute(
                "SELECT MIN(visible_at) FROM messages WHERE visible_at IS NOT NULL"
            ).fetchone()[0]
            dues = [int(t) for t in (value, self._gate_wake) if t is not None]
            return min(dues, default=None)

        return await self._conn.run(op, durable=False)

    async def queue_stats(self, now: int) -> QueueStats:
        def op(c: sqlite3.Connection) -> QueueStats:
            # A lease voided at open() has visible_at 0: it has been due since its creation.
            due, waiting, in_flight, oldest = c.execute(
                "SELECT COUNT(*) FILTER (WHERE visible_at <= :now),"
                " COUNT(*) FILTER (WHERE visible_at > :now AND receipt IS NULL),"
                " COUNT(*) FILTER (WHERE visible_at > :now AND receipt IS NOT NULL),"
                " MIN(MAX(visible_at, created_at)) FILTER (WHERE visible_at <= :now)"
                " FROM messages WHERE visible_at IS NOT NULL",
                {"now": now},
            ).fetchone()
            return QueueStats(due, waiting, in_flight, None if oldest is None else int(oldest))

        return await self._conn.run(op, durable=False)

    # --- queues and flow control (sqlite_gates) ----------------------------------------------

    async def queue_lags(self, names: Sequence[str]) -> dict[str, int]:
        return await self._conn.run(lambda c: gates.queue_lags(c, names), durable=False)

    async def admit_waiting(self, now: int, *, queue: str | None = None) -> None:
        """Nothing to do: the next lease admits (the service wakes the worker)."""

    async def flow_keys(self, now: int, keys: Sequence[str] | None = None) -> list[FlowKeyUsage]:
        return await self._conn.run(lambda c: gates.flow_keys(c, now, keys), durable=False)

    async def change_flow_key(
        self, key: str, change: Callable[[FlowKey], FlowKey], now: int
    ) -> FlowKey:
        return await self._conn.run(lambda c: gates.change_key(c, key, change))

    async def in_flight(self, now: int) -> int:
        def op(c: sqlite3.Connection) -> int:
            return int(
                c.execute(
                    "SELECT COUNT(*) FROM messages WHERE receipt IS NOT NULL AND visible_at > ?",
                    (now,),
                ).fetchone()[0]
            )

        return await self._conn.run(op, durable=False)

    # --- logs and DLQ -----------------------------------------------------------------------

    async def list_events(self, query: EventQuery) -> Page:
        where, params = _filters(
            query.cursor,
            [
                ("message_id", query.message_ids),
                ("state", [str(s) for s in query.states]),
                ("url", query.urls),
                ("topic_name", query.topic_names),
                ("queue_name", query.queue_names),
                ("schedule_id", query.schedule_ids),
            ],
            "time",
            query.from_time,
            query.to_time,
            labels=query.labels,
        )

        def op(c: sqlite3.Connection) -> Page:
            # The columns narrow; query.matches decides (host, path, flow-control key and
            # caller IP are in the detail only), so a page may take more than one read.
            found: list[Event] = []
            below: list[int] = []
            while len(found) <= query.count:
                rows = c.execute(
                    "SELECT seq, time, message_id, state, url, detail FROM events"
                    f" WHERE {where}{' AND seq < ?' if below else ''} ORDER BY seq DESC LIMIT ?",
                    [*params, *below, query.count + 1],
                ).fetchall()
                events = (
                    Event(
                        seq=seq,
                        time=time,
                        message_id=mid,
                        state=MessageState(state),
                        url=url,
                        detail=orjson.loads(detail),
                    )
                    for seq, time, mid, state, url, detail in rows
                )
                found += [event for event in events if query.matches(event)]
                if len(rows) <= query.count:
                    break
                below = [rows[-1][0]]
            items = found[: query.count]
            cursor = str(items[-1].seq) if len(found) > query.count and items else None
            return Page(items=items, cursor=cursor)

        return await self._conn.run(op, durable=False)

    async def list_dlq(self, query: DlqQuery) -> Page:
        where, params = _filters(
            query.cursor,
            [
                ("dlq_id", query.dlq_ids),
                ("message_id", query.message_ids),
                ("url", query.urls),
                ("topic_name", query.topic_names),
                ("queue_name", query.queue_names),
                ("schedule_id", query.schedule_ids),
                ("response_status", query.response_statuses),
                ("json_extract(CAST(record AS TEXT), '$.caller_ip')", query.caller_ips),
                (
                    "json_extract(CAST(record AS TEXT), '$.flow_control_key')",
                    query.flow_control_keys,
                ),
            ],
            "failed_at",
            query.from_time,
            query.to_time,
            labels=query.labels,
        )

        def op(c: sqlite3.Connection) -> Page:
            rows = c.execute(
                f"SELECT seq, {_DLQ_COLUMNS} FROM dlq WHERE {where} ORDER BY seq DESC LIMIT ?",
                [*params, query.count + 1],
            ).fetchall()
            items = [_dlq_from_row(row[1:]) for row in rows[: query.count]]
            cursor = str(rows[query.count - 1][0]) if len(rows) > query.count else None
            return Page(items=items, cursor=cursor)

        return await self._conn.run(op, durable=False)

    async def get_dlq(self, dlq_id: str) -> DlqEntry | None:
        def op(c: sqlite3.Connection) -> DlqEntry | None:
            row = c.execute(
                f"SELECT {_DLQ_COLUMNS} FROM dlq WHERE dlq_id = ?", (dlq_id,)
            ).fetchone()
            return None if row is None else _dlq_from_row(row)

        return await self._conn.run(op, durable=False)

    async def delete_dlq(self, dlq_ids: Sequence[str]) -> int:
        def op(c: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(dlq_ids))
            return c.execute(f"DELETE FROM dlq WHERE dlq_id IN ({marks})", list(dlq_ids)).rowcount

        return await self._conn.run(op) if dlq_ids else 0

    # --- the console's views ----------------------------------------------------------------

    async def list_messages(self, query: MessageQuery) -> Page:
        # Newest first by rowid (insertion order): no index to keep up on the hot path. URL and
        # label live in the record; CAST because SQLite 3.45+ reads a BLOB as binary JSONB.
        clauses: list[str] = ["1 = 1"]
        params: list[Any] = []
        if query.cursor:
            clauses.append("rowid < ?")
            params.append(int(query.cursor))
        for column, values in (
            ("id", query.message_ids),
            ("state", [str(s) for s in query.states]),
            ("json_extract(CAST(record AS TEXT), '$.label')", query.labels),
        ):
            if values:
                clauses.append(f"{column} IN ({','.join('?' * len(values))})")
                params.extend(values)
        if query.url_contains:
            clauses.append("instr(json_extract(CAST(record AS TEXT), '$.url'), ?) > 0")
            params.append(query.url_contains)
        if query.from_time is not None:
            clauses.append("created_at >= ?")
            params.append(query.from_time)
        if query.to_time is not None:
            clauses.append("created_at <= ?")
            params.append(query.to_time)

        def op(c: sqlite3.Connection) -> Page:
            rows = c.execute(
                "SELECT rowid, state, retried, record FROM messages"
                f" WHERE {' AND '.join(clauses)} ORDER BY rowid DESC LIMIT ?",
                [*params, query.count + 1],
            ).fetchall()
            items = []
            for _, state, retried, record in rows[: query.count]:
                message = Message.from_record(orjson.loads(record), b"")
                message.state, message.retried = MessageState(state), retried
                items.append(message)
            cursor = str(rows[query.count - 1][0]) if len(rows) > query.count else None
            return Page(items=items, cursor=cursor)

        return await self._read(op)

    async def count_messages(self) -> MessageCounts:
        def op(c: sqlite3.Connection) -> MessageCounts:
            rows = c.execute("SELECT state, COUNT(*) FROM messages GROUP BY state")
            return MessageCounts({MessageState(state): count for state, count in rows})

        return await self._read(op)

    async def list_outcomes(self, since: int, limit: int) -> list[Outcome]:
        def op(c: sqlite3.Connection) -> list[Outcome]:
            # No index on time (it would cost every insert): events are appended in time order,
            # give or take the jitter between writers, so the window starts near a seq that a
            # binary search finds; the margin covers the jitter.
            first = _first_seq_at(c, since - _ORDER_MARGIN_MS)
            rows = c.execute(
                "SELECT time, state, json_extract(CAST(detail AS TEXT), '$.duration') FROM events"
                " WHERE seq >= ? AND state IN ('DELIVERED', 'RETRY', 'FAILED') AND time >= ?"
                " ORDER BY seq DESC LIMIT ?",
                (first, since, limit),
            )
            return [(time, _STATES[state], duration) for time, state, duration in rows]

        return await self._read(op)

    async def _read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only query for the console beside the writer thread (WAL lets readers
        run beside it), so that a long scan never holds up publishing or delivery."""
        if self._reader is None:
            return await self._conn.run(op, durable=False)
        return await asyncio.to_thread(self._reader.run, op)


class _Reader:
    """A read-only connection, opened on first use, used by one thread at a time."""

    def __init__(self, path: str) -> None:
        self._uri = Path(path).absolute().as_uri() + "?mode=ro"
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._conn is None:
                self._conn = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
                self._conn.execute("PRAGMA busy_timeout=5000")
                self._conn.execute("PRAGMA mmap_size=268435456")
            return op(self._conn)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _first_seq_at(c: sqlite3.Connection, time_ms: int) -> int:
    """The first event seq at or after ``time_ms``, assuming seq order is time order."""
    low, high = c.execute("SELECT MIN(seq), MAX(seq) + 1 FROM events").fetchone()
    if low is None:
        return 0
    while low < high:
        middle = (low + high) // 2
        seq, time = c.execute(
            "SELECT seq, time FROM events WHERE seq >= ? ORDER BY seq LIMIT 1", (middle,)
        ).fetchone()
        if time < time_ms:
            low = seq + 1
        else:
            high = middle
    return int(low)


_STATES = {str(s): s for s in MessageState}
_ORDER_MARGIN_MS = 300_000


# --- statements shared by several operations -------------------------------------------------


def _accept(
    c: sqlite3.Connection,
    messages: Sequence[Message],
    events: Sequence[Event],
    now: int,
    dedup_window: int,
) -> list[Accepted]:
    results: list[Accepted] = []
    stored: list[Message] = []
    for message in messages:
        if message.dedup_key is not None:
            row = c.execute(
                "SELECT message_id, url FROM dedup WHERE key = ? AND expires_at > ?",
                (message.dedup_key, now),
            ).fetchone()
            if row is not None:
                results.append(Accepted(message_id=row[0], url=row[1], deduplicated=True))
                continue
            c.execute(
                "INSERT OR REPLACE INTO dedup (key, message_id, url, expires_at) VALUES (?,?,?,?)",
                (message.dedup_key, message.id, message.url, now + dedup_window),
            )
        stored.append(message)
        results.append(Accepted(message_id=message.id, url=message.url))
    c.executemany(
        "INSERT INTO messages (id, state, retried, created_at, updated_at, visible_at, record,"
        " body) VALUES (?,?,?,?,?,?,?,?)",
        [
            (
                m.id,
                str(m.state),
                m.retried,
                m.created_at,
                now,
                m.not_before,
                orjson.dumps(m.to_record()),
                m.body,
            )
            for m in stored
        ],
    )
    gates.accepted(c, stored)
    _insert_events(c, kept_events(events, {m.id for m in stored}))
    return results


def _insert_events(c: sqlite3.Connection, events: Sequence[Event]) -> None:
    c.executemany(
        "INSERT INTO events (time, message_id, state, url, topic_name, queue_name, schedule_id,"
        " label, detail) VALUES (?,?,?,?,?,?,?,?,?)",
        [
            (
                e.time,
                e.message_id,
                str(e.state),
                e.url,
                e.detail.get("topicName"),
                e.detail.get("queueName"),
                e.detail.get("scheduleId"),
                e.detail.get("label"),
                orjson.dumps(e.detail),
            )
            for e in events
        ],
    )


def _load_messages(c: sqlite3.Connection, ids: list[str]) -> list[Message]:
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    rows = c.execute(
        f"SELECT state, retried, record, body FROM messages WHERE id IN ({marks})", ids
    ).fetchall()
    messages = []
    for state, retried, record, body in rows:
        message = Message.from_record(orjson.loads(record), bytes(body))
        message.state = MessageState(state)
        message.retried = retried
        messages.append(message)
    order = {mid: i for i, mid in enumerate(ids)}
    messages.sort(key=lambda m: order[m.id])
    return messages


_DLQ_COLUMNS = "dlq_id, failed_at, response_status, record, body, response, response_body"


def _insert_dlq(c: sqlite3.Connection, entry: DlqEntry) -> None:
    m = entry.message
    c.execute(
        "INSERT INTO dlq (dlq_id, message_id, url, topic_name, queue_name, schedule_id, label,"
        " response_status, failed_at, record, body, response, response_body)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            entry.dlq_id,
            m.id,
            m.url,
            m.topic_name,
            m.queue_name,
            m.schedule_id,
            m.label,
            entry.response_status,
            entry.failed_at,
            orjson.dumps(m.to_record()),
            m.body,
            orjson.dumps({"headers": entry.response_headers, "error": entry.error}),
            entry.response_body,
        ),
    )


def _dlq_from_row(row: Sequence[Any]) -> DlqEntry:
    dlq_id, failed_at, status, record, body, response, response_body = row
    extra = orjson.loads(response)
    return DlqEntry(
        dlq_id=dlq_id,
        message=Message.from_record(orjson.loads(record), bytes(body)),
        failed_at=failed_at,
        response_status=status,
        response_headers=[(str(k), str(v)) for k, v in extra["headers"]],
        response_body=bytes(response_body),
        error=extra.get("error"),
    )


def _filters(
    cursor: str | None,
    columns: list[tuple[str, Sequence[Any]]],
    time_column: str,
    from_time: int | None,
    to_time: int | None,
    *,
    labels: Sequence[str] = (),
) -> tuple[str, list[Any]]:
    """A WHERE clause: each column IN its values, a ``label`` column holding any of ``labels``
    (it keeps them joined by ","), the time range, and ``seq`` below the cursor."""
    clauses = ["1 = 1"]
    params: list[Any] = []
    if cursor:
        clauses.append("seq < ?")
        params.append(min(int(cursor), _MAX_INTEGER))
    for column, values in columns:
        if values:
            clauses.append(f"{column} IN ({','.join('?' * len(values))})")
            params.extend(values)
    if labels:
        clauses.append("(" + " OR ".join(["instr(',' || label || ',', ?) > 0"] * len(labels)) + ")")
        params.extend(f",{label}," for label in labels)
    if from_time is not None:
        clauses.append(f"{time_column} >= ?")
        params.append(min(from_time, _MAX_INTEGER))
    if to_time is not None:
        clauses.append(f"{time_column} <= ?")
        params.append(min(to_time, _MAX_INTEGER))
    return " AND ".join(clauses), params


_MAX_INTEGER = 2**63 - 1  # SQLite's; a larger bound would raise OverflowError


_FINAL_STATES = tuple(str(s) for s in MessageState if s.final)


def _purge_messages(
    c: sqlite3.Connection, *, after: int, before: int, rows: int
) -> tuple[int, int | None]:
    """Delete the finished messages (and their events) among the next ``rows`` rows after
    rowid ``after``; how many went, and the rowid to go on from (None: the rest were created
    after ``before``, so none of them can have finished before it)."""
    found = c.execute(
        "SELECT rowid, id, state, updated_at, created_at FROM messages WHERE rowid > ?"
        " ORDER BY rowid LIMIT ?",
        (after, rows),
    ).fetchall()
    old = [row[1] for row in found if row[2] in _FINAL_STATES and row[3] < before]
    if old:
        marks = ",".join("?" * len(old))
        c.execute(f"DELETE FROM events WHERE message_id IN ({marks})", old)
        c.execute(f"DELETE FROM messages WHERE id IN ({marks})", old)
    more = len(found) == rows and found[-1][4] < before
    return len(old), (found[-1][0] if more else None)


def _purge_rest(c: sqlite3.Connection, *, before: int, now: int, rows: int) -> int:
    """One step over ended runs, DLQ entries and dedup ids, up to ``rows`` of each; how many
    went."""
    gone = _runs.purge(c, before, rows)
    gone += c.execute(
        "DELETE FROM dlq WHERE seq IN (SELECT seq FROM dlq WHERE failed_at < ? LIMIT ?)",
        (before, rows),
    ).rowcount
    gone += c.execute(
        "DELETE FROM dedup WHERE rowid IN (SELECT rowid FROM dedup WHERE expires_at <= ? LIMIT ?)",
        (now, rows),
    ).rowcount
    return gone
