"""AWS-only behaviour, on moto: long delays and backoffs wait in DynamoDB until the ticker moves
them to SQS with the delay left, large bodies live in S3, dedup holds under races, stale SQS
copies are dropped, the Lambda path leaves deletion to the event source, what one message
costs in AWS requests, and the console's counts of a large table read one segment of it, kept a
minute."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest

from relay.backends.aws import (
    LOG_INDEX,
    TABLE_SCHEMA,
    TIME_INDEX,
    TTL_ATTRIBUTE,
    AwsBackend,
    LeaseDeferred,
    TimerDue,
)
from relay.models import (
    DlqEntry,
    DlqQuery,
    Event,
    EventQuery,
    MessageState,
    PendingQuery,
    Settlement,
)
from tests.conformance.test_backend_port import T0, _delivered, _message
from tests.conftest import aws_backend

SECOND, MINUTE, HOUR = 1000, 60_000, 3_600_000


@pytest.fixture
async def aws() -> AsyncIterator[AwsBackend]:
    with aws_backend() as backend:  # max_sqs_delay = 900 s, as deployed
        await backend.open()
        try:
            yield backend
        finally:
            await backend.close()


class Calls:
    """Every AWS request the backend makes (botocore hooks), and the copies it sends to SQS."""

    def __init__(self, backend: AwsBackend) -> None:
        self.counts: Counter[str] = Counter()
        self.sent: list[dict[str, Any]] = []
        for client in (backend._db, backend._sqs, backend._s3):
            client.meta.events.register("before-call", self._count)
        backend._sqs.meta.events.register(
            "provide-client-params.sqs.SendMessageBatch", self._record
        )

    def _count(self, model: Any, **_: Any) -> None:
        self.counts[model.name] += 1

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.sent += params["Entries"]

    def take(self) -> dict[str, int]:
        counts = dict(self.counts)
        self.counts.clear()
        return counts


def _retry(message_id: str, retried: int, next_due: int, now: int) -> Settlement:
    message = _message(message_id)
    return Settlement(
        state=MessageState.RETRY,
        retried=retried,
        next_due=next_due,
        events=[Event.of(message, MessageState.RETRY, now)],
    )


def _record(received: dict[str, Any]) -> dict[str, Any]:
    """An SQS message as a Lambda event record carries it."""
    return {
        "messageId": received["MessageId"],
        "receiptHandle": received["ReceiptHandle"],
        "body": received["Body"],
        "attributes": {"ApproximateReceiveCount": "1"},
    }


async def _queued(aws: AwsBackend) -> int:
    """Messages in the dispatch queue, visible, delayed or in flight."""
    attributes = aws._sqs.get_queue_attributes(QueueUrl=aws._queue(), AttributeNames=["All"])
    return sum(
        int(attributes["Attributes"][name])
        for name in (
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        )
    )


def _receive(aws: AwsBackend) -> list[dict[str, Any]]:
    answer = aws._sqs.receive_message(
        QueueUrl=aws._queue(), MaxNumberOfMessages=10, VisibilityTimeout=60
    )
    return list(answer.get("Messages", []))


async def test_twenty_minute_delay_waits_in_dynamodb_until_the_ticker_moves_it(
    aws: AwsBackend,
) -> None:
    calls = Calls(aws)
    due = T0 + 20 * MINUTE
    await aws.accept([_message("msg_d", due)], [], T0, 0)
    assert calls.sent == [] and await _queued(aws) == 0
    assert await aws.next_due() == due
    assert await aws.promote_due(T0 + 4 * MINUTE) == 0  # 16 minutes away: too far for SQS
    assert await aws.promote_due(T0 + 5 * MINUTE + 1500) == 1
    [copy] = calls.sent
    assert copy["DelaySeconds"] == 899  # 898.5 s left, rounded up: never early
    assert orjson.loads(copy["MessageBody"]) == {"id": "msg_d", "g": 1}
    assert await aws.next_due() is None
    assert await aws.promote_due(T0 + 6 * MINUTE) == 0  # moved once
    assert await aws.lease(T0 + 6 * MINUTE, 10, 30_000) == []  # SQS keeps it for its delay
    stored = await aws.get_message("msg_d")
    assert stored is not None and stored.state == MessageState.CREATED


async def test_due_long_delay_is_leased_through_the_ticker(aws: AwsBackend) -> None:
    due = T0 + 20 * MINUTE
    await aws.accept([_message("msg_n", due)], [], T0, 0)
    assert await aws.lease(due - 16 * MINUTE, 10, 30_000) == []  # not yet within SQS's reach
    [lease] = await aws.lease(due, 10, 30_000)  # lease() runs the ticker itself
    assert lease.message.id == "msg_n" and lease.message.state == MessageState.ACTIVE


async def test_two_hour_retry_backoff_waits_in_dynamodb(aws: AwsBackend) -> None:
    calls = Calls(aws)
    await aws.accept([_message("msg_r")], [], T0, 0)
    [lease] = await aws.lease(T0, 1, 30_000)
    assert await aws.settle(lease, _retry("msg_r", 1, T0 + 2 * HOUR, T0), T0)
    assert len(calls.sent) == 1  # the first copy only: the retry waits in DynamoDB
    assert await _queued(aws) == 0  # and the leased copy is gone
    assert await aws.next_due() == T0 + 2 * HOUR
    assert await aws.lease(T0 + HOUR, 10, 30_000) == []
    assert await aws.promote_due(T0 + 2 * HOUR - 10 * MINUTE) == 1
    assert calls.sent[-1]["DelaySeconds"] == 600
    assert orjson.loads(calls.sent[-1]["MessageBody"]) == {"id": "msg_r", "g": 2}


async def test_long_retry_is_leased_when_due_with_its_retried_count(aws: AwsBackend) -> None:
    await aws.accept([_message("msg_l")], [], T0, 0)
    [lease] = await aws.lease(T0, 1, 30_000)
    assert await aws.settle(lease, _retry("msg_l", 1, T0 + 2 * HOUR, T0), T0)
    assert await aws.lease(T0 + 2 * HOUR - 16 * MINUTE, 10, 30_000) == []
    [again] = await aws.lease(T0 + 2 * HOUR, 10, 30_000)
    assert again.message.retried == 1


async def test_short_retry_goes_straight_to_sqs_with_its_delay(aws: AwsBackend) -> None:
    calls = Calls(aws)
    await aws.accept([_message("msg_s")], [], T0, 0)
    [lease] = await aws.lease(T0, 1, 30_000)
    assert await aws.settle(lease, _retry("msg_s", 1, T0 + 12_182, T0), T0)
    assert calls.sent[-1]["DelaySeconds"] == 13
    assert await aws.next_due() is None
    assert await _queued(aws) == 1  # the new copy; the leased one was deleted


async def test_large_body_round_trips_through_s3(aws: AwsBackend) -> None:
    body = os.urandom(500_000)  # over DynamoDB's 400 KB item limit
    message = replace(_message("msg_big"), body=body)
    await aws.accept([message], [], T0, 0)
    objects = aws._s3.list_objects_v2(Bucket="relay-bodies")["Contents"]
    assert [o["Key"] for o in objects] == ["body/msg_big"]
    stored = await aws.get_message("msg_big")
    assert stored is not None and stored.body == body
    [lease] = await aws.lease(T0, 1, 30_000)
    assert lease.message.body == body
    response = b"r" * 10_000
    entry = DlqEntry(
        dlq_id="1800000000000-1",
        message=replace(lease.message, state=MessageState.FAILED),
        failed_at=T0,
        response_status=500,
        response_headers=[("X-A", "1")],
        response_body=response,
        error="HTTP 500",
    )
    failed = Settlement(
        state=MessageState.FAILED,
        retried=0,
        next_due=None,
        events=[Event.of(message, MessageState.FAILED, T0, dlqId=entry.dlq_id)],
        dlq=entry,
    )
    assert await aws.settle(lease, failed, T0)
    got = await aws.get_dlq(entry.dlq_id)
    assert got is not None and got.message.body == body and got.response_body == response
    assert got.response_headers == [("X-A", "1")] and got.error == "HTTP 500"
    [listed] = (await aws.list_dlq(DlqQuery(response_statuses=[500]))).items
    assert listed.message.body == body
    assert (await aws.list_dlq(DlqQuery(response_statuses=[404]))).items == []


async def test_small_body_stays_inline(aws: AwsBackend) -> None:
    await aws.accept([replace(_message("msg_small"), body=b"x" * 4096)], [], T0, 0)
    assert "Contents" not in aws._s3.list_objects_v2(Bucket="relay-bodies")


async def test_dedup_within_window_batch_and_after_expiry(aws: AwsBackend) -> None:
    first = replace(_message("msg_1"), dedup_key="k")
    twin = replace(_message("msg_2"), dedup_key="k")
    [a, b] = await aws.accept([first, twin], [], T0, 600_000)
    assert (a.message_id, a.deduplicated) == ("msg_1", False)
    assert (b.message_id, b.deduplicated) == ("msg_1", True)
    [c] = await aws.accept([replace(_message("msg_3"), dedup_key="k")], [], T0 + 599_999, 600_000)
    assert (c.message_id, c.deduplicated) == ("msg_1", True)
    [d] = await aws.accept([replace(_message("msg_4"), dedup_key="k")], [], T0 + 600_000, 600_000)
    assert (d.message_id, d.deduplicated) == ("msg_4", False)
    assert await aws.get_message("msg_2") is None and await aws.get_message("msg_3") is None


async def test_dedup_race_lost_after_the_read_is_still_deduplicated(
    aws: AwsBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await aws.accept([replace(_message("msg_1"), dedup_key="k")], [], T0, 600_000)
    read = aws._dedup_entries
    reads: list[list[str]] = []

    async def stale_first(keys: list[str], now: int) -> Any:
        reads.append(list(keys))
        return {} if len(reads) == 1 else await read(keys, now)

    # As if a concurrent publish stored the id between our read and our write.
    monkeypatch.setattr(aws, "_dedup_entries", stale_first)
    [answer] = await aws.accept([replace(_message("msg_2"), dedup_key="k")], [], T0, 600_000)
    assert (answer.message_id, answer.deduplicated) == ("msg_1", True)
    assert reads == [["k"], ["k"]]
    assert await aws.get_message("msg_2") is None


async def test_batch_over_one_transaction_is_stored_whole(aws: AwsBackend) -> None:
    messages = [replace(_message(f"msg_{i:03d}"), dedup_key=f"k{i}") for i in range(60)]
    events = [Event.of(m, MessageState.CREATED, T0) for m in messages]
    answers = await aws.accept(messages, events, T0, 600_000)  # 180 items: 2 transactions
    assert [a.message_id for a in answers] == [m.id for m in messages]
    for m in messages:
        assert await aws.get_message(m.id) is not None
    page = await aws.list_events(EventQuery(states=[MessageState.CREATED], count=100))
    assert len(page.items) == 60 and page.cursor is None


async def test_failed_second_transaction_rolls_back_the_first(
    aws: AwsBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    transact = aws._transact
    calls: list[int] = []

    async def fail_second(items: list[Any]) -> None:
        calls.append(len(items))
        if len(calls) == 2:
            raise RuntimeError("DynamoDB is down")
        await transact(items)

    monkeypatch.setattr(aws, "_transact", fail_second)
    messages = [replace(_message(f"msg_{i:03d}"), dedup_key=f"k{i}") for i in range(60)]
    with pytest.raises(RuntimeError, match="down"):
        await aws.accept(messages, [], T0, 600_000)
    assert len(calls) == 2
    for m in messages:
        assert await aws.get_message(m.id) is None
    # the dedup ids went with them: publishing again stores the messages
    [again] = await aws.accept([messages[0]], [], T0, 600_000)
    assert not again.deduplicated


async def test_failed_batch_write_rolls_back_what_it_stored(
    aws: AwsBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_all = aws._put_all

    async def throttled(items: list[Any], before: Any = None) -> None:
        await put_all(items[:25], before)
        raise RuntimeError("throttled")

    monkeypatch.setattr(aws, "_put_all", throttled)
    messages = [_message(f"msg_{i:03d}") for i in range(20)]
    events = [Event.of(m, MessageState.CREATED, T0) for m in messages]
    with pytest.raises(RuntimeError, match="throttled"):
        await aws.accept(messages, events, T0, 600_000)
    for m in messages:
        assert await aws.get_message(m.id) is None
    assert (await aws.list_events(EventQuery())).items == []


async def test_cancel_of_a_promoted_message_drops_its_copy(aws: AwsBackend) -> None:
    due = T0 + 20 * MINUTE
    message = _message("msg_c", due)
    await aws.accept([message], [Event.of(message, MessageState.CREATED, T0)], T0, 0)
    assert await aws.promote_due(due) == 1  # in SQS now, due at once
    assert await aws.cancel(["msg_c"], due) == ["msg_c"]
    assert await aws.lease(due, 10, 30_000) == []
    assert await _queued(aws) == 0  # the copy was received, found cancelled and deleted
    stored = await aws.get_message("msg_c")
    assert stored is not None and stored.state == MessageState.CANCELED
    page = await aws.list_events(EventQuery(message_ids=["msg_c"]))
    assert [e.state for e in page.items] == [MessageState.CANCELED, MessageState.CREATED]
    assert await aws.cancel(["msg_c", "msg_unknown"], due) == []


async def test_cancel_of_a_waiting_message_takes_it_off_the_ticker(aws: AwsBackend) -> None:
    await aws.accept([_message("msg_w", T0 + HOUR)], [], T0, 0)
    assert await aws.cancel(["msg_w"], T0) == ["msg_w"]
    assert await aws.next_due() is None
    assert await aws.promote_due(T0 + HOUR) == 0


async def test_lambda_record_is_leased_and_left_to_the_event_source(aws: AwsBackend) -> None:
    message = _message("msg_lambda")
    await aws.accept([message], [], T0, 0)
    [received] = _receive(aws)
    lease = await aws.lease_record(_record(received), T0)
    assert lease is not None and lease.message.state == MessageState.ACTIVE
    assert await aws.settle(lease, _delivered(message, T0), T0)
    assert await _queued(aws) == 1  # the event source mapping deletes it, not settle
    # the same record seen again (a redelivery): nothing to do, report success
    assert await aws.lease_record(_record(received), T0) is None


async def test_lambda_record_of_a_message_not_stored_yet_is_deferred_then_dropped(
    aws: AwsBackend,
) -> None:
    aws._sqs.send_message(QueueUrl=aws._queue(), MessageBody='{"id":"msg_later","g":0}')
    [received] = _receive(aws)
    with pytest.raises(LeaseDeferred):
        await aws.lease_record(_record(received), T0)
    record = _record(received)
    record["attributes"]["ApproximateReceiveCount"] = "5"
    assert await aws.lease_record(record, T0) is None  # an orphan: its accept never landed


async def test_a_wake_up_is_handed_to_the_lambda_runtime_when_due_and_dropped_by_a_poller(
    aws: AwsBackend,
) -> None:
    """wake_at's record names its pass: lease_record raises TimerDue for it once due (hidden
    again if this clock is behind the sender's); lease() takes no message from it."""
    assert aws.wake_reach == 900 * SECOND
    await aws.wake_at("workflow_waiter", T0, T0)
    [received] = _receive(aws)
    with pytest.raises(LeaseDeferred):
        await aws.lease_record(_record(received), T0 - 1500)  # 2 s early here: hidden 2 s
    with pytest.raises(TimerDue) as due:
        await aws.lease_record(_record(received), T0)
    assert (due.value.timer, due.value.due) == ("workflow_waiter", T0)
    assert await _queued(aws) == 1  # the event source deletes it once its pass ran
    aws._sqs.purge_queue(QueueUrl=aws._queue())
    await aws.wake_at("workflow_waiter", T0, T0)
    assert await aws.lease(T0, 10, 60_000) == []
    assert await _queued(aws) == 0  # a polling relay's ticker runs the pass: dropped


