"""The AWS backend: one DynamoDB table for state and SQS for dispatch (S3 for large bodies).

One table, keys ``pk``/``sk`` (strings), on-demand, TTL on ``expires_at`` (epoch seconds):

=================  ============  ==============  ================================================
item               pk            sk              also
=================  ============  ==============  ================================================
message            M#<id>        M               st, rt (retried), gen, rec (JSON), bd | bs (body
                                                 inline | S3 key), lt/lu (lease token/until, ms)
event              M#<id>        E#<order key>   t, st, url, d (detail JSON), tp/qn/sc/lb
DLQ entry          D#<dlq id>    D               did, mid, url, rs, fa, rec, bd|bs, rsp, rb|rbs
dedup id           U#<key>       U               mid, url, exp (ms)
setting            S#<name>      S               v
record             R#<kind>      <key>           v (JSON: a URL group, schedule, queue)
=================  ============  ==============  ================================================

Queues and flow control keep their gates (G#Q#<queue>, G#K#<key>) and wait lists beside these,
and a message's item names its wait-list entry (``wl``) while it waits: see aws_gates.

One sparse GSI, ``by-time`` (``gp`` → ``gs``), serves the three time-ordered lists: events
(``gp`` = E#<shard>, ``gs`` = order key), DLQ entries (D) and messages waiting in DynamoDB
for a due time too far for SQS (Q#<shard>, ``gs`` = due ms). Order keys are 36 digits — event
time, then a per-process monotonic write tick — so listings are newest first even within one
millisecond, and a key is its listing's cursor.

Dispatch: a message due within ``max_sqs_delay`` is sent to SQS with ``DelaySeconds``; a later one
waits in DynamoDB until :meth:`AwsBackend.promote_due` (the ticker) moves it. An SQS copy names
the message and its ``gen``; every re-enqueue (promotion, retry) bumps ``gen``, so a stale copy is
recognised and dropped at lease. Copies are sent *before* the DynamoDB write that makes them
valid: a crash in between leaves a copy whose message is missing or older, which lease hides
briefly (the write may still land) and then drops — never a stored message without a copy.
A lease sets a fresh token on the message item; settle is conditional on it, so a late settle
after a redelivery is a no-op, whatever SQS thinks of an old receipt handle.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import math
import os
import re
import secrets
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

import boto3
import orjson
from botocore.config import Config
from botocore.exceptions import ClientError

from relay.backends import aws_gates
from relay.backends.aws_gates import Gates
from relay.backends.base import kept_events
from relay.flow_control import FlowKey, FlowKeyUsage
from relay.models import (
    Accepted,
    DlqEntry,
    DlqQuery,
    Event,
    EventQuery,
    Lease,
    Message,
    MessageQuery,
    MessageState,
    Outcome,
    Page,
    PendingQuery,
    QueueStats,
    Settlement,
    split_labels,
)
from relay.protocol import BadRequest

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sqs.client import SQSClient

log = logging.getLogger("relay.aws")
T = TypeVar("T")
Item = dict[str, Any]  # a DynamoDB item in the low-level client's typed form ({"S": ...})

# --- the table's schema: template.yaml and create_resources() both follow these ---------------

TTL_ATTRIBUTE = "expires_at"
TIME_INDEX = "by-time"
SHARDS = 4  # GSI partitions per list (events, waiting messages), so no one key gets hot
TABLE_SCHEMA: dict[str, Any] = {
    "BillingMode": "PAY_PER_REQUEST",
    "AttributeDefinitions": [
        {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", "gp", "gs")
    ],
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": TIME_INDEX,
            "KeySchema": [
                {"AttributeName": "gp", "KeyType": "HASH"},
                {"AttributeName": "gs", "KeyType": "RANGE"},
            ],
            # Only what the listings filter on and the ticker needs; full items are fetched by key.
            "Projection": {
                "ProjectionType": "INCLUDE",
                "NonKeyAttributes": [
                    "st",
                    "url",
                    "tp",
                    "qn",
                    "sc",
                    "lb",
                    "mid",
                    "did",
                    "rs",
                    "gen",
                ],
            },
        }
    ],
    # CloudFormation's property; the API sets it with UpdateTimeToLive after CreateTable.
    "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
}

SQS_MAX_DELAY = 900  # seconds: SQS's limit for DelaySeconds
_SQS_MAX_VISIBILITY = 43_200
_TRANSACTION_ITEMS = 100
_TRANSACTION_BYTES = 3_500_000  # under DynamoDB's 4 MB per transaction, with room for keys
_INLINE_MAX = 350_000  # an item is at most 400 KB: without a bucket, larger bodies are refused
_PENDING_RECEIVES = 4  # a copy of a not-yet-stored message is hidden 1, 2, 4, 8 s, then dropped
_RESEND_AFTER = 10.0  # s: an accept whose write took longer re-sends its copies (see accept)
_PROMOTE_EVERY = 1.0  # seconds: how often lease() looks for long delays other processes stored
_FINAL = [str(s) for s in MessageState if s.final]
_NOT_FINAL = f"NOT st IN ({', '.join(f':f{i}' for i in range(len(_FINAL)))})"
_LOW, _HIGH = "0" * 36, "9" * 36
_OUTCOMES = [str(s) for s in (MessageState.DELIVERED, MessageState.RETRY, MessageState.FAILED)]
_MESSAGE_LIST_ROUNDS = 20  # index pages read to fill one page of a state-filtered list


class LeaseDeferred(Exception):
    """An SQS record that cannot be leased yet (its message is still being stored, or another
    lease on it is live): its visibility was shortened; report it as a batch item failure."""


class DedupConflict(Exception):
    """A concurrent publish took a deduplication id between our read and our write."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(", ".join(keys))
        self.keys = keys


