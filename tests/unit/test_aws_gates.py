"""relay.backends.aws_gates on moto: what repairs a crash between two writes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import orjson
import pytest

from relay.backends.aws import AwsBackend, LeaseDeferred
from tests.conformance.test_backend_port import T0, _delivered, _message
from tests.conftest import aws_backend


async def _skip(gates: Iterable[str], now: int) -> None:
    """An admission pass that never ran: the process died right after the settle."""


async def test_the_ticker_admits_what_a_crash_left_waiting() -> None:
    with aws_backend(max_sqs_delay=0) as aws:
        await aws.open()
        first, second = _message("msg_1"), _message("msg_2")
        first.queue_name = second.queue_name = "q"
        await aws.accept([first, second], [], T0, 0)
        [lease] = await aws.lease(T0, 10, 60_000)
        admit = aws._gates.admit
        aws._gates.admit = _skip  # type: ignore[method-assign]
        assert await aws.settle(lease, _delivered(first, T0 + 1), T0 + 1)
        aws._gates.admit = admit  # type: ignore[method-assign]
        gate = aws._db.get_item(TableName=aws.table, Key=_gate_key("G#Q#q"))["Item"]
        assert gate["gp"]["S"] == "A", "the release marked the queue for attention"
        assert await _copies(aws) == 0, "nothing admitted the second message yet"
        assert await aws.next_due() == T0 + 1
        assert await aws.promote_due(T0 + 2) == 0  # the ticker: no long delay, one gate
        [after] = await aws.lease(T0 + 2, 10, 60_000)
        assert after.message.id == "msg_2"
        await aws.close()


async def test_a_reclaimed_call_slot_sends_the_message_back_to_the_wait_list() -> None:
    with aws_backend(max_sqs_delay=0) as aws:
        await aws.open()
        first = _message("msg_a")
        first.flow_control_key, first.flow_parallelism = "k", 1
        await aws.accept([first], [], T0, 0)
        [lease] = await aws.lease(T0, 10, visibility=1000)
        assert lease.message.id == "msg_a"
        # Its worker died. Long after the lease (and the slot's margin) ended, another
        # message takes the slot back ...
        later = T0 + 1000 + 60_001
        second = _message("msg_b")
        second.flow_control_key, second.flow_parallelism = "k", 1
        await aws.accept([second], [], later, 0)
        await asyncio.sleep(1.1)  # SQS shows the first copy again (visibility is real time)
        leases = await aws.lease(later, 10, visibility=60_000)
        # ... so the first one's copy, back from SQS, finds no slot: it waits again.
        assert [lease.message.id for lease in leases] == ["msg_b"]
        [usage] = await aws.flow_keys(later, ["k"])
        assert (usage.running, usage.waiting) == (1, 1)
        assert await aws.settle(leases[0], _delivered(second, later + 1), later + 1)
        [back] = await aws.lease(later + 2, 10, visibility=60_000)
        assert back.message.id == "msg_a"
        await aws.close()


def _gate_key(pk: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": pk}, "sk": {"S": "G"}}


async def _copies(aws: AwsBackend) -> int:
    attributes = aws._sqs.get_queue_attributes(
        QueueUrl=aws._queue(), AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


async def test_sqs_wakes_a_rate_limited_key_when_its_window_ends() -> None:
    """On Lambda nothing polls: the pass that found the rate spent leaves a delayed wake-up
    record in SQS, and the delivery function that receives it lets the next message through."""
    with aws_backend(max_sqs_delay=900) as aws:
        await aws.open()
        messages = [_message("msg_x"), _message("msg_y")]
        for m in messages:
            m.flow_control_key, m.flow_rate, m.flow_period = "per-2s", 1, 2
        await aws.accept(messages, [], T0, 0)
        first = await _receive(aws)
        assert [orjson.loads(r["Body"])["id"] for r in first] == ["msg_x"]
        assert await _receive(aws, wait=1) == []  # the second waits for the next window
        [timer] = await _receive(aws, wait=3)
        assert orjson.loads(timer["Body"]) == {"gate": "G#K#per-2s", "t": T0 + 2000}
        record = {"receiptHandle": timer["ReceiptHandle"], "body": timer["Body"]}
        with pytest.raises(LeaseDeferred):  # this host's clock is behind: come back later
            await aws.lease_record(record, T0 + 1500)
        assert await aws.lease_record(record, T0 + 2000) is None
        [copy] = await _receive(aws)
        assert orjson.loads(copy["Body"])["id"] == "msg_y"
        await aws.close()


async def _receive(aws: AwsBackend, wait: float = 0) -> list[dict[str, str]]:
    """What SQS hands out within ``wait`` seconds (hidden for a minute once received)."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        answer = aws._sqs.receive_message(
            QueueUrl=aws._queue(), MaxNumberOfMessages=10, VisibilityTimeout=60
        )
        got = [dict(m) for m in answer.get("Messages", [])]
        if got or asyncio.get_running_loop().time() >= deadline:
            return got  # type: ignore[return-value]
        await asyncio.sleep(0.1)
