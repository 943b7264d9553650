"""The use cases of the publish API, free of HTTP and of storage: publish, batch, messages, logs,
DLQ and keys. Both transports call these; both backends serve them."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from relay import flow_control, queues, webhooks
from relay import protocol as p
from relay.backends.base import Backend
from relay.clock import Clock, Ids, SystemClock
from relay.config import Settings
from relay.destinations import is_url, validate_url
from relay.metrics import Metrics
from relay.models import (
    Accepted,
    DlqQuery,
    Event,
    EventQuery,
    Message,
    MessageCounts,
    MessageQuery,
    MessageState,
    Page,
    PendingQuery,
    split_labels,
)
from relay.protocol import ApiError, BadRequest, NotFound
from relay.retry import RetryDelay
from relay.signing import (
    SigningKeys,
    apply_rotation,
    generate_key,
    generate_keys,
    rotation_record,
)
from relay.stats import DeliveryStats, summarize
from relay.workflows import protocol as wp
from relay.workflows.model import WorkflowRun

Headers = Sequence[tuple[str, str]]
URL_GROUP = "url_group"
OUTCOME_LIMIT = 50_000  # outcomes read for the console's figures
_GROUP_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
# A URL group is one record (one DynamoDB item of at most 400 KB on AWS).
MAX_GROUP_BYTES = 256 * 1024
_CANCEL_CHUNK = 500  # message ids per backend call (SQLite binds one variable per id)
ROTATION_SETTING = "signing_key_rotation"  # the pair POST /v2/keys/rotate put in force

# Headers never delivered, even when named by `Upstash-Forward-*` (the Python workflow SDK
# forwards every header of the delivery it got): hop-by-hop framing, and what relay sets itself.
_NEVER_FORWARDED = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "accept-encoding",
        p.D_SIGNATURE.lower(),
        p.D_MESSAGE_ID.lower(),
        p.D_RETRIED.lower(),
    }
)
# Nor by `Upstash-Header-Forward: true`: the caller's credentials and proxy headers either.
_NOT_FORWARDED = _NEVER_FORWARDED | {
    "authorization",
    "proxy-authorization",
    "proxy-connection",
    "expect",
    "user-agent",
}


@dataclass(slots=True)
class PublishRequest:
    """One message to publish, as a transport received it (headers with their original case)."""

    destination: str
    headers: Headers
    body: bytes
    caller_ip: str | None = None
    query_headers: Headers = field(default_factory=list)  # `upstash-*` query parameters
    queue: str | None = None  # enqueue: the queue's name (relay.queues)


@dataclass(slots=True)
class _Options:
    """Publish headers, parsed and validated."""

    method: str
    delay_ms: int | None
    not_before_ms: int | None
    retries: int
    retry_delay: str | None
    timeout: int
    callback: str | None
    failure_callback: str | None
    callback_headers: dict[str, str]
    failure_callback_headers: dict[str, str]
    forwarded: list[tuple[str, str]]
    dedup_id: str | None
    content_dedup: bool
    label: str | None
    redact: str | None
    flow_control: flow_control.FlowControl | None = None
    workflow: wp.RunHeaders | None = None


class RelayService:
    """Publish, inspect and steer messages; the one place where the API's rules live."""

    def __init__(
        self,
        backend: Backend,
        settings: Settings,
        *,
        keys: SigningKeys,
        token: str,
        clock: Clock | None = None,
        ids: Ids | None = None,
        allow_private: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.initial_keys = keys  # configured (or the AWS stack's secret); rotations apply to them
        self.keys = keys  # in force: refreshed by load_keys
        self.token = token
        self.clock = clock or SystemClock()
        self.ids = ids or Ids()
        self.allow_private = allow_private
        self.metrics = metrics or Metrics()
        # ms: when each periodic pass of this process (relay.retention's purge, the recovery
        # pass's look for unreported invoked runs, the waiters' index sweep) is next due;
        # absent: at once.
        self.passes_due: dict[str, int] = {}
        # What this process last stored as the claim of a pass held across processes (the
        # waiters' index sweep: relay.workflows.waiter_index); absent: it holds none.
        self.pass_marks: dict[str, str] = {}
        self._listeners: list[Callable[[], None]] = []

    def notify_listeners(self) -> None:
        """Tell the listeners that messages may be due now (a queue or key let more through)."""
        for listener in self._listeners:
            listener()

    def on_accepted(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after messages are stored (the embedded worker wakes up on it)."""
        self._listeners.append(listener)

    # --- publishing -------------------------------------------------------------------------

    async def publish(self, request: PublishRequest) -> tuple[int, Any]:
        """Publish one message (one per endpoint for a URL group); returns the status and the
        JSON answer QStash gives: an object, or for a URL group a list."""
        now = self.clock.now_ms()
        messages, runs = await self._expand(request, now)
        accepted = await self._accept(messages, now, runs=runs)
        if not is_url(request.destination):
            return 201, [_accepted_json(a, with_url=True) for a in accepted]
        only = accepted[0]
        return (202 if only.deduplicated else 201), _accepted_json(only)

    async def batch(self, requests: Sequence[PublishRequest]) -> tuple[int, Any]:
        """Publish many messages in one all-or-nothing step; one answer per item, in order."""
        if not requests:
            raise BadRequest("batch is empty")
        if len(requests) > self.settings.max_batch_messages:
            raise BadRequest(f"batch has more than {self.settings.max_batch_messages} messages")
        now = self.clock.now_ms()
        messages: list[Message] = []
        runs: list[WorkflowRun] = []
        sizes: list[int | None] = []  # None: a URL item; n: a URL group of n endpoints
        for index, request in enumerate(requests):
            try:
                expanded, started = await self._expand(request, now)
            except ApiError as exc:
                raise type(exc)(f"batch item {index}: {exc.message}", exc.status) from None
            messages.extend(expanded)
            runs.extend(started)
            sizes.append(None if is_url(request.destination) else len(expanded))
        accepted = iter(await self._accept(messages, now, runs=runs))
        answer: list[Any] = []
        for size in sizes:
            if size is None:
                answer.append(_accepted_json(next(accepted)))
            else:
                answer.append([_accepted_json(next(accepted), with_url=True) for _ in range(size)])
        return 201, answer

    async def accept_messages(
        self, messages: Sequence[Message], *, dedup_window_ms: int | None = None
    ) -> list[Accepted]:
        """Store already built messages (callbacks, re-published DLQ entries, schedule fires);
        ``dedup_window_ms`` replaces the configured deduplication window."""
        return await self._accept(messages, self.clock.now_ms(), dedup_window_ms)

    async def _accept(
        self,
        messages: Sequence[Message],
        now: int,
        dedup_window_ms: int | None = None,
        *,
        runs: Sequence[WorkflowRun] = (),
    ) -> list[Accepted]:
        events = [created_event(m, now) for m in messages]
        if dedup_window_ms is None:
            dedup_window_ms = self.settings.dedup_window_seconds * 1000
        if any(m.run_id is not None for m in messages):
            accepted = await self.backend.accept_run_messages(
                messages, events, now, dedup_window_ms, runs
            )
        else:
            accepted = await self.backend.accept(messages, events, now, dedup_window_ms)
        self.metrics.accepted(messages, accepted)
        for listener in self._listeners:
            listener()
        return accepted

    async def _messages_for(self, request: PublishRequest, now: int) -> list[Message]:
        return (await self._expand(request, now))[0]

    async def _expand(
        self, request: PublishRequest, now: int
    ) -> tuple[list[Message], list[WorkflowRun]]:
        """The messages of one publish, and the workflow run its Init message starts."""
        destination = request.destination
        if not destination:
            raise BadRequest("destination is missing: publish to /v2/publish/<url>")
        if is_url(destination):
            validate_url(destination, allow_private=self.allow_private)
            targets: list[tuple[str, str | None]] = [(destination, None)]
            topic = None
        else:
            group = await self.get_url_group(destination)
            targets = [(e["url"], e.get("name")) for e in group["endpoints"]]
            topic = destination
        if len(request.body) > self.settings.max_body_bytes:
            raise p.PayloadTooLarge(
                f"body of {len(request.body)} bytes is over the limit of "
                f"{self.settings.max_body_bytes} bytes"
            )
        original = request.headers
        run_headers = wp.classify(p.lower_headers(original))
        if run_headers is not None and not run_headers.init:
            run = await self.backend.get_run(run_headers.run_id)
            if run is not None:  # unknown or ended: the backend refuses the message
                original = wp.with_run_settings(original, run_headers, run.settings)
        headers = {**p.lower_headers(request.query_headers), **p.lower_headers(original)}
        options = self._options(headers, original)
        if request.queue is not None:
            await queues.ensure(self, request.queue)
        messages = []
        for url, endpoint in targets:
            message = self.build_message(
                url, options, request.body, now=now, caller_ip=request.caller_ip
            )
            message.topic_name, message.endpoint_name = topic, endpoint
            message.queue_name = request.queue
            messages.append(message)
        runs = []
        if run_headers is not None and run_headers.init:
            if len(messages) != 1:
                raise BadRequest("a workflow run starts with a publish to one URL")
            runs.append(
                WorkflowRun(
                    run_id=run_headers.run_id,
                    url=messages[0].url,
                    created_at=now,
                    message_id=messages[0].id,
                    payload=request.body,
                    settings=wp.run_level(original),
                    label=options.label,
                    caller_ip=request.caller_ip,
                )
            )
        return messages, runs

    def build_message(
        self,
        url: str,
        options: _Options,
        body: bytes,
        *,
        now: int,
        caller_ip: str | None = None,
    ) -> Message:
        """A message to ``url`` from parsed publish options."""
        if options.not_before_ms is not None:
            not_before = options.not_before_ms
        else:
            not_before = now + (options.delay_ms or 0)
        dedup_key = None
        if options.dedup_id is not None:
            dedup_key = _digest("id", url, options.dedup_id)
        elif options.content_dedup:
            dedup_key = _digest("content", url, options.method, json.dumps(options.forwarded), body)
        return Message(
            id=self.ids.message_id(),
            url=url,
            method=options.method,
            body=body,
            headers=options.forwarded,
            max_retries=options.retries,
            timeout=options.timeout,
            not_before=not_before,
            created_at=now,
            retry_delay=options.retry_delay,
            callback=options.callback,
            failure_callback=options.failure_callback,
            callback_headers=options.callback_headers,
            failure_callback_headers=options.failure_callback_headers,
            caller_ip=caller_ip,
            label=options.label,
            redact=options.redact,
            **_flow_fields(options.flow_control),
            dedup_key=dedup_key,
            run_id=options.workflow.run_id if options.workflow else None,
            call_type=str(options.workflow.call_type) if options.workflow else None,
        )

    def build_follow_up(
        self, url: str, headers: Mapping[str, str], body: bytes, *, now: int
    ) -> Message:
        """A callback or failure-callback message: published through the same rules."""
        options = self._options(p.lower_headers(headers), list(headers.items()))
        return self.build_message(url, options, body, now=now)

    def _options(self, headers: dict[str, str], original: Headers) -> _Options:
        """Parse and validate publish headers (``headers`` lower-cased, ``original`` as sent)."""
        s = self.settings
        workflow = wp.classify(headers)
        method = headers.get(p.H_METHOD, "POST").strip().upper()
        if method not in p.METHODS:
            raise BadRequest(
                f"invalid method {method!r}: use one of {', '.join(sorted(p.METHODS))}"
            )
        not_before_ms = delay_ms = None
        if (raw := headers.get(p.H_NOT_BEFORE)) is not None:
            not_before_ms = p.parse_int(raw, what="Upstash-Not-Before") * 1000
        elif (raw := headers.get(p.H_DELAY)) is not None:
            delay = p.parse_duration(raw, what="Upstash-Delay")
            if delay > s.max_delay_seconds:
                raise BadRequest(
                    f"invalid Upstash-Delay {raw!r}: more than {s.max_delay_seconds} seconds"
                )
            delay_ms = int(delay * 1000)
        # The workflow SDKs leave the header out when the user chose 3, whatever relay's default
        retries = wp.DEFAULT_RETRIES if workflow else s.default_retries
        if (raw := headers.get(p.H_RETRIES)) is not None:
            retries = p.parse_int(raw, what="Upstash-Retries", maximum=s.max_retries)
        retry_delay = headers.get(p.H_RETRY_DELAY)
        if retry_delay is not None:
            RetryDelay.parse(retry_delay)
        timeout = s.default_timeout_seconds
        if (raw := headers.get(p.H_TIMEOUT)) is not None:
            timeout = int(p.parse_duration(raw, what="Upstash-Timeout"))
            if not 1 <= timeout <= s.max_timeout_seconds:
                raise BadRequest(
                    f"invalid Upstash-Timeout {raw!r}: must be 1s to {s.max_timeout_seconds}s"
                )
        callback = headers.get(p.H_CALLBACK)
        failure_callback = headers.get(p.H_FAILURE_CALLBACK)
        for url, what in ((callback, "callback"), (failure_callback, "failure callback")):
            if url is not None:
                validate_url(url, allow_private=self.allow_private, what=what)
        inherited = {p.H_RETRIES: str(retries)}
        if retry_delay is not None:
            inherited[p.H_RETRY_DELAY] = retry_delay
        redact = p.parse_redact_fields(headers.get(p.H_REDACT, ""))
        if redact is not None:  # a callback's body holds the source body and headers
            inherited[p.H_REDACT] = redact
        callback_headers = (
            self._family(original, p.CALLBACK_PREFIX, inherited, "callback") if callback else {}
        )
        failure_headers = (
            self._family(original, p.FAILURE_CALLBACK_PREFIX, inherited, "failure callback")
            if failure_callback
            else {}
        )
        return _Options(
            method=method,
            delay_ms=delay_ms,
            not_before_ms=not_before_ms,
            retries=retries,
            retry_delay=retry_delay,
            timeout=timeout,
            callback=callback,
            failure_callback=failure_callback,
            callback_headers=callback_headers,
            failure_callback_headers=failure_headers,
            forwarded=_forwarded(headers, original),
            dedup_id=headers.get(p.H_DEDUP_ID),
            content_dedup=p.parse_bool(headers.get(p.H_CONTENT_DEDUP, "false")),
            label=",".join(split_labels(headers.get(p.H_LABEL))) or None,
            redact=redact,
            flow_control=flow_control.parse(
                headers.get(flow_control.H_KEY), headers.get(flow_control.H_VALUE)
            ),
            workflow=workflow,
        )

    def _family(
        self, original: Headers, prefix: str, inherited: dict[str, str], what: str
    ) -> dict[str, str]:
        """`Upstash-Callback-<rest>` → the callback message's own `Upstash-<rest>` headers.

        The callback inherits the message's retry settings unless its family overrides them;
        the family is validated now so that a bad option fails the publish, not the callback.
        """
        family = dict(inherited)
        for name, value in original:
            if name.lower().startswith(prefix):
                family["Upstash-" + name[len(prefix) :]] = value
        try:
            self._options(p.lower_headers(family), list(family.items()))
        except BadRequest as exc:
            raise BadRequest(f"{what}: {exc.message}") from None
        return family

    # --- URL groups ---------------------------------------------------------------------------

    async def get_url_group(self, name: str) -> dict[str, Any]:
        _check_group_name(name)
        group = await self.backend.get_record(URL_GROUP, name)
        if group is None:
            raise NotFound(f"url group {name!r} not found")
        return group

    async def list_url_groups(self) -> list[dict[str, Any]]:
        return await self.backend.list_records(URL_GROUP)

    async def upsert_endpoints(self, name: str, endpoints: Sequence[Mapping[str, Any]]) -> None:
        """Add endpoints to a URL group (created if missing); a known URL gets the new name."""
        _check_group_name(name)
        if not endpoints:
            raise BadRequest('give at least one endpoint: {"endpoints": [{"url": ...}]}')
        now = self.clock.now_ms()
        group = await self.backend.get_record(URL_GROUP, name) or {
            "name": name,
            "createdAt": now,
            "endpoints": [],
        }
        by_url = {e["url"]: e for e in group["endpoints"]}
        for endpoint in endpoints:
            url = endpoint.get("url")
            if not isinstance(url, str):
                raise BadRequest("every endpoint needs a 'url' string")
            validate_url(url, allow_private=self.allow_private, what="endpoint")
            entry = {"url": url}
            if isinstance(endpoint.get("name"), str) and endpoint["name"]:
                entry["name"] = endpoint["name"]
            by_url[url] = entry
        group["endpoints"] = list(by_url.values())
        group["updatedAt"] = now
        if (size := len(json.dumps(group).encode())) > MAX_GROUP_BYTES:
            raise BadRequest(
                f"url group {name!r} would take {size} bytes, over the limit of "
                f"{MAX_GROUP_BYTES}: use fewer endpoints or shorter URLs"
            )
        await self.backend.put_record(URL_GROUP, name, group)

    async def remove_endpoints(self, name: str, endpoints: Sequence[Mapping[str, Any]]) -> None:
        """Remove endpoints by URL or by name; the group goes when its last endpoint goes."""
        group = await self.get_url_group(name)
        urls = {e.get("url") for e in endpoints} - {None}
        names = {e.get("name") for e in endpoints} - {None}
        if not urls and not names:
            raise BadRequest("give the endpoints to remove by 'url' or 'name'")
        kept = [
            e for e in group["endpoints"] if e["url"] not in urls and e.get("name") not in names
        ]
        if not kept:
            await self.backend.delete_record(URL_GROUP, name)
            return
        group["endpoints"], group["updatedAt"] = kept, self.clock.now_ms()
        await self.backend.put_record(URL_GROUP, name, group)

    async def delete_url_group(self, name: str) -> None:
        _check_group_name(name)
        if not await self.backend.delete_record(URL_GROUP, name):
            raise NotFound(f"url group {name!r} not found")

    # --- signing keys ---------------------------------------------------------------------

    async def load_keys(self) -> SigningKeys:
        """Read the signing keys in force from the backend (see :func:`keys_in_force`).

        The stored rotation is the one source of truth: every process reads it where it signs
        or shows keys — the delivery Lambda once per SQS batch, the API on `/v2/keys` — so a
        rotation made by one process is in force in all of them at once, with no cache to
        expire. On AWS that read is one consistent GetItem (1 read unit) per batch.
        """
        self.keys = await keys_in_force(self.backend, self.initial_keys)
        return self.keys

    async def rotate_keys(self) -> SigningKeys:
        """current ← next, a fresh next; deliveries are signed with the new current at once.
        A compare-and-set on the stored rotation: of two rotations at once, the second applies
        to the first's result (so each caller is shown the pair it put in force)."""
        while True:
            stored = await self.backend.get_setting(ROTATION_SETTING)
            rotated = apply_rotation(self.initial_keys, stored).rotated()
            record = rotation_record(self.initial_keys, rotated)
            kept = await self.backend.put_setting(
                ROTATION_SETTING, record, if_absent=stored is None, replacing=stored
            )
            if kept == record:
                self.keys = rotated
                return rotated

    # --- messages, logs, DLQ ----------------------------------------------------------------

    async def get_message(self, message_id: str) -> Message:
        message = await self.backend.get_message(message_id)
        if message is None:
            raise NotFound(f"message {message_id} not found")
        return message

    async def cancel(self, message_id: str) -> int:
        """Cancel one message that has not finished; 404 if unknown, 400 if already finished."""
        message = await self.get_message(message_id)
        if message.state.final:
            raise BadRequest(
                f"message {message_id} is already {message.state} and cannot be cancelled"
            )
        return len(await self.backend.cancel([message_id], self.clock.now_ms()))

    async def list_events(self, query: EventQuery) -> Page:
        return await self.backend.list_events(query)

    async def list_dlq(self, query: DlqQuery) -> Page:
        return await self.backend.list_dlq(query)

    async def get_dlq(self, dlq_id: str) -> Any:
        entry = await self.backend.get_dlq(dlq_id)
        if entry is None:
            raise NotFound(f"dlq message {dlq_id} not found")
        return entry

    async def delete_dlq(self, dlq_ids: Sequence[str]) -> int:
        return await self.backend.delete_dlq(dlq_ids)

    async def retry_dlq(self, dlq_ids: Sequence[str]) -> list[str]:
        """Publish each DLQ entry's message again, with a new id whose CREATED event names the
        old message and DLQ id, and remove the entries; returns the new message ids."""
        now = self.clock.now_ms()
        fresh: list[Message] = []
        links: dict[str, tuple[str, str]] = {}
        dlq_ids = list(dict.fromkeys(dlq_ids))
        for dlq_id in dlq_ids:
            entry = await self.get_dlq(dlq_id)
            message = replace(
                entry.message,
                id=self.ids.message_id(),
                state=MessageState.CREATED,
                retried=0,
                not_before=now,
                created_at=now,
                dedup_key=None,
                slot_queue=None,  # a callback's queue slot was its source's, long released
                slot=None,
            )
            links[message.id] = (entry.message.id, dlq_id)
            fresh.append(message)
        events = []
        for message in fresh:
            source, dlq_id = links[message.id]
            event = created_event(message, now)
            event.detail.update(sourceMessageId=source, dlqId=dlq_id)
            events.append(event)
        self.metrics.accepted(
            fresh, await self.backend.accept(fresh, events, now, 0), source="dlq_retry"
        )
        for listener in self._listeners:
            listener()
        await self.backend.delete_dlq(list(dlq_ids))
        return [m.id for m in fresh]

    async def cancel_many(self, message_ids: Sequence[str]) -> int:
        """Cancel the given messages that have not finished; unknown or finished ones are
        skipped."""
        ids = list(dict.fromkeys(message_ids))
        cancelled = 0
        for start in range(0, len(ids), _CANCEL_CHUNK):
            chunk = ids[start : start + _CANCEL_CHUNK]
            cancelled += len(await self.backend.cancel(chunk, self.clock.now_ms()))
        return cancelled

    async def cancel_matching(self, query: PendingQuery) -> int:
        """Cancel every message not yet finished that ``query`` matches (all of them for an
        empty query); returns how many were cancelled."""
        return await self.cancel_many(await self.backend.find_pending(query))

    async def delete_dlq_matching(self, query: DlqQuery) -> tuple[int, str | None]:
        """Delete one page of the DLQ entries ``query`` matches; the cursor continues."""
        page = await self.backend.list_dlq(query)
        deleted = await self.backend.delete_dlq([e.dlq_id for e in page.items])
        return deleted, page.cursor

    async def retry_dlq_matching(self, query: DlqQuery) -> tuple[list[str], str | None]:
        """Retry one page of the DLQ entries ``query`` matches; the cursor continues."""
        page = await self.backend.list_dlq(query)
        ids = [e.dlq_id for e in page.items]
        return (await self.retry_dlq(ids) if ids else []), page.cursor

    # --- what the console shows -------------------------------------------------------------

    async def list_messages(self, query: MessageQuery) -> Page:
        """Messages newest first, filtered, without their bodies."""
        return await self.backend.list_messages(query)

    async def count_messages(self) -> MessageCounts:
        return await self.backend.count_messages()

    async def delivery_stats(self, *, buckets: int = 60, bucket_ms: int = 60_000) -> DeliveryStats:
        """Delivered, retried and failed attempts and delivered-attempt latency per bucket, over
        the ``buckets`` periods up to now (by default each minute of the last hour)."""
        now = self.clock.now_ms()
        since = (now // bucket_ms - buckets + 1) * bucket_ms
        outcomes = await self.backend.list_outcomes(since, OUTCOME_LIMIT)
        return summarize(
            outcomes,
            now=now,
            buckets=buckets,
            bucket_ms=bucket_ms,
            partial=len(outcomes) >= OUTCOME_LIMIT,
        )


async def work_for(seconds: float, step: Callable[[], Awaitable[bool]]) -> bool:
    """Run ``step`` (it answers whether work is left) until it is done or ``seconds`` have
    passed, at least once: a periodic pass's bounded share of a tick (``passes_due`` then says
    when it goes on). Whether work is left."""
    deadline = time.monotonic() + seconds
    while more := await step():
        if time.monotonic() >= deadline:
            break
    return more


def created_event(message: Message, now: int) -> Event:
    """The CREATED event, with what the logs show of a new message."""
    detail: dict[str, Any] = {
        "method": message.method,
        "maxRetries": message.max_retries,
        "header": p.header_map(message.headers),
    }
    if message.not_before > now:
        detail["nextDeliveryTime"] = message.not_before
    for key, value in (
        ("callback", message.callback),
        ("failureCallback", message.failure_callback),
        ("retryDelayExpression", message.retry_delay),
        ("retryDelayExpr", message.retry_delay),
    ):
        if value is not None:
            detail[key] = value
    return Event.of(message, MessageState.CREATED, now, **detail)


def _flow_fields(given: flow_control.FlowControl | None) -> dict[str, Any]:
    """A message's flow-control fields from its parsed headers."""
    if given is None:
        return {}
    return {
        "flow_control_key": given.key,
        "flow_parallelism": given.parallelism,
        "flow_rate": given.rate,
        "flow_period": given.period,
    }


def _forwarded(headers: dict[str, str], original: Headers) -> list[tuple[str, str]]:
    """The headers delivered to the destination: `Upstash-Forward-*` (prefix stripped),
    Content-Type, and with `Upstash-Header-Forward: true` every other non-relay header."""
    forward_all = p.parse_bool(headers.get(p.H_HEADER_FORWARD, "false"))
    result: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in original:
        lower = name.lower()
        if lower.startswith(p.FORWARD_PREFIX):
            target = name[len(p.FORWARD_PREFIX) :]
        elif lower == p.H_CONTENT_TYPE or (
            forward_all and not lower.startswith(p.PREFIX) and lower not in _NOT_FORWARDED
        ):
            target = name
        else:
            continue
        if target.lower() in seen or target.lower() in _NEVER_FORWARDED:
            continue
        seen.add(target.lower())
        result.append((target, headers.get(lower, value) if lower == p.H_CONTENT_TYPE else value))
    return result


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _check_group_name(name: str) -> None:
    if not _GROUP_NAME.fullmatch(name):
        raise BadRequest(
            f"invalid url group name {name!r}: use up to 128 letters, digits, '-', '_' and '.'"
        )


def _accepted_json(accepted: Accepted, *, with_url: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {"messageId": accepted.message_id}
    if with_url:
        answer["url"] = accepted.url
    if accepted.deduplicated:
        answer["deduplicated"] = True
    return answer


# --- credentials -------------------------------------------------------------------------------


async def resolve_credentials(
    settings: Settings, backend: Backend, *, dev: bool
) -> tuple[str, SigningKeys]:
    """The API token and the initial signing keys (with the Standard Webhooks secret and
    ed25519 keys); :func:`keys_in_force` applies a rotation stored since.

    Explicit settings win. Otherwise `relay dev` uses the QStash dev server's documented
    credentials (and relay's fixed dev webhook secret), and `relay serve` generates its own once
    per database and keeps them.
    """
    webhook_keys = await _webhook_keys(settings, backend)
    if dev:
        token = settings.token or p.DEV_TOKEN
        keys = SigningKeys(
            settings.current_signing_key or p.DEV_CURRENT_SIGNING_KEY,
            settings.next_signing_key or p.DEV_NEXT_SIGNING_KEY,
            webhooks.check_secret(settings.webhook_secret or p.DEV_WEBHOOK_SECRET),
            webhook_keys,
        )
        return token, keys
    token = settings.token or await backend.put_setting(
        "token", generate_key("rly_", 40), if_absent=True
    )
    fresh = generate_keys()
    stored = json.loads(
        await backend.put_setting(
            "signing_keys", json.dumps([fresh.current, fresh.next]), if_absent=True
        )
    )
    webhook_secret = settings.webhook_secret or await backend.put_setting(
        "webhook_secret", webhooks.generate_secret(), if_absent=True
    )
    keys = SigningKeys(
        settings.current_signing_key or stored[0],
        settings.next_signing_key or stored[1],
        webhooks.check_secret(webhook_secret),
        webhook_keys,
    )
    return token, keys


async def keys_in_force(backend: Backend, initial: SigningKeys) -> SigningKeys:
    """The signing keys to sign with and to show: ``initial`` with the rotation stored in the
    backend applied. One rule for every backend and process: `relay dev` and `relay serve`
    (initial keys from the settings or generated), and each Lambda container (initial keys from
    the stack's secret). A rotation survives restarts and cold starts; replacing the initial
    keys (settings, secret) supersedes it."""
    return apply_rotation(initial, await backend.get_setting(ROTATION_SETTING))


WEBHOOK_KEYS_SETTING = "webhook_ed25519_keys"


async def _webhook_keys(settings: Settings, backend: Backend) -> tuple[str, ...]:
    """The ed25519 keys that sign deliveries: from the settings, else those stored by `relay
    keys`; each checked now, so that a bad one stops the start rather than every delivery."""
    if settings.webhook_ed25519_keys is not None:
        keys = settings.webhook_ed25519_keys.replace(",", " ").split()
    else:
        keys = json.loads(await backend.get_setting(WEBHOOK_KEYS_SETTING) or "[]")
    for key in keys:
        webhooks.public_key(key)
    return tuple(keys)
