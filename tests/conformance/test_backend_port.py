"""The backend port itself: leases expire and come back, settlement needs the live receipt."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from relay.backends.base import Backend
from relay.models import Event, Lease, Message, MessageState, Settlement

T0 = 1_800_000_000_000


def _message(message_id: str, due: int = T0) -> Message:
    return Message(
        id=message_id,
        url="https://example.com/x",
        method="POST",
        body=b"b",
        headers=[],
        max_retries=3,
        timeout=30,
        not_before=due,
        created_at=T0,
    )


async def _lease_when_due(backend: Backend, now: int, visibility: int) -> list[Lease]:
    """lease() at ``now``; SQS times visibility in real time, so wait up to 3 s for it."""
    deadline = time.monotonic() + 3
    while not (leases := await backend.lease(now, 10, visibility)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return leases


def _delivered(message: Message, now: int) -> Settlement:
    return Settlement(
        state=MessageState.DELIVERED,
        retried=0,
        next_due=None,
        events=[Event.of(message, MessageState.DELIVERED, now)],
    )


async def test_unsettled_lease_expires_and_comes_back(backend: Backend) -> None:
    await backend.open()
    try:
        message = _message("msg_a")
        await backend.accept([message], [], T0, 0)
        [first] = await backend.lease(T0, 10, visibility=1000)
        assert first.message.id == "msg_a" and first.message.state == MessageState.ACTIVE
        assert await backend.lease(T0 + 999, 10, visibility=1000) == []
        [second] = await _lease_when_due(backend, T0 + 1000, visibility=1000)
        assert second.receipt != first.receipt
        # the first holder lost its lease: its outcome is not stored
        assert not await backend.settle(first, _delivered(message, T0 + 1001), T0 + 1001)
        assert await backend.settle(second, _delivered(message, T0 + 1002), T0 + 1002)
        stored = await backend.get_message("msg_a")
        assert stored is not None and stored.state == MessageState.DELIVERED
        assert await backend.lease(T0 + 10**9, 10, visibility=1000) == []
    finally:
        await backend.close()


async def test_lease_takes_due_messages_in_due_order(backend: Backend) -> None:
    await backend.open()
    try:
        await backend.accept(
            [
                _message("msg_late", T0 + 50),
                _message("msg_early", T0 + 10),
                _message("msg_future", T0 + 10**6),
            ],
            [],
            T0,
            0,
        )
        assert await backend.next_due() == T0 + 10
        leases = await backend.lease(T0 + 100, 10, visibility=1000)
        assert [lease.message.id for lease in leases] == ["msg_early", "msg_late"]
        assert [lease.message.id for lease in await backend.lease(T0 + 100, 10, 1000)] == []
    finally:
        await backend.close()


async def test_retry_settlement_re_times_the_message(backend: Backend) -> None:
    await backend.open()
    try:
        message = _message("msg_r")
        await backend.accept([message], [], T0, 0)
        [lease] = await backend.lease(T0, 1, visibility=1000)
        retry = Settlement(
            state=MessageState.RETRY,
            retried=1,
            next_due=T0 + 5000,
            events=[Event.of(message, MessageState.RETRY, T0)],
        )
        assert await backend.settle(lease, retry, T0)
        assert await backend.lease(T0 + 4999, 1, visibility=1000) == []
        [again] = await backend.lease(T0 + 5000, 1, visibility=1000)
        assert again.message.retried == 1
    finally:
        await backend.close()


async def test_settings_compare_and_set(backend: Backend) -> None:
    await backend.open()
    try:
        assert await backend.put_setting("cas", "a", if_absent=True) == "a"
        assert await backend.put_setting("cas", "b", if_absent=True) == "a"  # already there
        assert await backend.put_setting("cas", "b", replacing="x") == "a"  # not what is stored
        assert await backend.get_setting("cas") == "a"
        assert await backend.put_setting("cas", "b", replacing="a") == "b"
        assert await backend.get_setting("cas") == "b"
        assert await backend.put_setting("cas", "c") == "c"  # unconditional
    finally:
        await backend.close()


async def test_settings_compare_and_delete(backend: Backend) -> None:
    await backend.open()
    try:
        await backend.put_setting("cad", "a")
        assert not await backend.delete_setting("cad", if_value="x")  # not what is stored
        assert await backend.get_setting("cad") == "a"
        assert await backend.delete_setting("cad", if_value="a")
        assert await backend.get_setting("cad") is None
        assert not await backend.delete_setting("cad", if_value="a")  # absent
        assert not await backend.delete_setting("cad")
        assert await backend.put_setting("cad", "b", replacing="a") == ""  # none stored
        assert await backend.put_setting("cad", "b", if_absent=True) == "b"
        assert await backend.delete_setting("cad")  # unconditional
        assert await backend.get_setting("cad") is None
    finally:
        await backend.close()


async def test_records_listed_by_key_prefix(backend: Backend) -> None:
    await backend.open()
    try:
        for key in ("ev1\0run2", "ev1\0run1", "ev10\0run1", "ev2\0run1", "ev"):
            await backend.put_record("kind", key, {"key": key})
        listed = await backend.list_records("kind", "ev1\0")
        assert [r["key"] for r in listed] == ["ev1\0run1", "ev1\0run2"]
        assert len(await backend.list_records("kind")) == 5
        assert await backend.list_records("kind", "nothing") == []
    finally:
        await backend.close()


async def test_records_listed_by_key_range_and_limit(backend: Backend) -> None:
    """``start`` inclusive, ``stop`` exclusive, ``limit`` the first n, in key order, with or
    without a prefix: what the waiters' deadline index reads."""
    await backend.open()
    try:
        keys = ["a\x000001", "a\x000002", "a\x000003", "b\x000001", "b\x000002", "c"]
        for key in reversed(keys):
            await backend.put_record("kind", key, {"key": key})

        async def listed(prefix: str = "", **bounds: Any) -> list[str]:
            return [r["key"] for r in await backend.list_records("kind", prefix, **bounds)]

        assert await listed(start="a\x000002", stop="b\x000002") == keys[1:4]
        assert await listed(stop="a\x000003") == keys[:2]
        assert await listed(start="b") == keys[3:]
        assert await listed(start="a\x000002", limit=2) == keys[1:3]
        assert await listed(limit=1) == keys[:1]
        assert await listed("a\x00", start="a\x000002") == keys[1:3]
        assert await listed("b\x00", stop="b\x000002") == keys[3:4]
        assert await listed("a\x00", stop="zz", limit=5) == keys[:3]
        assert await listed(start="a\x000003", stop="a\x000003") == []
        assert await listed(start="b", stop="a") == []
        assert await listed("b\x00", start="c") == []
    finally:
        await backend.close()
