"""Queues and flow control at the backend port: an expired lease keeps its slot (the message is
attempted again, its outcome frees the slot), a cancel frees it, a retry of a keyed message
gives its call slot back."""

from __future__ import annotations

from relay.backends.base import Backend
from relay.models import Event, Message, MessageState, Settlement
from tests.conformance.test_backend_port import T0, _delivered, _lease_when_due, _message


def _queued(message_id: str, queue: str = "q") -> Message:
    message = _message(message_id)
    message.queue_name = queue
    return message


def _keyed(message_id: str, key: str = "k", parallelism: int = 1) -> Message:
    message = _message(message_id)
    message.flow_control_key, message.flow_parallelism = key, parallelism
    return message


async def _ids(backend: Backend, now: int, visibility: int = 1000) -> list[str]:
    return [lease.message.id for lease in await backend.lease(now, 10, visibility)]


async def test_an_expired_lease_keeps_its_queue_slot(backend: Backend) -> None:
    await backend.open()
    try:
        first, second = _queued("msg_q1"), _queued("msg_q2")
        await backend.accept([first, second], [], T0, 0)
        [lease] = await backend.lease(T0, 10, visibility=1000)
        assert lease.message.id == "msg_q1"
        # The worker died: its lease expires, the same message comes back, not the next one.
        [again] = await _lease_when_due(backend, T0 + 1000, visibility=1000)
        assert again.message.id == "msg_q1"
        assert await backend.queue_lags(["q"]) == {"q": 2}
        assert await backend.settle(again, _delivered(first, T0 + 1001), T0 + 1001)
        [after] = await _lease_when_due(backend, T0 + 1002, visibility=1000)
        assert after.message.id == "msg_q2"
        assert await backend.queue_lags(["q"]) == {"q": 1}
    finally:
        await backend.close()


async def test_an_expired_lease_keeps_its_call_slot(backend: Backend) -> None:
    await backend.open()
    try:
        first, second = _keyed("msg_k1"), _keyed("msg_k2")
        await backend.accept([first, second], [], T0, 0)
        assert await _ids(backend, T0) == ["msg_k1"]
        [usage] = await backend.flow_keys(T0, ["k"])
        assert (usage.running, usage.waiting, usage.key.parallelism) == (1, 1, 1)
        [again] = await _lease_when_due(backend, T0 + 1000, visibility=1000)
        assert again.message.id == "msg_k1"
        assert await backend.settle(again, _delivered(first, T0 + 1001), T0 + 1001)
        [after] = await _lease_when_due(backend, T0 + 1002, visibility=1000)
        assert after.message.id == "msg_k2"
    finally:
        await backend.close()


async def test_cancel_frees_the_slot_and_the_line(backend: Backend) -> None:
    await backend.open()
    try:
        messages = [_queued("msg_c1"), _queued("msg_c2"), _queued("msg_c3")]
        await backend.accept(messages, [], T0, 0)
        assert await _ids(backend, T0) == ["msg_c1"]
        assert await backend.cancel(["msg_c2"], T0) == ["msg_c2"]  # waiting in line
        assert await backend.cancel(["msg_c1"], T0) == ["msg_c1"]  # holding the slot
        [lease] = await _lease_when_due(backend, T0 + 1, visibility=1000)
        assert lease.message.id == "msg_c3"
        assert await backend.queue_lags(["q"]) == {"q": 1}
    finally:
        await backend.close()


async def test_a_keyed_retry_gives_its_call_slot_back(backend: Backend) -> None:
    await backend.open()
    try:
        first, second = _keyed("msg_r1"), _keyed("msg_r2")
        await backend.accept([first, second], [], T0, 0)
        [lease] = await backend.lease(T0, 10, visibility=1000)
        retry = Settlement(
            state=MessageState.RETRY,
            retried=1,
            next_due=T0 + 5000,
            events=[Event.of(first, MessageState.RETRY, T0)],
        )
        assert await backend.settle(lease, retry, T0)
        [other] = await _lease_when_due(backend, T0 + 1, visibility=60_000)
        assert other.message.id == "msg_r2"
        # the retry waits for its backoff and then for the key, held by the second message
        assert await _ids(backend, T0 + 5000) == []
        assert await backend.settle(other, _delivered(second, T0 + 5001), T0 + 5001)
        [back] = await _lease_when_due(backend, T0 + 5002, visibility=1000)
        assert back.message.id == "msg_r1" and back.message.retried == 1
    finally:
        await backend.close()