async def test_duplicate_copy_is_leased_but_only_one_outcome_is_stored(aws: AwsBackend) -> None:
    # SQS visibility is the lease (no DynamoDB write): a duplicate copy of the same generation,
    # as a promotion that crashed and ran again sends, is attempted too (at least once), but
    # only the first outcome is stored and the other copy is dropped at its next receipt.
    message = _message("msg_dup")
    await aws.accept([message], [], T0, 0)
    aws._sqs.send_message(QueueUrl=aws._queue(), MessageBody='{"id":"msg_dup","g":0}')
    first, second = _receive(aws)
    one = await aws.lease_record(_record(first), T0, visibility=60_000)
    other = await aws.lease_record(_record(second), T0 + 1000, visibility=60_000)
    assert one is not None and other is not None
    assert await aws.settle(one, _delivered(message, T0 + 2000), T0 + 2000)
    assert not await aws.settle(other, _delivered(message, T0 + 2001), T0 + 2001)
    assert await aws.lease_record(_record(second), T0 + 60_000) is None
    states = [e.state for e in (await aws.list_events(EventQuery(message_ids=["msg_dup"]))).items]
    assert states == [MessageState.DELIVERED, MessageState.ACTIVE]


async def test_stale_copy_after_a_retry_is_dropped(aws: AwsBackend) -> None:
    await aws.accept([_message("msg_st")], [], T0, 0)
    [received] = _receive(aws)
    lease = await aws.lease_record(_record(received), T0)
    assert lease is not None
    assert await aws.settle(lease, _retry("msg_st", 1, T0 + 5000, T0), T0)
    # the old copy comes back (the event source had not deleted it yet): generation 0 is stale
    assert await aws.lease_record(_record(received), T0 + 60_000) is None


