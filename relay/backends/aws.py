"""The AWS backend: one DynamoDB table for state and SQS for dispatch (S3 for large bodies).

One table, keys ``pk``/``sk`` (strings), on-demand, TTL on ``expires_at`` (epoch seconds):

=================  ============  ==============  ================================================
item               pk            sk              also
=================  ============  ==============  ================================================
message            M#<id>        M               st, rt (retried), gen, rec (JSON), bd | bs (body
                                                 inline | S3 key), ev (its events), lp/ls (log
                                                 entry), lt/lu (lease token/until: gated only)
response body      M#<id>        R#<event key>   b: an event's response body over 512 chars
log page           L#<key>       L               lp/ls, lg (zlib JSON: [message id, key, state])
DLQ entry          D#<dlq id>    D               did, mid, url, rs, fa, rec, bd|bs, rsp, rb|rbs
dedup id           U#<key>       U               mid, url, exp (ms)
setting            S#<name>      S               v
record             R#<kind>      <key>           v (JSON: a URL group, schedule, queue)
workflow run       W#<run id>    W, E#<index>    the run and its entries: see aws_runs
=================  ============  ==============  ================================================

Queues and flow control keep their gates (G#Q#<queue>, G#K#<key>) and wait lists beside these,
and a message's item names its wait-list entry (``wl``) while it waits: see aws_gates.

Events live in their message's item: ``ev`` is a list appended to (``list_append``) by the same
write that changes the state, each element only what the message's record cannot rebuild
(:func:`_pack_event`). Order keys are 36 digits — event time, then a per-process monotonic write
tick — so listings are newest first even within one millisecond, and a key is its listing's
cursor. The logs API and the console list events through the keys-only GSI ``log`` (``lp`` =
L#<shard> → ``ls``): a message accepted alone is its own entry (key = its CREATED event's, never
changed, so later writes of the item cost the index nothing); other events are *pointers* in log
pages — one per accept of several messages, per delivery batch (:meth:`AwsBackend.log_batch`) or
per settle outside one. A page spans at most a minute, so a listing merges the shards newest
first and reads a minute ahead (:meth:`AwsBackend._log_pointers`); a pointer is resolved against
its message item. A crash between a settle and its page loses a listing line, never the event.

The sparse GSI ``by-time`` (``gp`` → ``gs``) serves the DLQ (D) and the messages waiting in
DynamoDB for a due time too far for SQS (Q#<shard>, ``gs`` = due ms).

Dispatch: a message due within ``max_sqs_delay`` is sent to SQS with ``DelaySeconds``; a later one
waits in DynamoDB until :meth:`AwsBackend.promote_due` (the ticker) moves it. An SQS copy names the
message and its ``gen``; every re-enqueue (promotion, retry) bumps ``gen``, so a stale copy is
recognised and dropped at lease. Wake-ups travel the same queue: a gate's (aws_gates) and a pass's
(:meth:`AwsBackend.wake_at`, waiter timeouts), which :meth:`AwsBackend.lease_record` hands to the
delivery runtime as :class:`TimerDue` (this module runs no pass of the service's layer). Copies are
sent *before* the DynamoDB write that makes them valid: a crash in between leaves a copy whose
message is missing or older, which lease hides briefly (the write may still land) and then drops —
never a stored message without a copy. Leasing reads the message item (one consistent read); SQS's
visibility timeout is the lease, and settle is conditional on the generation and an unfinished
state, so of two copies attempted at once only one outcome is stored (at least once: receivers
deduplicate on the message id). A message in a queue or with a flow-control key also writes a lease
token, which its gate's slot accounting needs (aws_gates), and settles on that token.

Writing messages together with other records (the seam for stores such as workflow runs, which
must land in the same transaction as the messages they create): :meth:`AwsBackend.accept_items`
builds an accept's item groups — per message :meth:`AwsBackend._message_put` (Put transact items
of the message, its events and wait entry) plus its dedup id's conditional Put, and the log
pages; :meth:`AwsBackend.dispatch_accepted` sends the SQS copies (before the write);
:meth:`AwsBackend._write_all` writes the groups (a group with a condition in a transaction, a
caller's own items appended to a message's group ride in it; its ``before`` hook sends each
message's copy just before the call that writes it); :meth:`AwsBackend.accepted`
finishes (long-delay bookkeeping, gate admission). :meth:`AwsBackend.accept` is those four steps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import functools
import heapq
import logging
import math
import os
import re
import secrets
import threading
import time
import zlib
from collections import Counter
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import boto3
import orjson
from botocore.config import Config
from botocore.exceptions import ClientError

from relay.backends import aws_gates
from relay.backends.aws_gates import Gates
from relay.backends.aws_runs import Runs
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
    split_labels,
)
from relay.protocol import BadRequest
from relay.workflows.model import RunEntry, RunLogQuery, RunQuery, RunState, WorkflowRun

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
LOG_INDEX = "log"
SHARDS = 4  # GSI partitions per list (the log, waiting messages), so no one key gets hot
TABLE_SCHEMA: dict[str, Any] = {
    "BillingMode": "PAY_PER_REQUEST",
    "AttributeDefinitions": [
        {"AttributeName": name, "AttributeType": "S"}
        for name in ("pk", "sk", "gp", "gs", "lp", "ls")
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
        },
        {
            # Keys only: an entry costs one write unit, and no later write of a listed message
            # item changes it (its key is its CREATED event's; state changes are not projected).
            "IndexName": LOG_INDEX,
            "KeySchema": [
                {"AttributeName": "lp", "KeyType": "HASH"},
                {"AttributeName": "ls", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        },
    ],
    # CloudFormation's property; the API sets it with UpdateTimeToLive after CreateTable.
    "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
}

SQS_MAX_DELAY = 900  # seconds: SQS's limit for DelaySeconds
_SQS_MAX_VISIBILITY = 43_200
_TRANSACTION_ITEMS = 100
_KEY_BYTES = (2048, 1024)  # DynamoDB's longest partition and sort key values
_TRANSACTION_BYTES = 3_500_000  # under DynamoDB's 4 MB per transaction, with room for keys
_INLINE_MAX = 350_000  # an item is at most 400 KB: without a bucket, larger bodies are refused
_PENDING_RECEIVES = 4  # a copy of a not-yet-stored message is hidden 1, 2, 4, 8 s, then dropped
_RESEND_AFTER = 10.0  # s: an accept whose write took longer re-sends its copies (see accept)
_REREAD = (0.05, 0.15)  # s: pauses before reading a copy's not-yet-stored message again
_PROMOTE_EVERY = 1.0  # seconds: how often lease() looks for long delays other processes stored
_FINAL = [str(s) for s in MessageState if s.final]
_NOT_FINAL = f"NOT st IN ({', '.join(f':f{i}' for i in range(len(_FINAL)))})"
_LOW, _HIGH = "0" * 36, "9" * 36
_OUTCOMES = [str(s) for s in (MessageState.DELIVERED, MessageState.RETRY, MessageState.FAILED)]
_LOG_SPAN = 60_000  # ms: the most a log page's pointers span (listing reads this far ahead)
_PAGE_POINTERS = 400  # pointers per log page (~10 KB compressed at most)
_EVENT_BODY_INLINE = 512  # chars of a response body kept in the message item's event
_PURGE_READS = 100  # the runs' by-time index entries a purge call reads (~2 RRU a call)
# The console's counts by state (count_messages): DynamoDB keeps no counts, so a count scans one
# of N segments of the table, N the power of two that leaves _COUNT_SAMPLE to twice as many items
# in it (N = 1, the whole table, under twice _COUNT_SAMPLE items). At ~1 KB an item that is
# 250-500 read units (~$0.00006 at most), 2-4 pages, well under a second; its thousand-odd message
# items put the total within a few percent (a rare state's count less surely).
_COUNT_SAMPLE = 2_000
_MAX_SEGMENTS = 2**19  # DynamoDB allows TotalSegments up to 1,000,000
_COUNTS_KEPT = 60  # s a count is kept per process: the overview asks every 10 s, per open tab
_SIZE_KEPT = 3_600  # s DescribeTable's ItemCount is kept (AWS refreshes it about every 6 hours)
# find_pending's parallel Scan: a segment per this many items (~100 MB at ~1 KB an item: a
# hundred 1 MB pages, which one worker reads within the API Lambda's 29 s), at most
# _SCAN_SEGMENTS at once (the client's default workers).
_SCAN_SEGMENT_ITEMS = 100_000
_SCAN_SEGMENTS = 16


class LeaseDeferred(Exception):
    """An SQS record that cannot be leased yet (its message is still being stored, or another
    lease on it is live): its visibility was shortened; report it as a batch item failure."""


class TimerDue(Exception):
    """An SQS record that is a due wake-up of the pass ``timer`` (:meth:`AwsBackend.wake_at`),
    not a message copy: the caller runs that pass, then reports the record done (on an error it
    comes back after its visibility timeout)."""

    def __init__(self, timer: str, due: int) -> None:
        super().__init__(f"wake-up {timer!r} due at {due}")
        self.timer = timer
        self.due = due


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
class _Timer:
    """A wake-up record that came due (see :class:`TimerDue`)."""

    timer: str
    due: int


@dataclass(slots=True)
class _Refused:
    """What to do with a copy that was not leased: drop it, or hide it for ``hide_seconds``."""

    hide_seconds: int | None = None


class _Kept(Generic[T]):
    """A value read again only once it is ``seconds`` old (one read at a time)."""

    def __init__(self, seconds: float, read: Callable[[], Awaitable[T]]) -> None:
        self.seconds = seconds
        self._read = read
        self._lock = asyncio.Lock()
        self._kept: tuple[float, T] | None = None  # (monotonic s when read, value)

    async def get(self) -> T:
        async with self._lock:
            if self._kept is None or time.monotonic() - self._kept[0] >= self.seconds:
                self._kept = (time.monotonic(), await self._read())
            return self._kept[1]


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
        purge_reads: int = _PURGE_READS,
        count_sample: int = _COUNT_SAMPLE,
        scan_segment_items: int = _SCAN_SEGMENT_ITEMS,
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
        self.purge_reads = purge_reads  # the runs' index entries a purge call reads
        self.count_sample = count_sample  # items a count reads (up to twice as many)
        self.scan_segment_items = scan_segment_items  # items a segment of find_pending's Scan
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
        self._runs = Runs(self)  # workflow runs (aws_runs)
        self._counts = _Kept(_COUNTS_KEPT, self._count)
        self._table_items = _Kept(_SIZE_KEPT, self._describe_items)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **kwargs: Any) -> AwsBackend:
        """From template.yaml's function environment: RELAY_TABLE, RELAY_QUEUE_URL, RELAY_BUCKET
        (and ``retention_days`` among ``kwargs``: Settings' RELAY_RETENTION_DAYS)."""
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

    async def put_setting(
        self, name: str, value: str, *, if_absent: bool = False, replacing: str | None = None
    ) -> str:
        item = {"pk": _s(f"S#{name}"), "sk": _s("S"), "v": _s(value)}
        condition: dict[str, Any] = {}
        if replacing is not None:
            condition = {
                "ConditionExpression": "v = :old",
                "ExpressionAttributeValues": {":old": _s(replacing)},
            }
        elif if_absent:
            condition = {"ConditionExpression": "attribute_not_exists(pk)"}
        try:
            await self._call(self._db.put_item, TableName=self.table, Item=item, **condition)
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            return await self.get_setting(name) or ""
        return value

    async def delete_setting(self, name: str, *, if_value: str | None = None) -> bool:
        condition: dict[str, Any] = {}
        if if_value is not None:
            condition = {
                "ConditionExpression": "v = :v",
                "ExpressionAttributeValues": {":v": _s(if_value)},
            }
        try:
            answer = await self._call(
                self._db.delete_item,
                TableName=self.table,
                Key=_key(f"S#{name}", "S"),
                ReturnValues="ALL_OLD",
                **condition,
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            return False
        return "Attributes" in answer

    # --- wake-ups -------------------------------------------------------------------------------

    @property
    def wake_reach(self) -> int | None:
        """SQS brings a wake-up at most ``max_sqs_delay`` ahead."""
        return self.max_sqs_delay * 1000

    async def wake_at(self, timer: str, due: int, now: int) -> None:
        """One SQS record delayed until ``due``: :meth:`lease_record` raises TimerDue for it
        then (and hides it again if it comes early); :meth:`lease` drops it (a polling process
        runs a ticker that sleeps until the next deadline)."""
        await self._send_raw(_json({"timer": timer, "t": due}), due, now)

    # --- configuration records (URL groups, schedules, queues) ------------------------------------

    async def put_record(self, kind: str, key: str, value: dict[str, Any]) -> None:
        item = {"pk": _s(f"R#{kind}"), "sk": _s(key), "v": _s(_json(value))}
        await self._call(self._db.put_item, TableName=self.table, Item=item)

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        item = await self._get(f"R#{kind}", key)
        return None if item is None else dict(orjson.loads(item["v"]["S"]))

    async def list_records(
        self,
        kind: str,
        prefix: str = "",
        *,
        start: str | None = None,
        stop: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        condition = _record_range(kind, prefix, start, stop)
        if condition is None:
            return []
        # BETWEEN includes its upper bound: a key equal to ``stop`` is left out here.
        high = condition["ExpressionAttributeValues"].get(":high", {}).get("S")
        records: list[dict[str, Any]] = []
        pages = self._pages(
            self._db.query,
            TableName=self.table,
            ConsistentRead=True,
            **condition,
            **({"Limit": limit} if limit is not None else {}),
        )
        async with contextlib.aclosing(pages):
            async for items in pages:
                kept = [item for item in items if item["sk"]["S"] != high]
                records += [dict(orjson.loads(item["v"]["S"])) for item in kept]
                if limit is not None and len(records) >= limit:
                    return records[:limit]
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
        if any write fails, those before it are deleted again before the error is raised.

        The steps, for a caller that stores more in the same write (see the module docstring):
        :meth:`accept_items` builds the items, :meth:`dispatch_accepted` sends the copies
        (before the write), :meth:`_write_all` writes, :meth:`accepted` finishes."""
        use_dedup = dedup_window > 0
        keys = sorted({m.dedup_key for m in messages if use_dedup and m.dedup_key})
        known = await self._dedup_entries(keys, now) if keys else {}
        sent: set[str] = set()
        sent_copies: list[Message] = []
        started = time.monotonic()
        places = await self._gates.places(messages, now)  # who waits for a queue or a key
        unsent: dict[str, Message] = {}

        async def dispatch(items: Sequence[Item]) -> None:
            # A message's copy goes out after its body, just before the write call that stores
            # it (not before the whole accept's): a copy that arrives before its message is
            # deferred, which costs SQS requests and reads.
            due = [unsent.pop(mid) for mid in _message_ids(items) if mid in unsent]
            sent.update(m.id for m in due)
            sent_copies.extend(await self.dispatch_accepted(due, now, places))

        for _ in range(5):
            results, stored = _deduplicate(messages, known if use_dedup else None)
            groups, others = await self.accept_items(
                stored, events, now, places, dedup_window if use_dedup else 0
            )
            unsent.clear()
            unsent.update((m.id, m) for m in stored if m.id not in sent)
            try:
                await self._write_all([g for g in groups if g], before=dispatch)
            except DedupConflict as conflict:
                known.update(await self._dedup_entries(conflict.keys, now))
                continue
            if time.monotonic() - started > _RESEND_AFTER:
                # Lease gives a copy whose message is not stored yet ~15 s before dropping it;
                # a write slower than that may have outlived its copies: send them again (a
                # duplicate copy is dropped at lease once settled, or its settle is refused).
                kept = {m.id for m in stored}
                await self._dispatch_new([m for m in sent_copies if m.id in kept], now)
            await self._append_events(others)
            await self.accepted(stored, now, places)
            return results
        raise RuntimeError("deduplication ids kept changing under concurrent publishes")

    async def accept_items(
        self,
        stored: Sequence[Message],
        events: Sequence[Event],
        now: int,
        places: Mapping[str, aws_gates.Place],
        dedup_window: int = 0,
    ) -> tuple[list[list[Item]], list[tuple[str, Event]]]:
        """The write of an accept: per message the transact items of :meth:`_message_put` (plus
        its dedup id's), and one group of log pages; and the events of messages not among
        ``stored`` (appended to their items afterwards). A group holding a condition is written
        in a transaction, the others by BatchWriteItem (see :meth:`_write_all`)."""
        keyed: dict[str, list[tuple[str, Event]]] = {}
        others: list[tuple[str, Event]] = []
        ids = {m.id for m in stored}
        for event in kept_events(events, ids):
            entry = (_ticks.order_key(event.time), event)
            if event.message_id in ids:
                keyed.setdefault(event.message_id, []).append(entry)
            else:
                others.append(entry)
        # One message lists its CREATED event itself (one index entry); more share log pages.
        alone = len(stored) == 1
        groups = list(
            await asyncio.gather(
                *(
                    self._message_put(m, keyed.get(m.id, []), now, places.get(m.id), listed=alone)
                    for m in stored
                )
            )
        )
        if dedup_window:
            for group, message in zip(groups, stored, strict=True):
                if message.dedup_key:
                    group.append(self._dedup_put(message, now, dedup_window))
        # (The message accepted alone lists its first event itself; any others go to a page.)
        pointers = [
            (mid, key, e.state)
            for mid, entries in keyed.items()
            for key, e in entries[1 if alone else 0 :]
        ]
        if pointers:
            groups.append([self._put(page) for page in self._log_pages(pointers)])
        return groups, others

    async def dispatch_accepted(
        self, messages: Sequence[Message], now: int, places: Mapping[str, aws_gates.Place]
    ) -> list[Message]:
        """Send the SQS copies of accepted messages that neither wait in DynamoDB (long delays)
        nor for a queue or key — *before* the write that stores them; returns those sent."""
        ready = [m for m in messages if m.id not in places]
        await self._dispatch_new(ready, now)
        return ready

    async def accepted(
        self, stored: Sequence[Message], now: int, places: Mapping[str, aws_gates.Place]
    ) -> None:
        """After the write: remember long delays for lease(), admit what waits at a gate."""
        self._note_waiting([m for m in stored if m.id not in places], now)
        await self._gates.admit(_gate_pks(m for m in stored if m.id in places), now)

    async def _dispatch_new(self, messages: Sequence[Message], now: int) -> None:
        """Send the copies of messages due within ``max_sqs_delay`` (before they are stored)."""
        await self._send([(m.id, 0, m.not_before) for m in messages if self._to_sqs(m, now)], now)

    async def _message_put(
        self,
        message: Message,
        events: Sequence[tuple[str, Event]],
        now: int,
        place: aws_gates.Place | None = None,
        *,
        listed: bool = False,
    ) -> list[Item]:
        """The transact items (Put) that store a new message with its keyed events, as written
        by accept (and by a settle's follow-ups): the message item — and, for a message that
        waits for its queue or key, its wait entry. ``listed``: the item is its own log entry
        (its first event's key in the ``log`` index) instead of a log page's pointer."""
        values, extra = self._event_values(message, events)
        item: Item = {
            "pk": _s(f"M#{message.id}"),
            "sk": _s("M"),
            "st": _s(str(message.state)),
            "rt": _n(message.retried),
            "gen": _n(0),
            "rec": _s(_record(message)),
            **await self._blob("bd", f"body/{message.id}", message.body),
        }
        if values:
            item["ev"] = {"L": values}
        if listed and events:
            item.update(_listed(events[0][0]))
        puts = [self._put(extra_item) for extra_item in extra]
        if place is not None:  # waits for its queue or flow-control key (aws_gates)
            return self._gates.parked_puts(self._put(item), place) + puts
        if not self._to_sqs(message, now):
            item.update(self._waiting(message.id, message.not_before))
        return [self._put(item), *puts]

    def _put(self, item: Item) -> Item:
        return {"Put": {"TableName": self.table, "Item": item}}

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
            # Two copies of one generation in one receive (a re-sent copy): lease one, drop the
            # other (if the lease is lost, the leased copy itself comes back).
            copies: dict[str, _Received] = {}
            for r in received:
                copies.setdefault(r.body, r)
            outcomes = await asyncio.gather(
                *(
                    self._lease_one(r, now, visibility, r.handle)
                    if copies[r.body] is r
                    else _dropped()
                    for r in received
                )
            )
            leases.extend(o for o in outcomes if isinstance(o, Lease))
            await self._refuse(
                [
                    (r, _Refused() if isinstance(o, _Timer) else o)
                    for r, o in zip(received, outcomes, strict=True)
                    if not isinstance(o, Lease)
                ]
            )
        leases.sort(key=lambda lease: lease.message.not_before)
        return leases

    async def lease_record(
        self, record: Mapping[str, Any], now: int, *, visibility: int | None = None
    ) -> Lease | None:
        """Lease the message of one record of an SQS Lambda event. None: nothing to deliver (a
        stale copy or a finished message) — report success and the event source deletes it.
        Raises LeaseDeferred when it must come back later, TimerDue for a due wake-up. Settling
        such a lease leaves the record to the event source (report success once settled;
        failure if settle is False)."""
        received = _Received(
            handle=record["receiptHandle"],
            body=record["body"],
            receive_count=int(record.get("attributes", {}).get("ApproximateReceiveCount", 1)),
        )
        outcome = await self._lease_one(
            received, now, self.record_visibility if visibility is None else visibility, ""
        )
        if isinstance(outcome, Lease):
            return outcome
        if isinstance(outcome, _Timer):
            raise TimerDue(outcome.timer, outcome.due)
        if outcome.hide_seconds is None:
            return None
        await self._refuse([(received, outcome)], delete=False)
        raise LeaseDeferred(f"message copy deferred for {outcome.hide_seconds}s")

    async def _lease_one(
        self, received: _Received, now: int, visibility: int, handle: str
    ) -> Lease | _Refused | _Timer:
        """One consistent read decides. A message without a queue or flow-control key is leased
        by SQS's visibility alone (no write: its ACTIVE event is stored with the outcome); one
        with them takes a lease token on its item, as its gate's slot accounting needs."""
        try:
            copy = orjson.loads(received.body)
            if isinstance(copy, dict) and "gate" in copy:  # a wake-up of a queue or key
                return _Refused(hide_seconds=await self._gates.on_timer(copy, now))
            if isinstance(copy, dict) and "timer" in copy:  # a wake-up of a pass (wake_at)
                return _wake_up(str(copy["timer"]), int(copy["t"]), now)
            message_id, gen = str(copy["id"]), int(copy["g"])
        except (ValueError, KeyError, TypeError):
            log.warning("dropping a malformed dispatch message: %.200r", received.body)
            return _Refused()
        until = now + visibility
        item = await self._get(f"M#{message_id}", "M")
        for pause in _REREAD if received.receive_count == 1 else ():
            if item is not None and int(item["gen"]["N"]) >= gen:
                break
            # Its write is most likely under way (the copy went out just before it): a read
            # again soon costs less than hiding the copy and receiving it once more.
            await asyncio.sleep(pause)
            item = await self._get(f"M#{message_id}", "M")
        if item is None or not _leasable(item, gen, now):
            return _refusal(item, gen, now, received.receive_count)
        message = await self._message(item)
        if not _gated(message):
            message.state = MessageState.ACTIVE
            return Lease(message=message, receipt=f".{gen}.{now}.{handle}", visible_until=until)
        token = secrets.token_hex(8)
        try:
            await self._call(
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
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            old = cast("Item | None", exc.response.get("Item"))  # ALL_OLD, if it exists
            return _refusal(old, gen, now, received.receive_count)
        message.state = MessageState.ACTIVE
        if message.flow_control_key is not None and not await self._gates.hold(
            message, token, gen, until, now
        ):
            return _Refused()  # its call slot was reclaimed: back to the key's wait list
        return Lease(message=message, receipt=f"{token}.{gen}.{now}.{handle}", visible_until=until)

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
        """One conditional UpdateItem stores the new state and appends the attempt's events
        (ACTIVE, at the lease's time, then the outcome) to the message item; a transaction
        instead when there are follow-ups, a DLQ entry or gate updates. Conditional on the lease
        token (a gated message) or on the generation and an unfinished state (SQS visibility
        is the lease: past ``visible_until`` the lease is lost). The events' log pointers go to
        the open :meth:`log_batch` or a page of their own. A retry's new copy is sent first;
        the leased SQS message is deleted last."""
        token, gen_text, leased_text, handle = lease.receipt.split(".", 3)
        gen = int(gen_text)
        message = lease.message
        if not token and now > lease.visible_until:
            return False  # SQS may have handed the copy to another attempt already
        values: Item = {
            ":st": _s(str(settlement.state)),
            ":rt": _n(settlement.retried),
            ":none": {"L": []},
        }
        if token:
            condition = "lt = :token AND st = :active"
            values.update({":token": _s(token), ":active": _s(MessageState.ACTIVE)})
        else:
            condition = (
                "gen = :gen0 AND st IN (:created, :retry) AND attribute_not_exists(lt)"
                " AND attribute_not_exists(gp) AND attribute_not_exists(wl)"
            )
            values.update(
                {
                    ":gen0": _n(gen),
                    ":created": _s(MessageState.CREATED),
                    ":retry": _s(MessageState.RETRY),
                }
            )
        active = Event.of(message, MessageState.ACTIVE, int(leased_text))
        own = [e for e in [active, *settlement.events] if e.message_id == message.id]
        keyed = [(_ticks.order_key(e.time), e) for e in own]
        others = [
            (_ticks.order_key(e.time), e) for e in settlement.events if e.message_id != message.id
        ]
        events, extra = self._event_values(message, keyed)
        values[":ev"] = {"L": events}
        sets = ["st = :st", "rt = :rt", "ev = list_append(if_not_exists(ev, :none), :ev)"]
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
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        follow_ups = settlement.follow_ups
        run_end: Item | None = None
        if settlement.fails_run is not None:  # ends the run in the same transaction (aws_runs)
            if await self._runs.active(settlement.fails_run):
                dlq_id = settlement.dlq.dlq_id if settlement.dlq is not None else None
                run_end = self._runs.end_update(
                    settlement.fails_run, RunState.RUN_FAILED, now, response=None, dlq_id=dlq_id
                )
            else:
                follow_ups = []  # the run had ended: its failure was reported before
        for _ in range(2):
            try:
                if follow_ups or settlement.dlq is not None or gated.items or run_end:
                    places = await self._gates.places(follow_ups, now, configure=False)
                    items: list[Item] = [{"Update": update}]
                    for follow_up in follow_ups:
                        # A workflow run's callback lists itself (a CREATED event, its own log
                        # entry: 1 WRU more), as the run's logs find it by listing messages;
                        # a plain message's callback stays unlisted (its cost unchanged).
                        created = (
                            [
                                (
                                    _ticks.order_key(now),
                                    Event.of(follow_up, MessageState.CREATED, now),
                                )
                            ]
                            if follow_up.run_id is not None
                            else []
                        )
                        items += await self._message_put(
                            follow_up, created, now, places.get(follow_up.id), listed=bool(created)
                        )
                    if settlement.dlq is not None:
                        items.append(await self._dlq_put(settlement.dlq))
                    items += [self._put(item) for item in extra]
                    items += gated.items
                    if run_end is not None:
                        items.append({"Update": run_end})
                    await self._dispatch_new([f for f in follow_ups if f.id not in places], now)
                    await self._transact(items)
                    gated.touched += _gate_pks(f for f in follow_ups if f.id in places)
                else:
                    # Large response bodies first: a settle that then fails leaves them to TTL.
                    await self._put_all(extra)
                    await self._call(self._db.update_item, **update)
            except ClientError as exc:
                if _code(exc) == "ConditionalCheckFailedException" or _cancelled_at(exc, 0):
                    return False  # the lease was lost or the message cancelled: keep the copy
                if run_end is not None and _cancelled_at(exc, len(items) - 1):
                    run_end, follow_ups = None, []  # the run ended meanwhile (copies: dropped)
                    continue
                raise
            break
        await self._log([(message.id, key, e.state) for key, e in keyed])
        await self._append_events(others)
        self._note_waiting(follow_ups, now)
        if handle:
            await self._call(self._sqs.delete_message, QueueUrl=self._queue(), ReceiptHandle=handle)
        await self._gates.admit(gated.touched, now)
        return True

    async def cancel(self, message_ids: Sequence[str], now: int) -> list[str]:
        async with self.log_batch():
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
            key = _ticks.order_key(now)
            events, extra = self._event_values(
                message, [(key, Event.of(message, MessageState.CANCELED, now))]
            )
            try:
                await self._transact(
                    [
                        {
                            "Update": {
                                "TableName": self.table,
                                "Key": _key(f"M#{message_id}", "M"),
                                # A copy still in SQS finds the message final and is dropped.
                                "UpdateExpression": "SET st = :canceled,"
                                f" {TTL_ATTRIBUTE} = :expires,"
                                " ev = list_append(if_not_exists(ev, :none), :ev)"
                                " REMOVE gp, gs, lt, lu, wl",
                                "ConditionExpression": condition,
                                "ExpressionAttributeValues": {
                                    ":canceled": _s(MessageState.CANCELED),
                                    ":expires": _n(self._expires(now)),
                                    ":none": {"L": []},
                                    ":ev": {"L": events},
                                    **{f":f{i}": _s(state) for i, state in enumerate(_FINAL)},
                                    **({":gen": item["gen"]} if gated.items else {}),
                                },
                            }
                        },
                        *[self._put(i) for i in extra],
                        *gated.items,
                    ]
                )
            except ClientError as exc:
                if _cancelled_at(exc, 0):
                    continue  # finished meanwhile (then False), or admitted: read it again
                raise
            await self._log([(message_id, key, MessageState.CANCELED)])
            await self._gates.admit(gated.touched, now)
            return True
        return False

    async def find_pending(self, query: PendingQuery) -> list[str]:
        """A Scan of the whole table for unfinished message items, filtered here on their
        records, exact (it decides what is cancelled): no index lists pending messages, and bulk
        cancel by filter, rare, accepts that rather than an index every message write would pay
        for. Every item is read — 0.5 read unit per 4 KB, so 30 days at a million messages a day
        (~30 GB) cost ~$0.47 a call — in parallel segments, one per ``scan_segment_items`` items
        (by DescribeTable's ItemCount), at most :data:`_SCAN_SEGMENTS`: about 1.5 million items
        fit in the API Lambda's 29 s; a larger table's call fails before it cancels anything."""
        items = await self._table_items.get()
        segments = max(1, min(_SCAN_SEGMENTS, -(-items // self.scan_segment_items)))
        parts = await asyncio.gather(
            *(self._pending_in(query, segment, segments) for segment in range(segments))
        )
        return [message_id for part in parts for message_id in part]

    async def _pending_in(self, query: PendingQuery, segment: int, segments: int) -> list[str]:
        """``find_pending`` over one of ``segments`` parts of the table."""
        found: list[str] = []
        async for items in self._pages(
            self._db.scan,
            TableName=self.table,
            FilterExpression=f"sk = :m AND {_NOT_FINAL}",
            ProjectionExpression="pk, rec, st, rt",
            ExpressionAttributeValues={
                ":m": _s("M"),
                **{f":f{i}": _s(state) for i, state in enumerate(_FINAL)},
            },
            **({"Segment": segment, "TotalSegments": segments} if segments > 1 else {}),
        ):
            messages = (_message_from(item, b"") for item in items)
            found += [message.id for message in messages if query.matches(message)]
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
        # A page at a time: a backlog (the ticker was down) is never held at once.
        async for items in self._pages(
            self._db.query,
            TableName=self.table,
            IndexName=TIME_INDEX,
            KeyConditionExpression="gp = :gp AND gs <= :horizon",
            ExpressionAttributeValues={":gp": _s(f"Q#{shard}"), ":horizon": _s(f"{horizon:013d}")},
            Limit=100,
        ):
            due = [
                (item["pk"]["S"][2:], int(item["gen"]["N"]), int(item["gs"]["S"])) for item in items
            ]
            # The copies go first: a crash before the updates leaves the messages waiting, to be
            # promoted again (the extra copy carries the same gen and is handled at lease).
            await self._send([(mid, gen + 1, at) for mid, gen, at in due], now)
            done = await asyncio.gather(*(self._promoted(mid, gen, at) for mid, gen, at in due))
            moved += sum(done)
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
            # COUNT pages through the (small, projected) index entries.
            answers = self._answers(
                self._db.query,
                TableName=self.table,
                IndexName=TIME_INDEX,
                KeyConditionExpression=f"gp = :gp AND {condition}",
                ExpressionAttributeValues={":gp": _s(f"Q#{shard}"), ":now": _s(f"{now:013d}")},
                Select="COUNT",
            )
            counts.append(sum([int(answer.get("Count", 0)) async for answer in answers]))
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
        """A record other than a message's copy (a wake-up: aws_gates, wake_at), due at ``due``."""
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

    # --- the log: events inside message items, listed through the `log` index -------------------

    async def list_events(self, query: EventQuery) -> Page:
        """Newest first. With message ids: their items, read consistently; otherwise through
        the log (see :meth:`_log_newest`). Filters: :func:`_event_matches`."""
        low, high = _bounds(query.from_time, query.to_time, query.cursor)
        states = {str(s) for s in query.states}

        def keep(found: _Found) -> bool:
            return _event_matches(found.event, found.message, query)

        if query.message_ids:
            keys = [(f"M#{mid}", "M") for mid in dict.fromkeys(query.message_ids)]
            found = [
                f
                for item in await self._batch_get(keys, consistent=True)
                for f in _item_events(item)
                if low <= f.key <= high and (not states or f.event.state in states)
                if keep(f)
            ]
            found.sort(key=lambda f: f.key, reverse=True)
            page = found[: query.count]
            cursor = page[-1].key if len(found) > query.count and page else None
            return Page(items=await self._with_bodies(page, consistent=True), cursor=cursor)
        page, cursor = await self._log_newest(low, high, states, keep, query.count)
        return Page(items=await self._with_bodies(page), cursor=cursor)

    @contextlib.asynccontextmanager
    async def log_batch(self) -> AsyncIterator[None]:
        """Collect the log pointers of the settles and cancels inside into shared log pages,
        written on exit (the delivery Lambda wraps each SQS batch in one). A crash before they
        are written loses those lines from the listings, never from the message items."""
        if _LOG_BUFFER.get() is not None:
            yield
            return
        buffer: list[_Pointer] = []
        token = _LOG_BUFFER.set(buffer)
        try:
            yield
        finally:
            _LOG_BUFFER.reset(token)
            if buffer:
                try:
                    await self._put_all(self._log_pages(buffer))
                except Exception:
                    # The outcomes are stored: failing the batch would bring nothing back.
                    log.exception("%d log lines were not written to a log page", len(buffer))

    async def _log(self, pointers: Sequence[_Pointer]) -> None:
        """Make events stored in message items listable: into the open log batch, or a page."""
        buffer = _LOG_BUFFER.get()
        if buffer is not None:
            buffer.extend(pointers)
        elif pointers:
            await self._put_all(self._log_pages(pointers))

    def _log_pages(self, pointers: Sequence[_Pointer]) -> list[Item]:
        """Page items holding ``pointers`` (message id, event key, state), each spanning at
        most _LOG_SPAN ms, listed under its newest key."""
        pages: list[Item] = []
        group: list[_Pointer] = []
        for pointer in sorted(pointers, key=lambda p: p[1]):
            if group and (
                len(group) >= _PAGE_POINTERS
                or _key_time(pointer[1]) - _key_time(group[0][1]) > _LOG_SPAN
            ):
                pages.append(self._log_page(group))
                group = []
            group.append(pointer)
        if group:
            pages.append(self._log_page(group))
        return pages

    def _log_page(self, group: list[_Pointer]) -> Item:
        newest = group[-1][1]
        packed = zlib.compress(orjson.dumps([[mid, key, str(st)] for mid, key, st in group]))
        return {
            "pk": _s(f"L#{newest}"),
            "sk": _s("L"),
            **_listed(newest),
            "lg": {"B": packed},
            TTL_ATTRIBUTE: _n(self._expires(_key_time(newest))),
        }

    def _event_values(
        self, message: Message, keyed: Sequence[tuple[str, Event]]
    ) -> tuple[list[Item], list[Item]]:
        """The message item's ``ev`` elements for ``keyed`` events (what its record cannot
        rebuild, see :func:`_pack_event`), and the items that hold response bodies too large to
        keep in the message item, which every later write of it would pay for again."""
        base = Message.from_record(orjson.loads(_record(message)), b"")  # as decoding sees it
        values: list[Item] = []
        extra: list[Item] = []
        for key, event in keyed:
            body = event.detail.get("responseBody")
            apart = isinstance(body, str) and len(body) > _EVENT_BODY_INLINE
            if apart:
                extra.append(
                    {
                        "pk": _s(f"M#{event.message_id}"),
                        "sk": _s(f"R#{key}"),
                        "b": _s(str(body)),
                        TTL_ATTRIBUTE: _n(self._expires(event.time)),
                    }
                )
            values.append(_s(_json(_pack_event(base, key, event, body_apart=apart))))
        return values, extra

    async def _append_events(self, keyed: Sequence[tuple[str, Event]]) -> None:
        """Events of messages not written with them: appended to their items, if they exist."""
        by_message: dict[str, list[tuple[str, Event]]] = {}
        for key, event in keyed:
            by_message.setdefault(event.message_id, []).append((key, event))
        for message_id, entries in by_message.items():
            item = await self._get(f"M#{message_id}", "M")
            if item is None:
                continue
            values, extra = self._event_values(_message_from(item, b""), entries)
            await self._put_all(extra)
            try:
                await self._call(
                    self._db.update_item,
                    TableName=self.table,
                    Key=_key(f"M#{message_id}", "M"),
                    UpdateExpression="SET ev = list_append(if_not_exists(ev, :none), :ev)",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues={":none": {"L": []}, ":ev": {"L": values}},
                )
            except ClientError as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise
                continue
            await self._log([(message_id, key, e.state) for key, e in entries])

    async def _log_newest(
        self,
        low: str,
        high: str,
        states: set[str],
        keep: Callable[[_Found], bool],
        count: int,
    ) -> tuple[list[_Found], str | None]:
        """The ``count`` newest events between two order keys whose state is in ``states``
        (any if empty) and that ``keep`` accepts (with their message and item), and the cursor
        that continues after them: log pointers, newest first, resolved against their message
        items a few at a time (a message gone with its TTL drops its lines)."""
        found: list[_Found] = []
        batch: list[_Pointer] = []

        async def resolve() -> None:
            keys = [(f"M#{mid}", "M") for mid, _, _ in batch]
            items = {i["pk"]["S"][2:]: i for i in await self._batch_get(keys)}
            decoded: dict[str, dict[str, _Found]] = {}
            for mid, key, _ in batch:
                if (item := items.get(mid)) is None:
                    continue
                if mid not in decoded:
                    decoded[mid] = {f.key: f for f in _item_events(item)}
                hit = decoded[mid].get(key)
                if hit is not None and keep(hit):
                    found.append(hit)
            batch.clear()

        async with contextlib.aclosing(self._log_pointers(low, high, states)) as pointers:
            async for pointer in pointers:
                batch.append(pointer)
                if len(batch) >= min(100, count + 1 - len(found)):
                    await resolve()
                    if len(found) > count:
                        break
            else:
                if batch:
                    await resolve()
        page = found[:count]
        return page, (page[-1].key if len(found) > count and page else None)

    async def _log_pointers(
        self, low: str, high: str, states: set[str]
    ) -> AsyncGenerator[_Pointer, None]:
        """Log pointers with keys between ``low`` and ``high``, newest first, merged over the
        index's shards. An entry's pointers are all at or below its key and at most _LOG_SPAN
        older, so a pointer is yielded once no entry still unread can hold a newer one."""
        top = high
        if high != _HIGH:
            top = f"{min(_key_time(high) + _LOG_SPAN, 10**13 - 1):013d}" + "9" * 23
        shards = [_LogShard(self, shard, low, top) for shard in range(SHARDS)]
        pending: list[tuple[int, str, str, str]] = []  # a heap: (-key, message id, key, state)
        while True:
            await asyncio.gather(*(s.fill() for s in shards if not s.entries and not s.done))
            heads = [s for s in shards if s.entries]
            newest = max(heads, key=lambda s: s.entries[0][0]) if heads else None
            bound = -1 if newest is None else int(newest.entries[0][0])
            while pending and -pending[0][0] > bound:
                _, mid, key, state = heapq.heappop(pending)
                yield mid, key, MessageState(state)
            if newest is None:
                return
            _, entry = newest.entries.pop(0)
            for mid, key, state in entry:
                if low <= key <= high and (not states or state in states):
                    heapq.heappush(pending, (-int(key), mid, key, str(state)))

    async def _with_bodies(
        self, found: Sequence[_Found], *, consistent: bool = False
    ) -> list[Event]:
        """The events, with the response bodies kept beside their message items read back."""
        apart = [(f"M#{f.event.message_id}", f"R#{f.key}") for f in found if f.body_apart]
        if apart:
            bodies = {
                (i["pk"]["S"], i["sk"]["S"]): i["b"]["S"]
                for i in await self._batch_get(apart, consistent=consistent)
            }
            for f in found:
                if f.body_apart:
                    key = (f"M#{f.event.message_id}", f"R#{f.key}")
                    f.event.detail["responseBody"] = bodies.get(key, "")
        return [f.event for f in found]

    # --- DLQ -------------------------------------------------------------------------------------

    async def list_dlq(self, query: DlqQuery) -> Page:
        low, high = _bounds(query.from_time, query.to_time, query.cursor)
        filters, values, matches = _filter(
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
        # Caller IPs and flow-control keys are not in the index: filtered on the full items,
        # fetched a page at a time; so are the columns too large for the filter expression.
        by_record = bool(query.caller_ips or query.flow_control_keys)

        async def keep(page: list[Item]) -> list[Item]:
            if matches is not None:
                page = [i for i in page if matches(i)]
            if not by_record:
                return page
            full = await self._batch_get([(i["pk"]["S"], i["sk"]["S"]) for i in page], order=True)
            return [i for i in full if _dlq_record_matches(i, query)]

        found, cursor = await self._newest(
            [source],
            filters,
            lambda i: i["gs"]["S"],
            query.count,
            keep=keep if by_record or matches is not None else None,
        )
        if not by_record:
            found = await self._batch_get([(i["pk"]["S"], i["sk"]["S"]) for i in found], order=True)
        return Page(items=[await self._dlq_entry(item) for item in found], cursor=cursor)

    async def get_dlq(self, dlq_id: str) -> DlqEntry | None:
        item = await self._get(f"D#{dlq_id}", "D")
        return None if item is None else await self._dlq_entry(item)

    async def delete_dlq(self, dlq_ids: Sequence[str]) -> int:
        async def delete(dlq_id: str) -> bool:
            if not key_can_exist(f"D#{dlq_id}", "D"):
                return False
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
        """Newest first through their CREATED events in the log; the state is the message
        item's, read with it."""
        wanted = {str(s) for s in query.states}
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
        labels = set(query.labels)

        def keep(found: _Found) -> bool:
            return (
                (not wanted or found.message.state in wanted)
                and (not query.url_contains or query.url_contains in found.message.url)
                and (not labels or bool(labels & set(split_labels(found.message.label))))
            )

        low_key, high_key = _bounds(query.from_time, query.to_time, query.cursor)
        page, cursor = await self._log_newest(
            low_key, high_key, {str(MessageState.CREATED)}, keep, query.count
        )
        items = [f.message for f in page]
        return Page(items=items, cursor=cursor)

    async def count_messages(self) -> MessageCounts:
        """Counts kept :data:`_COUNTS_KEPT` s, from a Scan of the whole table while it holds
        under twice ``count_sample`` items (by DescribeTable's ItemCount), else of one of N
        segments (:meth:`_segments`). Segments split the partition keys' hash space, so with
        message keys of random ids one is a fair sample: a bounded read whatever the table."""
        return await self._counts.get()

    async def _count(self) -> MessageCounts:
        segments = self._segments(await self._table_items.get())
        part = {"Segment": 0, "TotalSegments": segments} if segments > 1 else {}
        counts: Counter[MessageState] = Counter()
        async for items in self._pages(
            self._db.scan,
            TableName=self.table,
            FilterExpression="sk = :m",
            ProjectionExpression="st",
            ExpressionAttributeValues={":m": _s("M")},
            **part,
        ):
            counts.update(MessageState(item["st"]["S"]) for item in items)
        by_state = {state: n * segments for state, n in counts.items()}
        return MessageCounts(by_state, segments, _COUNTS_KEPT)

    def _segments(self, table_items: int) -> int:
        """N, the power of two that leaves ``count_sample`` to twice as many items a segment
        (1: the table is small enough to read whole)."""
        ratio = table_items // max(self.count_sample, 1)
        return min(1 << (ratio.bit_length() - 1), _MAX_SEGMENTS) if ratio > 1 else 1

    async def _describe_items(self) -> int:
        answer = await self._call(self._db.describe_table, TableName=self.table)
        return int(answer["Table"].get("ItemCount", 0))

    async def list_outcomes(self, since: int, limit: int) -> list[Outcome]:
        low, high = _bounds(since, None, None)
        found, _ = await self._log_newest(low, high, set(_OUTCOMES), lambda f: True, limit)
        return [(f.event.time, f.event.state, f.event.detail.get("duration")) for f in found]

    # --- workflow runs (aws_runs) ---------------------------------------------------------------

    async def accept_run_messages(
        self,
        messages: Sequence[Message],
        events: Sequence[Event],
        now: int,
        dedup_window: int,
        runs: Sequence[WorkflowRun],
    ) -> list[Accepted]:
        return await self._runs.accept(messages, events, now, dedup_window, runs)

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        return await self._runs.get(run_id)

    async def run_entries(self, run_id: str, upto: int | None = None) -> list[RunEntry]:
        return await self._runs.entries(run_id, upto)

    async def end_run(
        self, run_id: str, state: RunState, now: int, *, response: str | None = None
    ) -> tuple[WorkflowRun, bool] | None:
        return await self._runs.end(run_id, state, now, response=response)

    async def find_runs(self, query: RunQuery) -> list[WorkflowRun]:
        return await self._runs.find(query)

    async def list_runs(self, query: RunLogQuery) -> list[WorkflowRun]:
        return await self._runs.listed(query)

    async def purge(self, before: int, now: int) -> tuple[int, bool]:
        """Finished messages, their response bodies and log pages, DLQ entries and dedup ids
        carry ``expires_at`` (retention_days after they finished) and DynamoDB's TTL deletes
        them; runs carry none (a run may sleep longer than any retention): this deletes the
        ones that ended before ``before``, with their entries, reading ``purge_reads`` entries
        of the runs' ``by-time`` index a call, from the oldest, each call going on from where
        the last one stopped (in this process), until the runs created since ``before``."""
        return await self._runs.purge(before, reads=self.purge_reads)

    async def copy_run(self, source: str, run: WorkflowRun, upto: int | None) -> None:
        await self._runs.copy(source, run, upto)

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
            pages = self._pages(
                self._db.query,
                TableName=self.table,
                ScanIndexForward=False,
                Limit=count + 1,
                **source,
                **filters,
            )
            async with contextlib.aclosing(pages):
                async for items in pages:
                    got += await keep(items) if keep is not None and items else items
                    if len(got) > count:
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
            item["lb"] = {"SS": list(dict.fromkeys(labels))}  # a set: each label once
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
        if not key_can_exist(pk, sk):
            return None
        answer = await self._call(
            self._db.get_item, TableName=self.table, Key=_key(pk, sk), ConsistentRead=True
        )
        return answer.get("Item")

    async def _batch_get(
        self, keys: Sequence[tuple[str, str]], *, consistent: bool = False, order: bool = False
    ) -> list[Item]:
        """Items by key (100 per call, unprocessed keys retried); in ``keys``' order if asked."""
        found: dict[tuple[str, str], Item] = {}
        keys = [key for key in dict.fromkeys(keys) if key_can_exist(*key)]
        for chunk in _chunks(keys, 100):
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

    async def _put_all(self, items: Sequence[Item], before: _BeforeWrite | None = None) -> None:
        """Unconditional puts, 25 per BatchWriteItem, unprocessed items retried; ``before`` is
        awaited with each call's items first (then at most 10 message items a call, one SQS
        batch of copies)."""
        chunks: list[list[Item]] = []
        messages = 0
        for item in items:
            is_message = bool(_message_ids([item]))
            if not chunks or len(chunks[-1]) == 25 or (before and is_message and messages == 10):
                chunks.append([])
                messages = 0
            chunks[-1].append(item)
            messages += is_message
        for chunk in chunks:
            if before is not None:
                await before(chunk)
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

    async def _write_all(
        self, groups: list[list[Item]], before: _BeforeWrite | None = None
    ) -> None:
        """Groups of Put items that must be stored together: groups holding a condition in as
        few transactions as fit, the rest by BatchWriteItem. ``before`` is awaited with the
        items of each write call first. If a write fails, what was written is deleted again
        and the error raised."""
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
            await self._put_all([put["Put"]["Item"] for put in plain], before)
            for chunk in filter(None, chunks):
                if before is not None:
                    await before(chunk)
                await self._transact(chunk)
                written += chunk
        except BaseException:
            await self._roll_back(written)
            raise

    async def _roll_back(self, items: list[Item]) -> None:
        await self._delete_all(
            [
                {"pk": i["Put"]["Item"]["pk"], "sk": i["Put"]["Item"]["sk"]}
                for i in items
                if "Put" in i
            ]
        )

    async def _delete_all(self, keys: Sequence[Item]) -> None:
        """Unconditional deletes, 25 per BatchWriteItem, unprocessed ones retried."""
        for chunk in _chunks(list(keys), 25):
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

    async def _pages(
        self, fn: Callable[..., Any], /, **kwargs: Any
    ) -> AsyncGenerator[list[Item], None]:
        """The items of a Query or Scan, a page at a time, following LastEvaluatedKey."""
        async for answer in self._answers(fn, **kwargs):
            yield answer.get("Items", [])

    async def _answers(
        self, fn: Callable[..., Any], /, **kwargs: Any
    ) -> AsyncGenerator[Item, None]:
        """The answers of a Query or Scan, page after page (with Select=COUNT, the counts)."""
        start: Item | None = None
        while True:
            answer = await self._call(
                fn, **kwargs, **({"ExclusiveStartKey": start} if start else {})
            )
            yield answer
            start = answer.get("LastEvaluatedKey")
            if not start:
                return


# --- helpers ------------------------------------------------------------------------------------

_DIGITS = re.compile(r"\d{36}")


def _record_range(
    kind: str, prefix: str, start: str | None, stop: str | None
) -> dict[str, Any] | None:
    """The Query key condition of ``list_records``: the range ``[low, high)`` of key_range as
    ``>=`` / ``<`` / ``BETWEEN`` (one condition on sk is all a Query takes; BETWEEN's inclusive
    upper bound is dropped by the caller). None: an empty range."""
    values = {":pk": _s(f"R#{kind}")}
    low, high = key_range(prefix, start, stop)
    if high is not None and low >= high:
        return None
    if high is None:
        sk = " AND sk >= :low" if low else ""
    elif low:
        sk = " AND sk BETWEEN :low AND :high"
    else:
        sk = " AND sk < :high"
    if low:
        values[":low"] = _s(low)
    if high is not None:
        values[":high"] = _s(high)
    return {"KeyConditionExpression": f"pk = :pk{sk}", "ExpressionAttributeValues": values}


_Pointer = tuple[str, str, MessageState]  # a log line: message id, event order key, state
_LOG_BUFFER: contextvars.ContextVar[list[_Pointer] | None] = contextvars.ContextVar(
    "relay_aws_log_batch", default=None
)


@dataclass(slots=True)
class _Found:
    """An event read from its message item: its order key, its message (without its body),
    and whether its response body was kept apart (in an R# item)."""

    key: str
    event: Event
    message: Message
    body_apart: bool


class _LogShard:
    """One shard of the ``log`` index, read newest first a page at a time; a log page's
    pointers are read with it (a message item listed itself is one CREATED pointer)."""

    def __init__(self, backend: AwsBackend, shard: int, low: str, high: str) -> None:
        self._b = backend
        self._shard = shard
        self._low = low
        self._high = high
        self._start: Item | None = None
        self.done = False
        self.entries: list[tuple[str, list[_Pointer]]] = []  # (key, pointers), newest first

    async def fill(self) -> None:
        b = self._b
        answer = await b._call(
            b._db.query,
            TableName=b.table,
            IndexName=LOG_INDEX,
            KeyConditionExpression="lp = :lp AND ls BETWEEN :low AND :high",
            ExpressionAttributeValues={
                ":lp": _s(f"L#{self._shard}"),
                ":low": _s(self._low),
                ":high": _s(self._high),
            },
            ScanIndexForward=False,
            Limit=50,
            **({"ExclusiveStartKey": self._start} if self._start else {}),
        )
        self._start = answer.get("LastEvaluatedKey")
        self.done = not self._start
        index = answer.get("Items", [])
        pages = [(i["pk"]["S"], i["sk"]["S"]) for i in index if i["pk"]["S"].startswith("L#")]
        stored = {i["pk"]["S"]: i for i in await b._batch_get(pages)} if pages else {}
        for entry in index:
            pk, key = entry["pk"]["S"], entry["ls"]["S"]
            if pk.startswith("M#"):
                self.entries.append((key, [(pk[2:], key, MessageState.CREATED)]))
            elif (page := stored.get(pk)) is not None:
                lines = orjson.loads(zlib.decompress(bytes(page["lg"]["B"])))
                self.entries.append((key, [(m, k, MessageState(s)) for m, k, s in lines]))


def _listed(key: str) -> Item:
    """The ``log`` index attributes of an item listed under ``key``."""
    return {"lp": _s(f"L#{zlib.crc32(key.encode()) % SHARDS}"), "ls": _s(key)}


def _key_time(key: str) -> int:
    return int(key[:13])


def _base_detail(message: Message, state: MessageState, time_ms: int) -> dict[str, Any]:
    """The detail an event of ``message`` gets from the message alone: what need not be stored."""
    if state == MessageState.CREATED:
        from relay.service import created_event  # the one rule for a CREATED event's detail

        return created_event(message, time_ms).detail
    return Event.of(message, state, time_ms).detail


def _pack_event(message: Message, key: str, event: Event, *, body_apart: bool) -> list[Any]:
    """An event as its message item keeps it: [key, state, detail the message cannot rebuild,
    marks] — marks: "-" keys to drop from the rebuilt detail, "~" responseHeaders is
    responseHeader, "^" the response body is kept apart, "u" a URL other than the message's."""
    base = _base_detail(message, event.state, event.time)
    detail = dict(event.detail)
    marks: dict[str, Any] = {}
    if body_apart:
        detail.pop("responseBody", None)
        marks["^"] = 1
    if "responseHeaders" in detail and detail["responseHeaders"] == detail.get("responseHeader"):
        del detail["responseHeaders"]
        marks["~"] = 1
    diff = {k: v for k, v in detail.items() if k not in base or base[k] != v}
    if removed := [k for k in base if k not in detail and k != "responseHeaders"]:
        marks["-"] = removed
    if event.url != message.url:
        marks["u"] = event.url
    return [key, str(event.state), diff, marks] if marks else [key, str(event.state), diff]


def _item_events(item: Item) -> list[_Found]:
    """The events a message item keeps, oldest first."""
    values = item.get("ev", {}).get("L", [])
    if not values:
        return []
    message = _message_from(item, b"")
    found = []
    for value in values:
        key, state_name, diff, *rest = orjson.loads(value["S"])
        marks: dict[str, Any] = rest[0] if rest else {}
        state = MessageState(state_name)
        time_ms = _key_time(key)
        detail = _base_detail(message, state, time_ms)
        for name in marks.get("-", []):
            detail.pop(name, None)
        detail.update(diff)
        if marks.get("~"):
            detail["responseHeaders"] = detail.get("responseHeader")
        event = Event(
            time=time_ms,
            message_id=message.id,
            state=state,
            url=marks.get("u", message.url),
            detail=detail,
            seq=int(key),
        )
        found.append(_Found(key, event, message, body_apart=bool(marks.get("^"))))
    return found


def _event_matches(event: Event, message: Message, query: EventQuery) -> bool:
    """Whether ``event`` of ``message`` passes the logs API's filters: EventQuery.matches, the
    one rule of both backends. (The log's pointers carry the state, so a state filter also
    skips reading messages; the time range and cursor bound the keys read.)"""
    return query.matches(event)


_BeforeWrite = Callable[[Sequence[Item]], Awaitable[None]]


def _message_ids(items: Sequence[Item]) -> list[str]:
    """The ids of the message items among write items (plain or transact Puts)."""
    ids = []
    for entry in items:
        item = entry["Put"]["Item"] if "Put" in entry else entry
        pk = item.get("pk", {}).get("S", "")
        if pk.startswith("M#") and item.get("sk", {}).get("S") == "M":
            ids.append(pk[2:])
    return ids


async def _dropped() -> _Refused:
    return _Refused()


def _wake_up(timer: str, due: int, now: int) -> _Timer | _Refused:
    """A wake-up record: due, or (this host's clock is behind the sender's) hidden until then."""
    if due > now:
        return _Refused(hide_seconds=max(1, -(-(due - now) // 1000)))
    return _Timer(timer, due)


def _gated(message: Message) -> bool:
    """Whether a message's lease must be written: its queue or key accounts for its slot."""
    return message.queue_name is not None or message.flow_control_key is not None


def _leasable(item: Item, gen: int, now: int) -> bool:
    """Whether the copy of generation ``gen`` may lease the message item as read."""
    state = item["st"]["S"]
    return (
        int(item["gen"]["N"]) == gen
        and "gp" not in item
        and "wl" not in item
        and (
            state in (MessageState.CREATED, MessageState.RETRY)
            or (state == MessageState.ACTIVE and int(item.get("lu", {"N": "0"})["N"]) <= now)
        )
    )


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


def key_can_exist(pk: str, sk: str) -> bool:
    """Whether an item can have this key: a user-given id too long for a DynamoDB key names
    nothing (asking for it would be a ValidationException)."""
    return len(pk.encode()) <= _KEY_BYTES[0] and len(sk.encode()) <= _KEY_BYTES[1]


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
        # A gated message leased by another copy (a duplicate): look again when that ends.
        left = int(old["lu"]["N"]) - now
        return _Refused(hide_seconds=_visibility_seconds(left) + 1)
    return _Refused()  # stale copy, finished or cancelled message


def _message_from(item: Item, body: bytes) -> Message:
    message = Message.from_record(orjson.loads(item["rec"]["S"]), body)
    message.state = MessageState(item["st"]["S"])
    message.retried = int(item["rt"]["N"])
    return message


def _bounds(from_time: int | None, to_time: int | None, cursor: str | None) -> tuple[str, str]:
    """The order-key range of a listing: the time range, continued below ``cursor``."""
    low = _LOW if from_time is None else f"{max(0, from_time):013d}" + "0" * 23
    high = _HIGH if to_time is None else f"{max(0, to_time):013d}" + "9" * 23
    if cursor:
        if not _DIGITS.fullmatch(cursor):
            raise BadRequest(f"invalid cursor {cursor!r}")
        high = min(high, f"{int(cursor) - 1:036d}")
    return low, high


Columns = list[tuple[str, Sequence[str | int]]]

# DynamoDB's limits on a filter: at most 100 operands in an IN, 4 KB of expression, 300
# operators, 2 MB of expression values. A column over its share is filtered here instead.
_IN_OPERANDS = 100
_FILTER_BYTES = 4096
_FILTER_VALUE_BYTES = 1_000_000  # of the 2 MB, leaving room for the key condition's


def _filter(columns: Columns) -> tuple[Item, Item, Callable[[Item], bool] | None]:
    """Query arguments filtering on each column's values (OR-ed), the columns AND-ed; the
    expression values they use (to merge with the key condition's); and the filter of the
    columns too large for a DynamoDB filter expression, to apply to the items read (None: all
    are in the expression). Reads are the same either way: DynamoDB reads the items a filter
    drops. ``lb`` holds a set of labels: it matches when it contains any of the values."""
    clauses: list[str] = []
    names: dict[str, str] = {}
    values: Item = {}
    apart: Columns = []
    for attr, wanted in columns:
        distinct: list[str | int] = list(dict.fromkeys(wanted))
        if not distinct:
            continue
        clause, more = _clause(attr, distinct)
        within = (
            len(distinct) <= _IN_OPERANDS
            and len(" AND ".join([*clauses, clause]).encode()) <= _FILTER_BYTES
            and _values_bytes({**values, **more}) <= _FILTER_VALUE_BYTES
        )
        if not within:
            apart.append((attr, distinct))
            continue
        clauses.append(clause)
        values.update(more)
        names[f"#{attr}"] = attr  # `url` is a reserved word
    keep = functools.partial(_matches, apart) if apart else None
    if not clauses:
        return {}, values, keep
    filters = {"FilterExpression": " AND ".join(clauses), "ExpressionAttributeNames": names}
    return filters, values, keep


def _clause(attr: str, distinct: Sequence[str | int]) -> tuple[str, Item]:
    """One column's filter clause and its expression values."""
    values: Item = {
        f":{attr}{i}": _n(value) if isinstance(value, int) else _s(str(value))
        for i, value in enumerate(distinct)
    }
    if attr == "lb":
        return "(" + " OR ".join(f"contains(#lb, {p})" for p in values) + ")", values
    return f"#{attr} IN ({', '.join(values)})", values


def _values_bytes(values: Item) -> int:
    return sum(len(k) + len(next(iter(v.values())).encode()) for k, v in values.items())


def _matches(columns: Columns, item: Item) -> bool:
    """Whether an item (as the time index projects it) passes the filter of ``columns``."""
    for attr, wanted in columns:
        texts = {str(value) for value in wanted}
        value = item.get(attr, {})
        held = set(value.get("SS", [])) if attr == "lb" else {value.get("S", value.get("N"))}
        if not texts & held:
            return False
    return True


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