class _Ticks:
    """Per-process write ticks: strictly increasing nanoseconds, plus a process tag."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0
        self._process = secrets.randbelow(10_000)

    def order_key(self, time_ms: int) -> str:
        """36 digits ordering records by time, then by the moment they were written."""
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            tick = self._last
        return f"{time_ms:013d}{tick:019d}{self._process:04d}"


_ticks = _Ticks()


@dataclass(slots=True)
class _Received:
    """One SQS message, from ReceiveMessage or from a Lambda event record."""

    handle: str
    body: str
    receive_count: int


@dataclass(slots=True)
class _Refused:
    """What to do with a copy that was not leased: drop it, or hide it for ``hide_seconds``."""

    hide_seconds: int | None = None


class AwsBackend:
    """The `Backend` port on DynamoDB + SQS (+ S3 for bodies over ``inline_body_limit``).

    Resources come from the deployment (template.yaml); :meth:`create_resources` makes them for
    tests and local stacks. ``max_sqs_delay`` (seconds, ≤ 900) is how far ahead a message goes
    to SQS; later ones wait in DynamoDB for :meth:`promote_due`. boto3 is synchronous: calls run
    on a small thread pool, one client per service for the backend's life.
    """

    def __init__(
        self,
        table: str,
        queue_url: str | None = None,
        bucket: str | None = None,
        *,
        queue_name: str | None = None,
        session: boto3.session.Session | None = None,
        max_sqs_delay: int = SQS_MAX_DELAY,
        inline_body_limit: int = 4096,
        retention_days: int = 30,
        record_visibility: int = 960_000,
        max_workers: int = 16,
    ) -> None:
        if not 0 <= max_sqs_delay <= SQS_MAX_DELAY:
            raise ValueError(f"max_sqs_delay must be 0 to {SQS_MAX_DELAY} seconds")
        if queue_url is None and queue_name is None:
            raise ValueError("give the dispatch queue's URL or its name")
        self.table = table
        self.queue_url = queue_url
        self.queue_name = queue_name
        self.bucket = bucket
        self.max_sqs_delay = max_sqs_delay
        # Inline bodies make every state change cost their size in write units; past ~4 KB one
        # S3 PUT (and a GET per attempt) is cheaper than three writes of the whole body.
        self.inline_body_limit = inline_body_limit if bucket else _INLINE_MAX
        self.retention_s = retention_days * 86_400
        self.record_visibility = record_visibility  # the queue's VisibilityTimeout, in ms
        boto = session or boto3.session.Session()
        config = Config(max_pool_connections=max_workers, retries={"mode": "standard"})
        # (AWS_ENDPOINT_URL points them at a local stack.)
        self._db: DynamoDBClient = boto.client("dynamodb", config=config)
        self._sqs: SQSClient = boto.client("sqs", config=config)
        self._s3: S3Client = boto.client("s3", config=config)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="relay-aws")
        self._promote_lock = asyncio.Lock()
        self._promoted_at = -math.inf  # monotonic seconds
        self._next_wait: float = 0  # earliest due in DynamoDB as last seen (0: look)
        self._gates = Gates(self)  # queues and flow control (aws_gates)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **kwargs: Any) -> AwsBackend:
        """From template.yaml's function environment: RELAY_TABLE, RELAY_QUEUE_URL, RELAY_BUCKET."""
        return cls(
            environ["RELAY_TABLE"],
            environ["RELAY_QUEUE_URL"],
            environ.get("RELAY_BUCKET") or None,
            **kwargs,
        )

    # --- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Nothing to create (the deployment owns the resources); resolves a queue name."""
        if self.queue_url is None:
            answer = await self._call(self._sqs.get_queue_url, QueueName=self.queue_name)
            self.queue_url = answer["QueueUrl"]

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown)
        for client in (self._db, self._sqs, self._s3):
            client.close()

    def create_resources(self) -> None:
        """Create the table (with TABLE_SCHEMA), the queue and the bucket: for tests and local
        stacks. Existing ones are kept."""
        schema = {k: v for k, v in TABLE_SCHEMA.items() if k != "TimeToLiveSpecification"}
        try:
            self._db.create_table(TableName=self.table, **schema)
        except ClientError as exc:
            if _code(exc) != "ResourceInUseException":
                raise
        self._db.get_waiter("table_exists").wait(TableName=self.table)
        self._db.update_time_to_live(
            TableName=self.table,
            TimeToLiveSpecification={"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
        )
        if self.queue_url is None:
            assert self.queue_name is not None
            self.queue_url = self._sqs.create_queue(QueueName=self.queue_name)["QueueUrl"]
        if self.bucket is not None:
            region = self._s3.meta.region_name
            where: Any = {} if region == "us-east-1" else {"LocationConstraint": region}
            try:
                self._s3.create_bucket(
                    Bucket=self.bucket,
                    **({"CreateBucketConfiguration": where} if where else {}),
                )
            except ClientError as exc:
                if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    # --- settings -------------------------------------------------------------------------------

    async def get_setting(self, name: str) -> str | None:
        item = await self._get(f"S#{name}", "S")
        return None if item is None else item["v"]["S"]

    async def put_setting(self, name: str, value: str, *, if_absent: bool = False) -> str:
        item = {"pk": _s(f"S#{name}"), "sk": _s("S"), "v": _s(value)}
        try:
            await self._call(
                self._db.put_item,
                TableName=self.table,
                Item=item,
                **({"ConditionExpression": "attribute_not_exists(pk)"} if if_absent else {}),
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            stored = await self.get_setting(name)
            assert stored is not None
            return stored
        return value

    # --- configuration records (URL groups, schedules, queues) ------------------------------------

    async def put_record(self, kind: str, key: str, value: dict[str, Any]) -> None:
        item = {"pk": _s(f"R#{kind}"), "sk": _s(key), "v": _s(_json(value))}
        await self._call(self._db.put_item, TableName=self.table, Item=item)

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        item = await self._get(f"R#{kind}", key)
        return None if item is None else dict(orjson.loads(item["v"]["S"]))

    async def list_records(self, kind: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        start: Item | None = None
        while True:
            answer = await self._call(
                self._db.query,
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": _s(f"R#{kind}")},
                ConsistentRead=True,
                **({"ExclusiveStartKey": start} if start else {}),
            )
            records += [dict(orjson.loads(item["v"]["S"])) for item in answer.get("Items", [])]
            start = answer.get("LastEvaluatedKey")
            if not start:
                return records

    async def delete_record(self, kind: str, key: str) -> bool:
        answer = await self._call(
            self._db.delete_item,
            TableName=self.table,
            Key=_key(f"R#{kind}", key),
            ReturnValues="ALL_OLD",
        )
        return "Attributes" in answer

    # --- accepting ------------------------------------------------------------------------------

    async def accept(
        self, messages: Sequence[Message], events: Sequence[Event], now: int, dedup_window: int
    ) -> list[Accepted]:
        """Store ``messages`` with their events and dedup ids, all or nothing unless the process
        dies midway: a message with a dedup id is written with it in a transaction (the id's
        condition must hold with it), the others by BatchWriteItem (a transaction bills double);
        if any write fails, those before it are deleted again before the error is raised."""
        use_dedup = dedup_window > 0
        keys = sorted({m.dedup_key for m in messages if use_dedup and m.dedup_key})
        known = await self._dedup_entries(keys, now) if keys else {}
        sent: set[str] = set()
        sent_copies: list[Message] = []
        started = time.monotonic()
        places = await self._gates.places(messages, now)  # who waits for a queue or a key
        for _ in range(5):
            results, stored = _deduplicate(messages, known if use_dedup else None)
            groups = list(
                await asyncio.gather(
                    *(self._message_puts(m, now, places.get(m.id)) for m in stored)
                )
            )
            if use_dedup:
                for group, message in zip(groups, stored, strict=True):
                    if message.dedup_key:
                        group.append(self._dedup_put(message, now, dedup_window))
            by_message: dict[str, list[Item]] = {}
            for event in kept_events(events, {m.id for m in stored}):
                by_message.setdefault(event.message_id, []).append(self._event_put(event))
            for group, message in zip(groups, stored, strict=True):
                group.extend(by_message.pop(message.id, []))
            if by_message:  # events of other messages: ride with the first chunk
                groups.insert(0, [put for puts in by_message.values() for put in puts])
            # Copies go out after the bodies, just before the write that makes them valid.
            ready = [m for m in stored if m.id not in sent and m.id not in places]
            await self._dispatch_new(ready, now)
            sent.update(m.id for m in ready)
            sent_copies.extend(ready)
            try:
                await self._write_all([g for g in groups if g])
            except DedupConflict as conflict:
                known.update(await self._dedup_entries(conflict.keys, now))
                continue
            if time.monotonic() - started > _RESEND_AFTER:
                # Lease gives a copy whose message is not stored yet ~15 s before dropping it;
                # a write slower than that may have outlived its copies: send them again (a
                # duplicate copy is dropped or held at lease, never delivered twice at once).
                kept = {m.id for m in stored}
                await self._dispatch_new([m for m in sent_copies if m.id in kept], now)
            self._note_waiting([m for m in stored if m.id not in places], now)
            await self._gates.admit(_gate_pks(m for m in stored if m.id in places), now)
            return results
        raise RuntimeError("deduplication ids kept changing under concurrent publishes")

    async def _dispatch_new(self, messages: Sequence[Message], now: int) -> None:
        """Send the copies of messages due within ``max_sqs_delay`` (before they are stored)."""
        await self._send([(m.id, 0, m.not_before) for m in messages if self._to_sqs(m, now)], now)

    async def _message_puts(
        self, message: Message, now: int, place: aws_gates.Place | None = None
    ) -> list[Item]:
        item: Item = {
            "pk": _s(f"M#{message.id}"),
            "sk": _s("M"),
            "st": _s(str(message.state)),
            "rt": _n(message.retried),
            "gen": _n(0),
            "rec": _s(_record(message)),
            **await self._blob("bd", f"body/{message.id}", message.body),
        }
        if place is not None:  # waits for its queue or flow-control key (aws_gates)
            return self._gates.parked_puts({"Put": {"TableName": self.table, "Item": item}}, place)
        if not self._to_sqs(message, now):
            item.update(self._waiting(message.id, message.not_before))
        return [{"Put": {"TableName": self.table, "Item": item}}]

    def _dedup_put(self, message: Message, now: int, window: int) -> Item:
        assert message.dedup_key is not None
        expires = now + window
        return {
            "Put": {
                "TableName": self.table,
                "Item": {
                    "pk": _s(f"U#{message.dedup_key}"),
                    "sk": _s("U"),
                    "mid": _s(message.id),
                    "url": _s(message.url),
                    "exp": _n(expires),
                    TTL_ATTRIBUTE: _n(-(-expires // 1000)),
                },
                # DynamoDB's TTL deletes late (moto: never): expiry is decided here, to the ms.
                "ConditionExpression": "attribute_not_exists(pk) OR #exp <= :now",
                "ExpressionAttributeNames": {"#exp": "exp"},
                "ExpressionAttributeValues": {":now": _n(now)},
            }
        }

    async def _dedup_entries(self, keys: Sequence[str], now: int) -> dict[str, Accepted]:
        items = await self._batch_get([(f"U#{key}", "U") for key in keys], consistent=True)
        return {
            item["pk"]["S"][2:]: Accepted(item["mid"]["S"], item["url"]["S"], deduplicated=True)
            for item in items
            if int(item["exp"]["N"]) > now
        }

    # --- leasing --------------------------------------------------------------------------------

    async def lease(self, now: int, limit: int, visibility: int) -> list[Lease]:
        """Receive up to ``limit`` copies from SQS (short polling) and lease their messages;
        first promotes what came due in DynamoDB, at most once a second unless something this
        process stored is due."""
        if limit <= 0:
            return []
        if now + self.max_sqs_delay * 1000 >= self._next_wait or (
            time.monotonic() - self._promoted_at >= _PROMOTE_EVERY
        ):
            await self.promote_due(now)
        leases: list[Lease] = []
        seconds = _visibility_seconds(visibility)
        while len(leases) < limit:
            answer = await self._call(
                self._sqs.receive_message,
                QueueUrl=self._queue(),
                MaxNumberOfMessages=min(10, limit - len(leases)),
                VisibilityTimeout=seconds,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
            received = [
                _Received(
                    handle=m["ReceiptHandle"],
                    body=m["Body"],
                    receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                )
                for m in answer.get("Messages", [])
            ]
            if not received:
                break
            outcomes = await asyncio.gather(
                *(self._lease_one(r, now, visibility, r.handle) for r in received)
            )
            taken = [o for o in outcomes if isinstance(o, Lease)]
            await self._put_all([self._event_item(_active(lease, now)) for lease in taken])
            leases.extend(taken)
            await self._refuse(
                [(r, o) for r, o in zip(received, outcomes, strict=True) if isinstance(o, _Refused)]
            )
        leases.sort(key=lambda lease: lease.message.not_before)
        return leases

    async def lease_record(
        self, record: Mapping[str, Any], now: int, *, visibility: int | None = None
    ) -> Lease | None:
        """Lease the message of one record of an SQS Lambda event. None: nothing to deliver (a
        stale copy or a finished message) — report success and the event source deletes it.
        Raises LeaseDeferred when it must come back later. Settling such a lease leaves the
        record to the event source (report success once settled; failure if settle is False)."""
        received = _Received(
            handle=record["receiptHandle"],
            body=record["body"],
            receive_count=int(record.get("attributes", {}).get("ApproximateReceiveCount", 1)),
        )
        outcome = await self._lease_one(
            received, now, self.record_visibility if visibility is None else visibility, ""
        )
        if isinstance(outcome, Lease):
            await self._put_all([self._event_item(_active(outcome, now))])
            return outcome
        if outcome.hide_seconds is None:
            return None
        await self._refuse([(received, outcome)], delete=False)
        raise LeaseDeferred(f"message copy deferred for {outcome.hide_seconds}s")

    async def _lease_one(
        self, received: _Received, now: int, visibility: int, handle: str
    ) -> Lease | _Refused:
        try:
            copy = orjson.loads(received.body)
            if isinstance(copy, dict) and "gate" in copy:  # a wake-up of a queue or key
                return _Refused(hide_seconds=await self._gates.on_timer(copy, now))
            message_id, gen = str(copy["id"]), int(copy["g"])
        except (ValueError, KeyError, TypeError):
            log.warning("dropping a malformed dispatch message: %.200r", received.body)
            return _Refused()
        token = secrets.token_hex(8)
        until = now + visibility
        try:
            answer = await self._call(
                self._db.update_item,
                TableName=self.table,
                Key=_key(f"M#{message_id}", "M"),
                UpdateExpression="SET st = :active, lt = :token, lu = :until",
                # Not waiting in DynamoDB for its due time, nor for its queue or key (wl).
                ConditionExpression="gen = :gen AND attribute_not_exists(gp)"
                " AND attribute_not_exists(wl) AND (st IN (:created, :retry)"
                " OR (st = :active AND lu <= :now))",
                ExpressionAttributeValues={
                    ":active": _s(MessageState.ACTIVE),
                    ":created": _s(MessageState.CREATED),
                    ":retry": _s(MessageState.RETRY),
                    ":token": _s(token),
                    ":until": _n(until),
                    ":gen": _n(gen),
                    ":now": _n(now),
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            old = cast("Item | None", exc.response.get("Item"))  # ALL_OLD, if it exists
            return _refusal(old, gen, now, received.receive_count)
        message = await self._message(answer["Attributes"])
        if message.flow_control_key is not None and not await self._gates.hold(
            message, token, gen, until, now
        ):
            return _Refused()  # its call slot was reclaimed: back to the key's wait list
        return Lease(message=message, receipt=f"{token}.{gen}.{handle}", visible_until=until)

    async def _refuse(self, refused: list[tuple[_Received, _Refused]], delete: bool = True) -> None:
        """Delete dropped copies (unless an event source mapping does) and hide deferred ones."""
        drop = [r.handle for r, o in refused if o.hide_seconds is None and delete]
        hide = [(r.handle, o.hide_seconds) for r, o in refused if o.hide_seconds is not None]
        for chunk in _chunks(drop, 10):
            await self._call(
                self._sqs.delete_message_batch,
                QueueUrl=self._queue(),
                Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)],
            )
        for part in _chunks(hide, 10):
            await self._call(
                self._sqs.change_message_visibility_batch,
                QueueUrl=self._queue(),
                Entries=[
                    {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": s or 0}
                    for i, (h, s) in enumerate(part)
                ],
            )

    # --- settling -------------------------------------------------------------------------------

    async def settle(self, lease: Lease, settlement: Settlement, now: int) -> bool:
        """Conditional on the lease token: the message's new state, its events, DLQ entry and
        follow-ups (one transaction when there are follow-ups or a DLQ entry; otherwise the
        update, then the events — a crash between loses a log line, never a message). A retry's
        new copy is sent first; the leased SQS message is deleted last."""
        token, gen_text, handle = lease.receipt.split(".", 2)
        gen = int(gen_text)
        message = lease.message
        values: Item = {
            ":token": _s(token),
            ":active": _s(MessageState.ACTIVE),
            ":st": _s(str(settlement.state)),
            ":rt": _n(settlement.retried),
        }
        sets = ["st = :st", "rt = :rt"]
        gated = self._gates.settling(message, settlement, now)
        if settlement.state == MessageState.RETRY:
            due = now if settlement.next_due is None else settlement.next_due
            sets.append("gen = :gen")
            values[":gen"] = _n(gen + 1)
            if gated.park is not None:  # a keyed retry waits in its key's wait list
                sets.append("wl = :wl")
                values[":wl"] = _s(gated.park.ref)
            elif due - now <= self.max_sqs_delay * 1000:
                await self._send([(message.id, gen + 1, due)], now)
            else:
                waiting = self._waiting(message.id, due)
                sets += ["gp = :gp", "gs = :gs"]
                values.update({":gp": waiting["gp"], ":gs": waiting["gs"]})
                self._next_wait = min(self._next_wait, due)
        else:
            sets.append(f"{TTL_ATTRIBUTE} = :expires")
            values[":expires"] = _n(self._expires(now))
        update = {
            "TableName": self.table,
            "Key": _key(f"M#{message.id}", "M"),
            "UpdateExpression": "SET " + ", ".join(sets) + " REMOVE lt, lu",
            "ConditionExpression": "lt = :token AND st = :active",
            "ExpressionAttributeValues": values,
        }
        try:
            if settlement.follow_ups or settlement.dlq is not None or gated.items:
                places = await self._gates.places(settlement.follow_ups, now, configure=False)
                items: list[Item] = [{"Update": update}]
                for follow_up in settlement.follow_ups:
                    items += await self._message_puts(follow_up, now, places.get(follow_up.id))
                if settlement.dlq is not None:
                    items.append(await self._dlq_put(settlement.dlq))
                items += [self._event_put(e) for e in settlement.events]
                items += gated.items
                await self._dispatch_new(
                    [f for f in settlement.follow_ups if f.id not in places], now
                )
                await self._transact(items)
                gated.touched += _gate_pks(f for f in settlement.follow_ups if f.id in places)
            else:
                await self._call(self._db.update_item, **update)
                await self._put_all([self._event_item(e) for e in settlement.events])
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException" or _cancelled_at(exc, 0):
                return False  # the lease was lost or the message cancelled: keep the SQS copy
            raise
        self._note_waiting(settlement.follow_ups, now)
        if handle:
            await self._call(self._sqs.delete_message, QueueUrl=self._queue(), ReceiptHandle=handle)
        await self._gates.admit(gated.touched, now)
        return True

    async def cancel(self, message_ids: Sequence[str], now: int) -> list[str]:
        results = await asyncio.gather(*(self._cancel_one(mid, now) for mid in message_ids))
        return [mid for mid, done in zip(message_ids, results, strict=True) if done]

    async def _cancel_one(self, message_id: str, now: int) -> bool:
        for _ in range(5):
            item = await self._get(f"M#{message_id}", "M")
            if item is None or item["st"]["S"] in _FINAL:
                return False
            message = _message_from(item, b"")
            # What it holds in a queue or key is freed with it, as it was when read: on the
            # generation read (admission changes it), or the cancel is tried again.
            gated = self._gates.cancelling(item, message, now)
            condition = _NOT_FINAL + (" AND gen = :gen" if gated.items else "")
            try:
                await self._transact(
                    [
                        {
                            "Update": {
                                "TableName": self.table,
                                "Key": _key(f"M#{message_id}", "M"),
                                # A copy still in SQS finds the message final and is dropped.
                                "UpdateExpression": "SET st = :canceled,"
                                f" {TTL_ATTRIBUTE} = :expires REMOVE gp, gs, lt, lu, wl",
                                "ConditionExpression": condition,
                                "ExpressionAttributeValues": {
                                    ":canceled": _s(MessageState.CANCELED),
                                    ":expires": _n(self._expires(now)),
                                    **{f":f{i}": _s(state) for i, state in enumerate(_FINAL)},
                                    **({":gen": item["gen"]} if gated.items else {}),
                                },
                            }
                        },
                        self._event_put(Event.of(message, MessageState.CANCELED, now)),
                        *gated.items,
                    ]
                )
            except ClientError as exc:
                if _cancelled_at(exc, 0):
                    continue  # finished meanwhile (then False), or admitted: read it again
                raise
            await self._gates.admit(gated.touched, now)
            return True
        return False

    async def find_pending(self, query: PendingQuery) -> list[str]:
        """A Scan of the table for unfinished message items, filtered here on their records:
        read capacity grows with the table (no index lists pending messages), which bulk cancel
        by filter, rare, accepts rather than an index every message write would pay for."""
        found: list[str] = []
        start: Item | None = None
        while True:
            answer = await self._call(
                self._db.scan,
                TableName=self.table,
                FilterExpression=f"sk = :m AND {_NOT_FINAL}",
                ProjectionExpression="pk, rec, st, rt",
                ExpressionAttributeValues={
                    ":m": _s("M"),
                    **{f":f{i}": _s(state) for i, state in enumerate(_FINAL)},
                },
                **({"ExclusiveStartKey": start} if start else {}),
            )
            for item in answer.get("Items", []):
                message = _message_from(item, b"")
                if query.matches(message):
                    found.append(message.id)
            start = answer.get("LastEvaluatedKey")
            if not start:
                return found

    async def get_message(self, message_id: str) -> Message | None:
        item = await self._get(f"M#{message_id}", "M")
        return None if item is None else await self._message(item)

    # --- long delays ----------------------------------------------------------------------------

    async def promote_due(self, now: int) -> int:
        """The ticker: send every message waiting in DynamoDB that is due by ``now`` +
        ``max_sqs_delay`` to SQS with the delay left; returns how many were moved."""
        async with self._promote_lock:
            self._promoted_at = time.monotonic()
            horizon = now + self.max_sqs_delay * 1000
            moved = await asyncio.gather(
                *(self._promote_shard(shard, now, horizon) for shard in range(SHARDS))
            )
            await self._gates.attend(now)  # queues and keys that may let messages through
            later = await self.next_due()
            self._next_wait = math.inf if later is None else later
            return sum(moved)

    async def _promote_shard(self, shard: int, now: int, horizon: int) -> int:
        moved = 0
        start: Item | None = None
        while True:  # a page at a time: a backlog (the ticker was down) is never held at once
            answer = await self._call(
                self._db.query,
                TableName=self.table,
                IndexName=TIME_INDEX,
                KeyConditionExpression="gp = :gp AND gs <= :horizon",
                ExpressionAttributeValues={
                    ":gp": _s(f"Q#{shard}"),
                    ":horizon": _s(f"{horizon:013d}"),
                },
                Limit=100,
                **({"ExclusiveStartKey": start} if start else {}),
            )
            due = [
                (item["pk"]["S"][2:], int(item["gen"]["N"]), int(item["gs"]["S"]))
                for item in answer.get("Items", [])
            ]
            # The copies go first: a crash before the updates leaves the messages waiting, to be
            # promoted again (the extra copy carries the same gen and is handled at lease).
            await self._send([(mid, gen + 1, at) for mid, gen, at in due], now)
            done = await asyncio.gather(*(self._promoted(mid, gen, at) for mid, gen, at in due))
            moved += sum(done)
            start = answer.get("LastEvaluatedKey")
            if not start:
                return moved

    async def _promoted(self, message_id: str, gen: int, due: int) -> bool:
        try:
            await self._call(
                self._db.update_item,
                TableName=self.table,
                Key=_key(f"M#{message_id}", "M"),
                UpdateExpression="SET gen = :next REMOVE gp, gs",
                ConditionExpression="gen = :gen AND gs = :gs",
                ExpressionAttributeValues={
                    ":gen": _n(gen),
                    ":next": _n(gen + 1),
                    ":gs": _s(f"{due:013d}"),
                },
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False  # cancelled or promoted meanwhile: our copy is stale
            raise
        return True

    async def next_due(self) -> int | None:
        """The earliest due time of the messages waiting in DynamoDB. Messages already in SQS
        are not counted: a worker finds them by polling lease()."""
        answers = await asyncio.gather(
            *(
                self._call(
                    self._db.query,
                    TableName=self.table,
                    IndexName=TIME_INDEX,
                    KeyConditionExpression="gp = :gp",
                    ExpressionAttributeValues={":gp": _s(f"Q#{shard}")},
                    Limit=1,
                )
                for shard in range(SHARDS)
            )
        )
        dues = [int(item["gs"]["S"]) for a in answers for item in a.get("Items", [])]
        if (attention := await self._gates.next_attention()) is not None:
            dues.append(attention)
        return min(dues, default=None)

    # --- queues and flow control (aws_gates) ------------------------------------------------------

    async def queue_lags(self, names: Sequence[str]) -> dict[str, int]:
        return await self._gates.queue_lags(names)

    async def admit_waiting(self, now: int, *, queue: str | None = None) -> None:
        if queue is not None:
            await self._gates.admit([aws_gates.queue_pk(queue)], now)

    async def flow_keys(self, now: int, keys: Sequence[str] | None = None) -> list[FlowKeyUsage]:
        return await self._gates.flow_keys(now, keys)

    async def change_flow_key(
        self, key: str, change: Callable[[FlowKey], FlowKey], now: int
    ) -> FlowKey:
        return await self._gates.change_key(key, change, now)

    async def in_flight(self, now: int) -> int:
        """SQS's approximate count of copies received and not yet deleted."""
        answer = await self._call(
            self._sqs.get_queue_attributes,
            QueueUrl=self._queue(),
            AttributeNames=["ApproximateNumberOfMessagesNotVisible"],
        )
        return int(answer.get("Attributes", {}).get("ApproximateNumberOfMessagesNotVisible", 0))

    async def queue_stats(self, now: int) -> QueueStats:
        """SQS's approximate counts (visible: due, delayed: waiting, not visible: in flight) plus
        the messages waiting in DynamoDB, split at ``now``. The oldest due time is known only for
        those (a ticker running late); SQS's own is its ApproximateAgeOfOldestMessage metric."""
        attributes = await self._call(
            self._sqs.get_queue_attributes,
            QueueUrl=self._queue(),
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesDelayed",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )
        sqs = {k: int(v) for k, v in attributes.get("Attributes", {}).items()}
        shards = await asyncio.gather(*(self._waiting_stats(shard, now) for shard in range(SHARDS)))
        overdue = [oldest for _, _, oldest in shards if oldest is not None]
        return QueueStats(
            due=sqs.get("ApproximateNumberOfMessages", 0) + sum(d for d, _, _ in shards),
            waiting=sqs.get("ApproximateNumberOfMessagesDelayed", 0) + sum(w for _, w, _ in shards),
            in_flight=sqs.get("ApproximateNumberOfMessagesNotVisible", 0),
            oldest_due=min(overdue, default=None),
        )

    async def _waiting_stats(self, shard: int, now: int) -> tuple[int, int, int | None]:
        """Messages of one shard waiting in DynamoDB: (due by ``now``, later, earliest due)."""
        counts = []
        for condition in ("gs <= :now", "gs > :now"):
            total, start = 0, None
            while True:  # COUNT pages through the (small, projected) index entries
                answer = await self._call(
                    self._db.query,
                    TableName=self.table,
                    IndexName=TIME_INDEX,
                    KeyConditionExpression=f"gp = :gp AND {condition}",
                    ExpressionAttributeValues={":gp": _s(f"Q#{shard}"), ":now": _s(f"{now:013d}")},
                    Select="COUNT",
                    **({"ExclusiveStartKey": start} if start else {}),
                )
                total += int(answer.get("Count", 0))
                start = answer.get("LastEvaluatedKey")
                if not start:
                    break
            counts.append(total)
        oldest = None
        if counts[0]:
            first = await self._call(
                self._db.query,
                TableName=self.table,
                IndexName=TIME_INDEX,
                KeyConditionExpression="gp = :gp",
                ExpressionAttributeValues={":gp": _s(f"Q#{shard}")},
                Limit=1,
            )
            oldest = min((int(i["gs"]["S"]) for i in first.get("Items", [])), default=None)
        return counts[0], counts[1], oldest

    def _to_sqs(self, message: Message, now: int) -> bool:
        return message.not_before - now <= self.max_sqs_delay * 1000

    def _waiting(self, message_id: str, due: int) -> Item:
        return {"gp": _s(f"Q#{_shard(message_id)}"), "gs": _s(f"{due:013d}")}

    def _note_waiting(self, messages: Iterable[Message], now: int) -> None:
        """Remember the earliest long delay this process stored, so lease() promotes it on time."""
        for message in messages:
            if not self._to_sqs(message, now):
                self._next_wait = min(self._next_wait, message.not_before)

    async def _send_raw(self, body: str, due: int, now: int) -> None:
        """One record other than a message's copy (a gate's wake-up, aws_gates), due at ``due``."""
        await self._call(
            self._sqs.send_message,
            QueueUrl=self._queue(),
            MessageBody=body,
            DelaySeconds=min(SQS_MAX_DELAY, max(0, -(-(due - now) // 1000))),
        )

    async def _send(self, copies: Sequence[tuple[str, int, int]], now: int) -> None:
        """Send dispatch copies (message id, gen, due ms) with the delay left, 10 per call."""
        for chunk in _chunks(list(copies), 10):
            entries = {
                str(i): {
                    "Id": str(i),
                    "MessageBody": _json({"id": mid, "g": gen}),
                    "DelaySeconds": min(SQS_MAX_DELAY, max(0, -(-(due - now) // 1000))),
                }
                for i, (mid, gen, due) in enumerate(chunk)
            }
            for _ in range(3):
                answer = await self._call(
                    self._sqs.send_message_batch,
                    QueueUrl=self._queue(),
                    Entries=list(entries.values()),
                )
                failed = answer.get("Failed", [])
                entries = {f["Id"]: entries[f["Id"]] for f in failed}
                if not entries:
                    break
            else:
                raise RuntimeError(f"SQS refused dispatch copies: {failed}")

    # --- logs and DLQ ---------------------------------------------------------------------------

    async def list_events(self, query: EventQuery) -> Page:
        low, high = _bounds(query.from_time, query.to_time, query.cursor)
        filters, values = _filter(
            [
                ("st", [str(s) for s in query.states]),
                ("url", query.urls),
                ("tp", query.topic_names),
                ("qn", query.queue_names),
                ("sc", query.schedule_ids),
                ("lb", query.labels),
            ]
        )
        if query.message_ids:
            # A message's events live in its own partition: read them there, consistently.
            sources = [
                {
                    "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
                    "ExpressionAttributeValues": {
                        ":pk": _s(f"M#{mid}"),
                        ":low": _s("E#" + low),
                        ":high": _s("E#" + high),
                        **values,
                    },
                    "ConsistentRead": True,
                }
                for mid in dict.fromkeys(query.message_ids)
            ]
            order: Callable[[Item], str] = lambda item: item["sk"]["S"][2:]  # noqa: E731
        else:
            sources = _event_sources(low, high, values)
            order = lambda item: item["gs"]["S"]  # noqa: E731
        keep: Callable[[list[Item]], Awaitable[list[Item]]] | None = None
        if query.beyond_index:
            # Not in the index: EventQuery.matches decides on the full events, a page at a time.
            async def keep(page: list[Item]) -> list[Item]:
                full = (
                    page
                    if query.message_ids
                    else await self._batch_get(
                        [(i["pk"]["S"], i["sk"]["S"]) for i in page], order=True
                    )
                )
                return [i for i in full if query.matches(_event_from(i))]

        found, cursor = await self._newest(sources, filters, order, query.count, keep=keep)
        if not query.message_ids and keep is None:
            found = await self._batch_get([(i["pk"]["S"], i["sk"]["S"]) for i in found], order=True)
        return Page(items=[_event_from(item) for item in found], cursor=cursor)

    async def list_dlq(self, query: DlqQuery) -> Page:
        low, high = _bounds(query.from_time, query.to_time, query.cursor)
        filters, values = _filter(
            [
                ("did", query.dlq_ids),
                ("mid", query.message_ids),
                ("url", query.urls),
                ("tp", query.topic_names),
                ("qn", query.queue_names),
                ("sc", query.schedule_ids),
                ("lb", query.labels),
                ("rs", query.response_statuses),
            ]
        )
        source = {
            "IndexName": TIME_INDEX,
            "KeyConditionExpression": "gp = :gp AND gs BETWEEN :low AND :high",
            "ExpressionAttributeValues": {
                ":gp": _s("D"),
                ":low": _s(low),
                ":high": _s(high),
                **values,
            },
        }
        keep: Callable[[list[Item]], Awaitable[list[Item]]] | None = None
        if query.caller_ips or query.flow_control_keys:
            # Not in the index: filtered on the full items, fetched a page at a time.
            async def keep(page: list[Item]) -> list[Item]:
                full = await self._batch_get(
                    [(i["pk"]["S"], i["sk"]["S"]) for i in page], order=True
                )
                return [i for i in full if _dlq_record_matches(i, query)]

        found, cursor = await self._newest(
            [source], filters, lambda i: i["gs"]["S"], query.count, keep=keep
        )
        if keep is None:
            found = await self._batch_get([(i["pk"]["S"], i["sk"]["S"]) for i in found], order=True)
        return Page(items=[await self._dlq_entry(item) for item in found], cursor=cursor)

    async def get_dlq(self, dlq_id: str) -> DlqEntry | None:
        item = await self._get(f"D#{dlq_id}", "D")
        return None if item is None else await self._dlq_entry(item)

    async def delete_dlq(self, dlq_ids: Sequence[str]) -> int:
        async def delete(dlq_id: str) -> bool:
            answer = await self._call(
                self._db.delete_item,
                TableName=self.table,
                Key=_key(f"D#{dlq_id}", "D"),
                ReturnValues="ALL_OLD",
            )
            return "Attributes" in answer

        return sum(await asyncio.gather(*(delete(d) for d in dict.fromkeys(dlq_ids))))

    # --- the console's views --------------------------------------------------------------------

    async def list_messages(self, query: MessageQuery) -> Page:
        """A message has no index entry of its own: its CREATED event lists it (newest first,
        filtered on URL and label in the index); its state is read from the message item, so a
        state filter may take a few rounds to fill a page."""
        wanted = set(query.states)
        if query.message_ids:
            keys = [(f"M#{mid}", "M") for mid in dict.fromkeys(query.message_ids)]
            found = [_message_from(i, b"") for i in await self._batch_get(keys, consistent=True)]
            low, high = query.from_time or 0, query.to_time or math.inf
            chosen = [
                m
                for m in found
                if (not wanted or m.state in wanted)
                and (not query.url_contains or query.url_contains in m.url)
                and (not query.labels or m.label in query.labels)
                and low <= m.created_at <= high
            ]
            chosen.sort(key=lambda m: m.created_at, reverse=True)
            return Page(items=chosen[: query.count], cursor=None)
        filters, values = _filter([("st", [str(MessageState.CREATED)]), ("lb", query.labels)])
        if query.url_contains:
            filters["FilterExpression"] += " AND contains(#url, :urlpart)"
            filters["ExpressionAttributeNames"]["#url"] = "url"
            values[":urlpart"] = _s(query.url_contains)
        order: Callable[[Item], str] = lambda item: item["gs"]["S"]  # noqa: E731
        items: list[Message] = []
        cursor = query.cursor
        for _ in range(_MESSAGE_LIST_ROUNDS):
            low_key, high_key = _bounds(query.from_time, query.to_time, cursor)
            sources = _event_sources(low_key, high_key, values)
            created, cursor = await self._newest(sources, filters, order, query.count)
            keys = [(e["pk"]["S"], "M") for e in created]
            messages = {i["pk"]["S"]: _message_from(i, b"") for i in await self._batch_get(keys)}
            for event in created:
                message = messages.get(event["pk"]["S"])
                if message is not None and (not wanted or message.state in wanted):
                    items.append(message)
                if len(items) == query.count:
                    more = event is not created[-1] or cursor is not None
                    return Page(items=items, cursor=order(event) if more else None)
            if cursor is None:
                break
        return Page(items=items, cursor=cursor)

    async def count_messages(self) -> dict[MessageState, int]:
        """A Scan of the whole table (DynamoDB keeps no counts): read capacity grows with the
        table, so the console asks for it only on its overview."""
        counts: dict[MessageState, int] = {}
        start: Item | None = None
        while True:
            answer = await self._call(
                self._db.scan,
                TableName=self.table,
                FilterExpression="sk = :m",
                ProjectionExpression="st",
                ExpressionAttributeValues={":m": _s("M")},
                **({"ExclusiveStartKey": start} if start else {}),
            )
            for item in answer.get("Items", []):
                state = MessageState(item["st"]["S"])
                counts[state] = counts.get(state, 0) + 1
            start = answer.get("LastEvaluatedKey")
            if not start:
                return counts

    async def list_outcomes(self, since: int, limit: int) -> list[Outcome]:
        filters, values = _filter([("st", _OUTCOMES)])
        low, high = _bounds(since, None, None)
        sources = _event_sources(low, high, values)
        found, _ = await self._newest(sources, filters, lambda i: i["gs"]["S"], limit)
        # The duration is in the event's detail, which the index does not carry.
        events = await self._batch_get([(i["pk"]["S"], i["sk"]["S"]) for i in found], order=True)
        return [
            (
                int(e["t"]["N"]),
                MessageState(e["st"]["S"]),
                orjson.loads(e["d"]["S"]).get("duration"),
            )
            for e in events
        ]

    async def _newest(
        self,
        sources: list[Item],
        filters: Item,
        order: Callable[[Item], str],
        count: int,
        *,
        keep: Callable[[list[Item]], Awaitable[list[Item]]] | None = None,
    ) -> tuple[list[Item], str | None]:
        """The ``count`` newest matching items over several descending queries, and the
        cursor that continues after them (None when nothing is left); ``keep`` filters each
        page further (and may return other items in the same order, such as full ones)."""

        async def collect(source: Item) -> list[Item]:
            got: list[Item] = []
            start: Item | None = None
            while len(got) <= count:
                answer = await self._call(
                    self._db.query,
                    TableName=self.table,
                    ScanIndexForward=False,
                    Limit=count + 1,
                    **source,
                    **filters,
                    **({"ExclusiveStartKey": start} if start else {}),
                )
                items = answer.get("Items", [])
                got += await keep(items) if keep is not None and items else items
                start = answer.get("LastEvaluatedKey")
                if not start:
                    break
            return got[: count + 1]

        merged = sorted(
            (item for got in await asyncio.gather(*map(collect, sources)) for item in got),
            key=order,
            reverse=True,
        )
        page = merged[:count]
        cursor = order(page[-1]) if len(merged) > count and page else None
        return page, cursor

    # --- items ----------------------------------------------------------------------------------

    def _event_item(self, event: Event) -> Item:
        key = _ticks.order_key(event.time)
        item: Item = {
            "pk": _s(f"M#{event.message_id}"),
            "sk": _s("E#" + key),
            "gp": _s(f"E#{_shard(event.message_id)}"),
            "gs": _s(key),
            "t": _n(event.time),
            "st": _s(str(event.state)),
            "url": _s(event.url),
            "d": _s(_json(event.detail)),
            TTL_ATTRIBUTE: _n(self._expires(event.time)),
        }
        for attr, name in _EVENT_FILTERS:
            if (value := event.detail.get(name)) is not None:
                item[attr] = _s(str(value))
        if labels := split_labels(event.detail.get("label")):
            item["lb"] = {"SS": labels}
        return item

    def _event_put(self, event: Event) -> Item:
        return {"Put": {"TableName": self.table, "Item": self._event_item(event)}}

    async def _dlq_put(self, entry: DlqEntry) -> Item:
        m = entry.message
        key = _ticks.order_key(entry.failed_at)
        item: Item = {
            "pk": _s(f"D#{entry.dlq_id}"),
            "sk": _s("D"),
            "gp": _s("D"),
            "gs": _s(key),
            "did": _s(entry.dlq_id),
            "mid": _s(m.id),
            "url": _s(m.url),
            "fa": _n(entry.failed_at),
            "rec": _s(_record(m)),
            "rsp": _s(_json({"headers": entry.response_headers, "error": entry.error})),
            TTL_ATTRIBUTE: _n(self._expires(entry.failed_at)),
            **await self._blob("bd", f"body/{m.id}", m.body),
            **await self._blob("rb", f"response/{entry.dlq_id}", entry.response_body),
        }
        if entry.response_status is not None:
            item["rs"] = _n(entry.response_status)
        for attr, value in (("tp", m.topic_name), ("qn", m.queue_name), ("sc", m.schedule_id)):
            if value is not None:
                item[attr] = _s(value)
        if labels := split_labels(m.label):
            item["lb"] = {"SS": labels}
        return {"Put": {"TableName": self.table, "Item": item}}

    async def _dlq_entry(self, item: Item) -> DlqEntry:
        response = orjson.loads(item["rsp"]["S"])
        return DlqEntry(
            dlq_id=item["did"]["S"],
            message=Message.from_record(
                orjson.loads(item["rec"]["S"]), await self._read(item, "bd")
            ),
            failed_at=int(item["fa"]["N"]),
            response_status=int(item["rs"]["N"]) if "rs" in item else None,
            response_headers=[(str(k), str(v)) for k, v in response["headers"]],
            response_body=await self._read(item, "rb"),
            error=response.get("error"),
        )

    async def _message(self, item: Item) -> Message:
        return _message_from(item, await self._read(item, "bd"))

    async def _blob(self, attr: str, key: str, data: bytes) -> Item:
        """``data`` inline as ``attr``, or in S3 under ``key`` named by ``attr`` + "s"."""
        if len(data) <= self.inline_body_limit:
            return {attr: {"B": data}} if data else {}
        if self.bucket is None:
            raise ValueError(f"{len(data)} bytes need an S3 bucket (the table keeps up to 350 KB)")
        await self._call(self._s3.put_object, Bucket=self.bucket, Key=key, Body=data)
        return {attr + "s": _s(key)}

    async def _read(self, item: Item, attr: str) -> bytes:
        if attr in item:
            return bytes(item[attr]["B"])
        if attr + "s" in item:
            assert self.bucket is not None
            answer = await self._call(
                self._s3.get_object, Bucket=self.bucket, Key=item[attr + "s"]["S"]
            )
            return await asyncio.to_thread(answer["Body"].read)
        return b""

    def _expires(self, time_ms: int) -> int:
        return time_ms // 1000 + self.retention_s

    # --- DynamoDB calls -------------------------------------------------------------------------

    async def _get(self, pk: str, sk: str) -> Item | None:
        answer = await self._call(
            self._db.get_item, TableName=self.table, Key=_key(pk, sk), ConsistentRead=True
        )
        return answer.get("Item")

    async def _batch_get(
        self, keys: Sequence[tuple[str, str]], *, consistent: bool = False, order: bool = False
    ) -> list[Item]:
        """Items by key (100 per call, unprocessed keys retried); in ``keys``' order if asked."""
        found: dict[tuple[str, str], Item] = {}
        for chunk in _chunks(list(dict.fromkeys(keys)), 100):
            request: Any = {
                self.table: {
                    "Keys": [_key(pk, sk) for pk, sk in chunk],
                    "ConsistentRead": consistent,
                }
            }
            for attempt in range(8):
                answer = await self._call(self._db.batch_get_item, RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table, []):
                    found[(item["pk"]["S"], item["sk"]["S"])] = item
                request = answer.get("UnprocessedKeys")
                if not request:
                    break
                await asyncio.sleep(0.05 * 2**attempt)
            else:
                raise RuntimeError("DynamoDB kept keys unprocessed")
        if order:
            return [found[k] for k in keys if k in found]
        return list(found.values())

    async def _put_all(self, items: Sequence[Item]) -> None:
        """Unconditional puts, 25 per BatchWriteItem, unprocessed items retried."""
        for chunk in _chunks(list(items), 25):
            request: Any = {self.table: [{"PutRequest": {"Item": item}} for item in chunk]}
            for attempt in range(8):
                answer = await self._call(self._db.batch_write_item, RequestItems=request)
                request = answer.get("UnprocessedItems")
                if not request:
                    break
                await asyncio.sleep(0.05 * 2**attempt)
            else:
                raise RuntimeError("DynamoDB kept items unprocessed")

    async def _transact(self, items: list[Item]) -> None:
        """One TransactWriteItems; a failed dedup condition raises DedupConflict."""
        try:
            await self._call(self._db.transact_write_items, TransactItems=items)
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons", [])
            keys = [
                item["Put"]["Item"]["pk"]["S"][2:]
                for item, reason in zip(items, reasons, strict=False)
                if reason.get("Code") == "ConditionalCheckFailed"
                and "Put" in item
                and item["Put"]["Item"]["pk"]["S"].startswith("U#")
            ]
            if keys:
                raise DedupConflict(keys) from exc
            raise

    async def _write_all(self, groups: list[list[Item]]) -> None:
        """Groups of Put items that must be stored together: groups holding a condition in as
        few transactions as fit, the rest by BatchWriteItem. If a write fails, what was written
        is deleted again and the error raised."""
        plain = [put for group in groups if not _conditional(group) for put in group]
        chunks: list[list[Item]] = [[]]
        size = 0
        for group in filter(_conditional, groups):
            group_size = sum(_size(item) for item in group)
            if chunks[-1] and (
                len(chunks[-1]) + len(group) > _TRANSACTION_ITEMS
                or size + group_size > _TRANSACTION_BYTES
            ):
                chunks.append([])
                size = 0
            chunks[-1].extend(group)
            size += group_size
        written: list[Item] = []
        try:
            written += plain  # a failing batch write may have stored some: delete them all
            await self._put_all([put["Put"]["Item"] for put in plain])
            for chunk in filter(None, chunks):
                await self._transact(chunk)
                written += chunk
        except BaseException:
            await self._roll_back(written)
            raise

    async def _roll_back(self, items: list[Item]) -> None:
        keys = [
            {"pk": i["Put"]["Item"]["pk"], "sk": i["Put"]["Item"]["sk"]}
            for i in items
            if "Put" in i
        ]
        for chunk in _chunks(keys, 25):
            request: Any = {self.table: [{"DeleteRequest": {"Key": key}} for key in chunk]}
            while request:
                answer = await self._call(self._db.batch_write_item, RequestItems=request)
                request = answer.get("UnprocessedItems")

    def _queue(self) -> str:
        if self.queue_url is None:
            raise RuntimeError("AwsBackend is not open: call open() (or create_resources())")
        return self.queue_url

    async def _call(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, **kwargs))


# --- helpers ------------------------------------------------------------------------------------

_EVENT_FILTERS = (("tp", "topicName"), ("qn", "queueName"), ("sc", "scheduleId"))
_DIGITS = re.compile(r"\d{36}")


def _gate_pks(messages: Iterable[Message]) -> list[str]:
    """The gates that parked ``messages`` wait at: to look at once they are stored."""
    pks = []
    for m in messages:
        if m.queue_name is not None:
            pks.append(aws_gates.queue_pk(m.queue_name))
        elif m.flow_control_key is not None:
            pks.append(aws_gates.key_pk(m.flow_control_key))
    return list(dict.fromkeys(pks))


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _record(message: Message) -> str:
    """The message's record without its unset fields (writes bill per KB; they have defaults)."""
    return _json({k: v for k, v in message.to_record().items() if v is not None and v != {}})


def _s(value: str) -> dict[str, str]:
    return {"S": str(value)}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": _s(pk), "sk": _s(sk)}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _cancelled_at(exc: ClientError, index: int) -> bool:
    """Whether a cancelled transaction failed on the condition of its ``index``-th item."""
    if _code(exc) != "TransactionCanceledException":
        return False
    reasons = exc.response.get("CancellationReasons", [])
    return len(reasons) > index and reasons[index].get("Code") == "ConditionalCheckFailed"


def _conditional(group: list[Item]) -> bool:
    return any("ConditionExpression" in put["Put"] for put in group)


def _shard(message_id: str) -> int:
    return zlib.crc32(message_id.encode()) % SHARDS


def _chunks(items: list[T], size: int) -> Iterable[list[T]]:
    return (items[i : i + size] for i in range(0, len(items), size))


def _size(item: Item) -> int:
    """Roughly an item's bytes, for splitting transactions under their size limit."""
    return len(orjson.dumps(item, default=lambda b: base64.b64encode(b).decode()))


def _visibility_seconds(ms: int) -> int:
    return max(0, min(_SQS_MAX_VISIBILITY, -(-ms // 1000)))


def _active(lease: Lease, now: int) -> Event:
    return Event.of(lease.message, MessageState.ACTIVE, now)


def _deduplicate(
    messages: Sequence[Message], known: dict[str, Accepted] | None
) -> tuple[list[Accepted], list[Message]]:
    """The answers, and the messages to store: a dedup id seen before (``known``) or earlier in
    the same batch answers with the first message's id. ``known`` None: no deduplication."""
    results: list[Accepted] = []
    stored: list[Message] = []
    first: dict[str, Accepted] = dict(known or {})
    for message in messages:
        key = message.dedup_key if known is not None else None
        if key is not None and key in first:
            results.append(replace(first[key], deduplicated=True))
            continue
        accepted = Accepted(message_id=message.id, url=message.url)
        if key is not None:
            first[key] = accepted
        results.append(accepted)
        stored.append(message)
    return results, stored


def _refusal(old: Item | None, gen: int, now: int, receive_count: int) -> _Refused:
    """Why a copy was not leased, from the message item as it was (None: missing)."""
    if old is None or int(old["gen"]["N"]) < gen:
        # Not stored yet (its accept, promotion or retry is still writing), or never will be.
        if receive_count <= _PENDING_RECEIVES:
            return _Refused(hide_seconds=2 ** (receive_count - 1))
        return _Refused()
    state = old["st"]["S"]
    if int(old["gen"]["N"]) == gen and "gp" not in old and state == MessageState.ACTIVE:
        # Another lease on it is live (a duplicate copy): look again when that lease ends.
        left = int(old["lu"]["N"]) - now
        return _Refused(hide_seconds=_visibility_seconds(left) + 1)
    return _Refused()  # stale copy, finished or cancelled message


def _event_sources(low: str, high: str, values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Queries of the time index over every event shard between two order keys."""
    return [
        {
            "IndexName": TIME_INDEX,
            "KeyConditionExpression": "gp = :gp AND gs BETWEEN :low AND :high",
            "ExpressionAttributeValues": {
                ":gp": _s(f"E#{shard}"),
                ":low": _s(low),
                ":high": _s(high),
                **values,
            },
        }
        for shard in range(SHARDS)
    ]


def _message_from(item: Item, body: bytes) -> Message:
    message = Message.from_record(orjson.loads(item["rec"]["S"]), body)
    message.state = MessageState(item["st"]["S"])
    message.retried = int(item["rt"]["N"])
    return message


def _event_from(item: Item) -> Event:
    return Event(
        time=int(item["t"]["N"]),
        message_id=item["pk"]["S"][2:],
        state=MessageState(item["st"]["S"]),
        url=item["url"]["S"],
        detail=orjson.loads(item["d"]["S"]),
        seq=int(item["sk"]["S"][2:]),
    )


def _bounds(from_time: int | None, to_time: int | None, cursor: str | None) -> tuple[str, str]:
    """The order-key range of a listing: the time range, continued below ``cursor``."""
    low = _LOW if from_time is None else f"{max(0, from_time):013d}" + "0" * 23
    high = _HIGH if to_time is None else f"{max(0, to_time):013d}" + "9" * 23
    if cursor:
        if not _DIGITS.fullmatch(cursor):
            raise BadRequest(f"invalid cursor {cursor!r}")
        high = min(high, f"{int(cursor) - 1:036d}")
    return low, high


def _filter(columns: list[tuple[str, Sequence[str] | Sequence[int]]]) -> tuple[Item, Item]:
    """Query arguments filtering on each column's values (OR-ed), the columns AND-ed; and the
    expression values they use (to merge with the key condition's). ``lb`` holds a set of
    labels: it matches when it contains any of the values."""
    clauses: list[str] = []
    names: dict[str, str] = {}
    values: Item = {}
    for attr, wanted in columns:
        if not wanted:
            continue
        placeholders = []
        for i, value in enumerate(dict.fromkeys(wanted)):
            placeholder = f":{attr}{i}"
            values[placeholder] = _n(value) if isinstance(value, int) else _s(str(value))
            placeholders.append(placeholder)
        names[f"#{attr}"] = attr  # `url` is a reserved word
        if attr == "lb":
            clauses.append("(" + " OR ".join(f"contains(#lb, {p})" for p in placeholders) + ")")
        else:
            clauses.append(f"#{attr} IN ({', '.join(placeholders)})")
    if not clauses:
        return {}, values
    return {"FilterExpression": " AND ".join(clauses), "ExpressionAttributeNames": names}, values


def _dlq_record_matches(item: Item, query: DlqQuery) -> bool:
    """The DLQ filters that only the message record can answer (caller IP, flow-control key)."""
    record = orjson.loads(item["rec"]["S"])
    return all(
        not wanted or record.get(name) in wanted
        for name, wanted in (
            ("caller_ip", query.caller_ips),
            ("flow_control_key", query.flow_control_keys),
        )
    )