async def test_requests_per_message(aws: AwsBackend) -> None:
    """What one publish → delivered costs on the Lambda path (the cost model's input)."""
    calls = Calls(aws)
    message = _message("msg_cost")
    await aws.accept([message], [Event.of(message, MessageState.CREATED, T0)], T0, 600_000)
    assert calls.take() == {"SendMessageBatch": 1, "BatchWriteItem": 1}
    [received] = _receive(aws)
    calls.take()
    lease = await aws.lease_record(_record(received), T0)
    assert lease is not None
    assert calls.take() == {"GetItem": 1}  # SQS visibility is the lease: nothing written
    async with aws.log_batch():  # as the delivery Lambda settles a batch
        assert await aws.settle(lease, _delivered(message, T0), T0)
        assert calls.take() == {"UpdateItem": 1}  # the state and the events, in one write
    assert calls.take() == {"BatchWriteItem": 1}  # the batch's log page


async def test_requests_per_batch_and_per_dedup_id(aws: AwsBackend) -> None:
    calls = Calls(aws)
    messages = [_message(f"msg_b{i:02d}") for i in range(100)]
    events = [Event.of(m, MessageState.CREATED, T0) for m in messages]
    await aws.accept(messages, events, T0, 600_000)
    # no transaction without dedup ids: 10 copies per SQS call, each sent just before the
    # BatchWriteItem of its 10 messages (DynamoDB bills units, not calls); the log page of
    # their CREATED events rides in the last one
    assert calls.take() == {"SendMessageBatch": 10, "BatchWriteItem": 10}
    keyed = replace(_message("msg_k"), dedup_key="k")
    await aws.accept([keyed], [Event.of(keyed, MessageState.CREATED, T0)], T0, 600_000)
    assert calls.take() == {"BatchGetItem": 1, "SendMessageBatch": 1, "TransactWriteItems": 1}


