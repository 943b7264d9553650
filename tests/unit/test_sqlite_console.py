"""The SQLite backend's console queries: the outcome window found without an index on time,
and reads on their own connection."""

from __future__ import annotations

from pathlib import Path

from relay.backends.sqlite import SqliteBackend
from relay.models import Event, Message, MessageCounts, MessageState


def _message(i: int) -> Message:
    return Message(
        id=f"msg_{i}",
        url="http://127.0.0.1:9/",
        method="POST",
        body=b"",
        headers=[],
        max_retries=0,
        timeout=5,
        not_before=10**12,
        created_at=i,
    )


async def test_outcomes_are_those_of_the_window_even_slightly_out_of_order(
    tmp_path: Path,
) -> None:
    backend = SqliteBackend(tmp_path / "relay.db")
    await backend.open()
    try:
        base = 1_800_000_000_000
        events = []
        for i in range(2_000):
            # a second apart, every tenth one written 2 s late (another writer's clock)
            time = base + i * 1000 - (2_000 if i % 10 == 0 else 0)
            state = (MessageState.DELIVERED, MessageState.RETRY, MessageState.ACTIVE)[i % 3]
            events.append(Event(time, f"msg_{i}", state, "http://127.0.0.1:9/", {"duration": i}))
        await backend.accept([_message(0)], events, base, 0)
        since = base + 1_500 * 1000
        got = await backend.list_outcomes(since, 10_000)
        expected = sorted(
            (e.time, e.state, e.detail["duration"])
            for e in events
            if e.time >= since and e.state != MessageState.ACTIVE
        )
        assert sorted(got) == expected
        assert got[0][2] == 1_999  # newest first
        assert len(await backend.list_outcomes(since, 5)) == 5
        assert await backend.list_outcomes(base + 10**9, 10) == []
        assert await backend.count_messages() == MessageCounts({MessageState.CREATED: 1})
    finally:
        await backend.close()


async def test_an_empty_database_has_no_outcomes(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path / "relay.db")
    await backend.open()
    try:
        assert await backend.list_outcomes(0, 10) == []
        assert await backend.count_messages() == MessageCounts()
    finally:
        await backend.close()
