"""Backend.queue_stats, the metrics' queue gauges: due, waiting and in flight, and since when
the longest-waiting due message has been due."""

from __future__ import annotations

from pathlib import Path

from relay.backends.base import Backend
from relay.backends.sqlite import SqliteBackend
from tests.conformance.test_backend_port import T0, _lease_when_due, _message

HOUR = 3_600_000


async def test_queue_stats_split_due_waiting_and_in_flight(backend: Backend) -> None:
    await backend.open()
    try:
        empty = await backend.queue_stats(T0)
        assert (empty.depth, empty.oldest_due) == (0, None)
        now = [_message(f"msg_now{i}") for i in range(2)]
        later = [_message(f"msg_later{i}", T0 + HOUR) for i in range(3)]
        await backend.accept([*now, *later], [], T0, 0)
        stats = await backend.queue_stats(T0)
        assert (stats.due, stats.waiting, stats.in_flight) == (2, 3, 0)

        leases = await _lease_when_due(backend, T0, visibility=2 * HOUR)
        assert len(leases) == 2
        stats = await backend.queue_stats(T0)
        assert (stats.due, stats.waiting, stats.in_flight) == (0, 3, 2)

        # A minute after the later ones came due, nothing has taken them yet.
        stats = await backend.queue_stats(T0 + HOUR + 60_000)
        assert (stats.due, stats.waiting, stats.depth) == (3, 0, 5)
        assert stats.oldest_due == T0 + HOUR
    finally:
        await backend.close()


async def test_a_lease_voided_by_a_restart_is_due_since_its_message_was_made(
    tmp_path: Path,
) -> None:
    """SQLite voids a crashed process's leases at open (visible_at 0): not due since 1970."""
    backend = SqliteBackend(tmp_path / "relay.db")
    await backend.open()
    await backend.accept([_message("msg_a")], [], T0, 0)
    assert len(await backend.lease(T0, 10, visibility=HOUR)) == 1
    await backend.close()
    backend = SqliteBackend(tmp_path / "relay.db")
    await backend.open()
    try:
        stats = await backend.queue_stats(T0 + 5_000)
        assert (stats.due, stats.in_flight, stats.oldest_due) == (1, 0, T0)
    finally:
        await backend.close()
