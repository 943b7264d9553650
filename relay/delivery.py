"""Delivering messages: one signed HTTP attempt, its outcome turned into a settlement, and the
embedded worker that leases due messages and keeps a bounded number of attempts in flight."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import replace
from typing import Any

import aiohttp

from relay import protocol as p
from relay import queues, webhooks
from relay.models import Attempt, DlqEntry, Event, Lease, Message, MessageState, Settlement
from relay.retry import Outcome, RetryDelay, classify, next_retry_delay_ms
from relay.service import RelayService
from relay.signing import SigningKeys, sign
from relay.workflows import protocol as wp
from relay.workflows import runs
from relay.workflows.model import WorkflowRun
from relay.workflows.protocol import CallType

log = logging.getLogger("relay.delivery")


class Deliverer:
    """Sends one attempt of a message and settles its outcome through the backend.

    Shared by the embedded worker and the AWS delivery Lambda: one rule for both.
    """

    def __init__(self, service: RelayService, session: aiohttp.ClientSession) -> None:
        self.service = service
        self.session = session

    async def deliver(self, lease: Lease) -> bool:
        """Attempt ``lease``'s message and store the outcome; False if the lease was lost."""
        message, sent, run = lease.message, lease.message, None
        if message.run_id is not None:  # a workflow run's: sent as the run's protocol says
            run = await self.service.backend.get_run(message.run_id)
            prepared = await runs.outgoing(self.service, message, run)
            if prepared is None:  # its run has ended: dropped unsent
                await self.service.backend.cancel([message.id], self.service.clock.now_ms())
                return True
            sent = prepared
        attempt = await self.attempt(sent)
        now = self.service.clock.now_ms()
        settlement = self.settle(message, attempt, now, run=run)
        stored = await self.service.backend.settle(lease, settlement, now)
        if stored:  # a lost lease is attempted again: counted once, when its outcome is stored
            self.service.metrics.settled(message, attempt, settlement, now)
            if settlement.fails_run is not None:
                await runs.failed(self.service, settlement.fails_run)
        return stored

    async def attempt(self, message: Message) -> Attempt:
        """One signed HTTP request to the message's URL; never raises for the destination's sake."""
        headers = delivery_headers(message, self.service.keys)
        started = time.monotonic()
        limit = self.service.settings.response_body_limit
        try:
            async with self.session.request(
                message.method,
                message.url,
                data=message.body or None,
                headers=headers,
                skip_auto_headers=("Content-Type",),
                allow_redirects=False,
                timeout=_timeout(message.timeout),
            ) as response:
                body = await response.content.read(limit)
                return Attempt(
                    status=response.status,
                    headers=[(str(k), v) for k, v in response.headers.items()],
                    body=body,
                    error=None if 200 <= response.status < 300 else f"HTTP {response.status}",
                    duration_ms=_elapsed_ms(started),
                )
        except TimeoutError:
            error = f"timed out after {message.timeout}s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Attempt(
            status=None, headers=[], body=b"", error=error, duration_ms=_elapsed_ms(started)
        )

    def settle(
        self, message: Message, attempt: Attempt, now: int, *, run: WorkflowRun | None = None
    ) -> Settlement:
        """The outcome of one attempt: delivered, retried later, or failed to the DLQ (and
        with it the workflow ``run`` the message drives, if any)."""
        outcome = classify(attempt.status, attempt.headers)
        detail = _response_detail(attempt)
        follow_ups: list[Message] = []
        if message.callback:
            follow_ups.append(
                callback_message(self.service, message, attempt, now, failure=False, run=run)
            )
        if outcome is Outcome.DELIVERED:
            state, retried, next_due, dlq = MessageState.DELIVERED, message.retried, None, None
        elif outcome is Outcome.RETRYABLE and message.retried < message.max_retries:
            expression = RetryDelay.parse(message.retry_delay) if message.retry_delay else None
            next_due = now + next_retry_delay_ms(
                retried=message.retried,
                expression=expression,
                response_headers=attempt.headers,
                now_ms=now,
            )
            state, retried, dlq = MessageState.RETRY, message.retried + 1, None
            detail["nextDeliveryTime"] = next_due
        else:
            state, retried, next_due = MessageState.FAILED, message.retried, None
            dlq = DlqEntry(
                dlq_id=self.service.ids.dlq_id(now),
                message=replace(message, state=MessageState.FAILED),
                failed_at=now,
                response_status=attempt.status,
                response_headers=attempt.headers,
                response_body=attempt.body,
                error=attempt.error,
            )
            detail["dlqId"] = dlq.dlq_id
            if message.failure_callback:
                follow_ups.append(
                    callback_message(
                        self.service, message, attempt, now, failure=True, dlq=dlq, run=run
                    )
                )
        for follow_up in follow_ups:
            queues.inherit_slot(follow_up, message)
        events = [Event.of(message, state, now, **detail)]
        drives_run = run is not None and dlq is not None and message.call_type in _DRIVES_RUN
        return Settlement(
            state=state,
            retried=retried,
            next_due=next_due,
            events=events,
            follow_ups=follow_ups,
            dlq=dlq,
            fails_run=run.run_id if run is not None and drives_run else None,
        )