async def test_created_table_follows_the_schema(aws: AwsBackend) -> None:
    table = aws._db.describe_table(TableName="relay")["Table"]
    assert table["KeySchema"] == TABLE_SCHEMA["KeySchema"]
    indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert set(indexes) == {TIME_INDEX, LOG_INDEX}
    for schema in TABLE_SCHEMA["GlobalSecondaryIndexes"]:
        assert indexes[schema["IndexName"]]["Projection"] == schema["Projection"]
    ttl = aws._db.describe_time_to_live(TableName="relay")["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": TTL_ATTRIBUTE}


async def test_slow_accept_sends_its_copies_again_and_delivers_once(
    aws: AwsBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An accept whose write outlasted the time lease gives a missing message re-sends copies.
    import relay.backends.aws as aws_module

    monkeypatch.setattr(aws_module, "_RESEND_AFTER", -1.0)
    message = _message("msg_slow")
    await aws.accept([message], [], T0, 0)
    assert await _queued(aws) == 2
    [lease] = await aws.lease(T0, 10, visibility=60_000)
    assert await aws.settle(lease, _delivered(message, T0 + 1), T0 + 1)
    assert await aws.lease(T0 + 2, 10, visibility=60_000) == []
    stored = await aws.get_message("msg_slow")
    assert stored is not None and stored.state == MessageState.DELIVERED


async def test_log_lists_events_of_items_and_pages_newest_first_with_a_cursor(
    aws: AwsBackend,
) -> None:
    # A single accept lists its message item itself; a batch shares a log page; a delivery
    # batch's outcomes share another. Paging by twos gives the same order as one listing.
    alone = _message("msg_alone")
    await aws.accept([alone], [Event.of(alone, MessageState.CREATED, T0)], T0, 0)
    batch = [_message(f"msg_p{i}") for i in range(5)]
    events = [Event.of(m, MessageState.CREATED, T0 + 1) for m in batch]
    await aws.accept(batch, events, T0 + 1, 0)
    leases = await aws.lease(T0 + 2, 10, 60_000)
    assert len(leases) == 6
    async with aws.log_batch():
        for lease in leases[:4]:
            assert await aws.settle(lease, _delivered(lease.message, T0 + 3), T0 + 3)
    everything = (await aws.list_events(EventQuery())).items
    assert len(everything) == 6 + 4 * 2  # CREATED each, ACTIVE and DELIVERED for four
    assert [e.seq for e in everything] == sorted((e.seq for e in everything), reverse=True)
    paged: list[Event] = []
    cursor = None
    while True:
        page = await aws.list_events(EventQuery(count=2, cursor=cursor))
        paged += page.items
        cursor = page.cursor
        if cursor is None:
            break
    assert [(e.message_id, e.state) for e in paged] == [(e.message_id, e.state) for e in everything]
    delivered = await aws.list_events(EventQuery(states=[MessageState.DELIVERED]))
    assert len(delivered.items) == 4
    assert await aws.list_outcomes(T0, 10) == [(T0 + 3, MessageState.DELIVERED, None)] * 4
    # a page is listed under its newest key: an older line in it is found below that key
    active = await aws.list_events(EventQuery(states=[MessageState.ACTIVE], to_time=T0 + 2))
    assert len(active.items) == 4
    created = await aws.list_events(EventQuery(states=[MessageState.CREATED], to_time=T0))
    assert [e.message_id for e in created.items] == ["msg_alone"]


async def test_large_response_body_is_kept_beside_the_message_item(aws: AwsBackend) -> None:
    message = _message("msg_big")
    await aws.accept([message], [], T0, 0)
    [lease] = await aws.lease(T0, 1, 60_000)
    body = "r" * 5000
    settlement = replace(
        _delivered(message, T0 + 1),
        events=[Event.of(message, MessageState.DELIVERED, T0 + 1, responseBody=body)],
    )
    assert await aws.settle(lease, settlement, T0 + 1)
    item = aws._db.get_item(TableName="relay", Key={"pk": {"S": "M#msg_big"}, "sk": {"S": "M"}})
    assert body not in str(item["Item"])
    for query in (EventQuery(message_ids=["msg_big"]), EventQuery()):
        [delivered, _active] = (await aws.list_events(query)).items
        assert delivered.detail["responseBody"] == body


class Scans:
    """The table's Scan calls (botocore hooks): their segment and the items each read."""

    def __init__(self, backend: AwsBackend) -> None:
        self.segments: list[tuple[int, int] | None] = []
        self.scanned = 0
        events = backend._db.meta.events
        events.register("provide-client-params.dynamodb.Scan", self._request)
        events.register("after-call.dynamodb.Scan", self._answer)

    def _request(self, params: dict[str, Any], **_: Any) -> None:
        part = params.get("Segment"), params.get("TotalSegments")
        self.segments.append(None if part == (None, None) else part)  # type: ignore[arg-type]

    def _answer(self, parsed: dict[str, Any], **_: Any) -> None:
        self.scanned += parsed["ScannedCount"]


async def test_counts_of_a_large_table_read_one_segment_and_are_kept() -> None:
    with aws_backend(count_sample=100) as aws:
        messages = [_message(f"msg_n{i:03d}") for i in range(400)]
        for start in range(0, 400, 100):
            await aws.accept(messages[start : start + 100], [], T0, 0)
        await aws.cancel([m.id for m in messages[:100]], T0)
        table_items = aws._db.describe_table(TableName="relay")["Table"]["ItemCount"]
        assert 400 <= table_items < 800  # moto's ItemCount is live (AWS's, ~6 hours old)
        calls, scans = Calls(aws), Scans(aws)

        counts = await aws.count_messages()
        assert (counts.segments, counts.exact, counts.max_age) == (4, False, 60)
        assert scans.segments == [(0, 4)]  # one page: a quarter of the table
        assert scans.scanned <= table_items / 4 * 1.5
        truth = {MessageState.CREATED: 300, MessageState.CANCELED: 100}
        assert set(counts.by_state) == set(truth)
        for state, n in truth.items():
            assert n / 2 <= counts.get(state) <= n * 1.5, (state, counts.get(state))
        assert calls.take() == {"DescribeTable": 1, "Scan": 1}

        assert await aws.count_messages() == counts  # kept: no request at all
        assert calls.take() == {}
        aws._counts.seconds = 0  # counts out of date: scanned again, the table's size is kept
        assert await aws.count_messages() == counts
        assert calls.take() == {"Scan": 1}


async def test_bulk_cancel_by_filter_scans_the_table_in_parallel_segments() -> None:
    with aws_backend(scan_segment_items=100) as aws:
        messages = [
            replace(_message(f"msg_p{i:03d}"), url=f"https://example.com/{i % 2}")
            for i in range(300)
        ]
        for start in range(0, 300, 100):
            await aws.accept(messages[start : start + 100], [], T0, 0)
        await aws.cancel([m.id for m in messages[:50]], T0)
        table_items = aws._db.describe_table(TableName="relay")["Table"]["ItemCount"]
        scans = Scans(aws)

        found = await aws.find_pending(PendingQuery(urls=["https://example.com/1"]))
        segments = -(-table_items // 100)
        assert sorted(scans.segments) == [(s, segments) for s in range(segments)]
        assert scans.scanned == table_items  # every item, once
        assert sorted(found) == sorted(m.id for m in messages[50:] if m.url.endswith("/1"))
