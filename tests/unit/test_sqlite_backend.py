"""SQLite-only behaviour: one owner per file, and a restart voids a crashed owner's leases."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.backends.sqlite import DatabaseInUse, SqliteBackend
from tests.conformance.test_backend_port import T0, _message


async def test_restart_releases_leases_of_a_crashed_process(tmp_path: Path) -> None:
    first = SqliteBackend(tmp_path / "r.db")
    await first.open()
    await first.accept([_message("msg_a")], [], T0, 0)
    assert len(await first.lease(T0, 10, visibility=3_600_000)) == 1
    await first.close()  # as after a crash: the lease was never settled
    second = SqliteBackend(tmp_path / "r.db")
    await second.open()
    try:
        [lease] = await second.lease(T0, 10, visibility=1000)
        assert lease.message.id == "msg_a"
    finally:
        await second.close()


async def test_second_process_on_the_same_file_is_refused(tmp_path: Path) -> None:
    first = SqliteBackend(tmp_path / "r.db")
    await first.open()
    try:
        with pytest.raises(DatabaseInUse):
            await SqliteBackend(tmp_path / "r.db").open()
    finally:
        await first.close()


async def test_wal_mode(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path / "w.db")
    await backend.open()
    try:
        mode = await backend._conn.run(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
        assert mode == "wal"
    finally:
        await backend.close()