def callback_message(
    service: RelayService,
    message: Message,
    attempt: Attempt,
    now: int,
    *,
    failure: bool,
    dlq: DlqEntry | None = None,
    run: WorkflowRun | None = None,
) -> Message:
    """The callback (or failure callback) message of one attempt of ``message``; for a
    workflow ``run``, a failure callback carries the run's initial payload."""
    body: dict[str, Any] = {
        "status": attempt.status or 0,
        "header": p.header_map(attempt.headers),
        "body": p.b64(attempt.body if attempt.status else (attempt.error or "").encode()),
        "retried": message.retried,
        "maxRetries": message.max_retries,
        "sourceMessageId": message.id,
        "url": message.url,
        "method": message.method,
        "sourceHeader": p.header_map(message.headers),
        "sourceBody": p.b64(message.body),
        "notBefore": message.not_before,
        "createdAt": message.created_at,
    }
    for key, value in (
        ("topicName", message.topic_name),
        ("endpointName", message.endpoint_name),
        ("scheduleId", message.schedule_id),
        ("callerIP", message.caller_ip),
    ):
        if value is not None:
            body[key] = value
    if dlq is not None:
        body["dlqId"] = dlq.dlq_id
    url = message.failure_callback if failure else message.callback
    family = message.failure_callback_headers if failure else message.callback_headers
    assert url is not None
    headers = {p.H_CONTENT_TYPE: "application/json", **family}
    if run is not None:
        if failure:  # the failure function gets the run's initial payload
            body.update(
                sourceBody=p.b64(run.payload),
                workflowRunId=run.run_id,
                workflowCreatedAt=run.created_at,
                workflowUrl=run.url,
                failureUrl=url,
            )
        else:  # context.call's callback: a message of the run to its workflow URL
            headers = dict(wp.with_run_level(list(headers.items()), run.settings))
    return service.build_follow_up(url, headers, p.compact_json(body), now=now)


def delivery_headers(message: Message, keys: SigningKeys) -> dict[str, str]:
    """The request headers of one attempt: forwarded ones, then relay's own (which win): the
    QStash signature and, when the relay has a webhook secret or keys, Standard Webhooks'."""
    now = int(time.time())
    own = {
        p.D_SIGNATURE: sign(keys.current, url=message.url, body=message.body, now=now),
        p.D_MESSAGE_ID: message.id,
        p.D_RETRIED: str(message.retried),
        "User-Agent": p.USER_AGENT,
    }
    headers = dict(p.with_headers(message.headers, own))
    for name, value in (
        (p.D_TOPIC, message.topic_name),
        (p.D_SCHEDULE, message.schedule_id),
        (p.D_CALLER_IP, message.caller_ip),
    ):
        if value is not None:
            headers[name] = value
    if keys.webhook_secret or keys.webhook_keys:
        headers.update(
            webhooks.headers(
                message.id,
                now,
                message.body,
                secret=keys.webhook_secret,
                secret_keys=keys.webhook_keys,
            )
        )
    return headers


# The messages whose failure fails their run: those to the workflow URL that carry it on.
_DRIVES_RUN = frozenset({CallType.STEP, CallType.FROM_CALLBACK})


def _response_detail(attempt: Attempt) -> dict[str, Any]:
    detail: dict[str, Any] = {"duration": attempt.duration_ms}
    if attempt.status is not None:
        response_headers = p.header_map(attempt.headers)
        detail.update(
            responseStatus=attempt.status,
            responseHeader=response_headers,
            responseHeaders=response_headers,
            responseBody=attempt.body.decode("utf-8", "replace"),
        )
    if attempt.error is not None:
        detail["error"] = attempt.error
    return detail


@functools.lru_cache(maxsize=64)
def _timeout(seconds: int) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


class DeliveryWorker:
    """The embedded relay's delivery loop: lease what is due, attempt it with bounded
    concurrency, sleep until the next message is due or a publish wakes it."""

    def __init__(
        self,
        deliverer: Deliverer,
        *,
        concurrency: int,
        visibility_ms: int,
        poll_interval: float,
    ) -> None:
        self.deliverer = deliverer
        self.concurrency = concurrency
        self.visibility_ms = visibility_ms
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._batch = max(1, concurrency // 8)

    def notify(self) -> None:
        """Something may be due now: look again without waiting for the poll interval."""
        self._wake.set()

    async def run(self) -> None:
        backend = self.deliverer.service.backend
        clock = self.deliverer.service.clock
        while not self._stopping:
            self._wake.clear()
            free = self.concurrency - len(self._in_flight)
            leases: list[Lease] = []
            # Lease in batches: while most slots are busy, let completions accumulate first.
            waiting = free <= 0 or (free < self._batch and bool(self._in_flight))
            if not waiting:
                try:
                    leases = await backend.lease(clock.now_ms(), free, self.visibility_ms)
                except Exception:
                    log.exception("leasing due messages failed; trying again shortly")
            for lease in leases:
                task = asyncio.create_task(self._deliver(lease))
                self._in_flight.add(task)
                task.add_done_callback(self._done)
            if leases and len(leases) == free:
                continue  # there may be more due right now
            timeout = self.poll_interval
            if not waiting and not leases:
                with contextlib.suppress(Exception):
                    due = await backend.next_due()
                    if due is not None:
                        timeout = min(timeout, max(0.0, (due - clock.now_ms()) / 1000))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()

    async def _deliver(self, lease: Lease) -> None:
        try:
            await self.deliverer.deliver(lease)
        except Exception:
            # The lease stays unsettled and expires: the message is delivered again.
            log.exception("delivery of %s failed before its outcome was stored", lease.message.id)

    async def stop(self, grace: float) -> None:
        """Stop leasing, give in-flight attempts ``grace`` seconds, then cancel the rest (their
        leases are released when the backend next opens)."""
        self._stopping = True
        self._wake.set()
        if self._in_flight:
            _, pending = await asyncio.wait(set(self._in_flight), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
