"""What a relay counts: Prometheus counters, histograms and gauges for ``GET /metrics``, and the
same figures as CloudWatch embedded metric format (EMF) log lines on AWS.

Each figure is fed from one place: `RelayService` counts what it stores, `Deliverer` what each
stored attempt settled to; the queue gauges are read from the backend when they are wanted (a
scrape, or on AWS the ticker's run).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from relay.models import Accepted, Attempt, Message, MessageState, QueueStats, Settlement
from relay.retry import Outcome, classify

if TYPE_CHECKING:
    from relay.backends.base import Backend

__all__ = ["CONTENT_TYPE", "EMF_NAMESPACE", "Metrics", "emf_lines"]

log = logging.getLogger("relay.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
EMF_NAMESPACE = "relay"
SOURCES = ("api", "schedule", "callback", "dlq_retry")
OUTCOMES = ("delivered", "retried", "failed")
REASONS = ("retries_exhausted", "non_retryable")
_ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_END_TO_END_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400)
_STATE_OUTCOME = {
    MessageState.DELIVERED: "delivered",
    MessageState.RETRY: "retried",
    MessageState.FAILED: "failed",
}
GAUGES_MAX_AGE = 1.0  # seconds a scrape may reuse the queue gauges
_EMF_VALUES = 100  # CloudWatch takes at most 100 values of one metric per document


@dataclass(slots=True)
class _Pending:
    """What happened since the last EMF flush (kept only when EMF is on)."""

    counts: dict[str, int] = field(default_factory=dict)
    attempt_ms: list[float] = field(default_factory=list)
    end_to_end_ms: list[float] = field(default_factory=list)
    host_errors: dict[str, int] = field(default_factory=dict)
    queue: QueueStats | None = None
    queue_at: int = 0

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + amount

    def __bool__(self) -> bool:
        return bool(self.counts or self.attempt_ms or self.host_errors or self.queue)


class Metrics:
    """One relay's figures, in their own registry (so that relays in one process stay apart).

    ``emf`` also keeps what happened since the last `drain_emf` for CloudWatch (AWS runtime).
    """

    def __init__(self, *, emf: bool = False) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.published = Counter(
            "relay_messages_published",
            "Messages stored for delivery, by where they came from.",
            ["source"],
            registry=r,
        )
        self.deduplicated = Counter(
            "relay_messages_deduplicated",
            "Publishes answered with an earlier message's id (deduplication id or content).",
            registry=r,
        )
        self.attempts = Counter(
            "relay_delivery_attempts",
            "Delivery attempts by outcome: delivered, retried (later), failed (to the DLQ).",
            ["outcome"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "relay_messages_dead_lettered",
            "Messages moved to the DLQ, by reason.",
            ["reason"],
            registry=r,
        )
        self.host_errors = Counter(
            "relay_delivery_errors",
            "Failed attempts per destination host: http_4xx, http_5xx, timeout, connection.",
            ["host", "kind"],
            registry=r,
        )
        self.attempt_seconds = Histogram(
            "relay_delivery_attempt_duration_seconds",
            "How long one delivery attempt took (request to response).",
            buckets=_ATTEMPT_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "relay_delivery_end_to_end_seconds",
            "From a message's publish to its delivery (delays and retries included).",
            buckets=_END_TO_END_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "relay_queue_depth",
            "Messages not yet finished: due now, waiting for a later time, or in flight.",
            ["state"],
            registry=r,
        )
        self.oldest_due_age = Gauge(
            "relay_queue_oldest_due_age_seconds",
            "How long the longest-waiting due message has been due (0 when none is).",
            registry=r,
        )
        # Every label value from the start, so that a rate over a fresh series has a zero.
        for source in SOURCES:
            self.published.labels(source)
        for outcome in OUTCOMES:
            self.attempts.labels(outcome)
        for reason in REASONS:
            self.dead_lettered.labels(reason)
        self._pending: _Pending | None = _Pending() if emf else None
        self._gauges_read = -math.inf  # monotonic seconds

    # --- feeding --------------------------------------------------------------------------------

    def accepted(
        self,
        messages: Sequence[Message],
        answers: Sequence[Accepted],
        *,
        source: str | None = None,
    ) -> None:
        """Count what `Backend.accept` stored (``answers`` are its answers, one per message)."""
        for message, answer in zip(messages, answers, strict=False):
            if answer.deduplicated:
                self.deduplicated.inc()
                self._add("Deduplicated")
                continue
            origin = source or ("schedule" if message.schedule_id else "api")
            self.published.labels(origin).inc()
            self._add("Published")

    def settled(self, message: Message, attempt: Attempt, settlement: Settlement, now: int) -> None:
        """Count one attempt whose outcome was stored."""
        outcome = _STATE_OUTCOME.get(settlement.state, "failed")
        self.attempts.labels(outcome).inc()
        self._add(outcome.capitalize())
        self.attempt_seconds.observe(attempt.duration_ms / 1000)
        if self._pending is not None:
            self._pending.attempt_ms.append(float(attempt.duration_ms))
        if settlement.state == MessageState.DELIVERED:
            waited = max(0, now - message.created_at)
            self.end_to_end_seconds.observe(waited / 1000)
            if self._pending is not None:
                self._pending.end_to_end_ms.append(float(waited))
        else:
            host = destination_host(message.url)
            self.host_errors.labels(host, error_kind(attempt)).inc()
            if self._pending is not None:
                self._pending.host_errors[host] = self._pending.host_errors.get(host, 0) + 1
        if settlement.dlq is not None:
            exhausted = classify(attempt.status, attempt.headers) is Outcome.RETRYABLE
            self.dead_lettered.labels(REASONS[0] if exhausted else REASONS[1]).inc()
            self._add("DeadLettered")
        if settlement.follow_ups:
            self.published.labels("callback").inc(len(settlement.follow_ups))
            self._add("Published", len(settlement.follow_ups))

    def observe_queue(self, stats: QueueStats | None, now: int) -> None:
        """Set the queue gauges (None: the backend could not tell, so they read NaN)."""
        if stats is None:
            for state in ("due", "waiting", "in_flight"):
                self.queue_depth.labels(state).set(math.nan)
            self.oldest_due_age.set(math.nan)
            return
        self.queue_depth.labels("due").set(stats.due)
        self.queue_depth.labels("waiting").set(stats.waiting)
        self.queue_depth.labels("in_flight").set(stats.in_flight)
        self.oldest_due_age.set(oldest_due_age_seconds(stats, now))
        if self._pending is not None:
            self._pending.queue, self._pending.queue_at = stats, now

    def _add(self, name: str, amount: int = 1) -> None:
        if self._pending is not None:
            self._pending.add(name, amount)

    # --- reading --------------------------------------------------------------------------------

    async def scrape(self, backend: Backend, now: int) -> bytes:
        """The Prometheus text exposition, with the queue gauges read from ``backend`` (at most
        once a second: the route is public, and on AWS each reading costs requests)."""
        if time.monotonic() - self._gauges_read >= GAUGES_MAX_AGE:
            try:
                stats: QueueStats | None = await backend.queue_stats(now)
            except Exception:
                log.warning("reading the queue's figures failed", exc_info=True)
                stats = None
            self.observe_queue(stats, now)
            self._gauges_read = time.monotonic()
        return generate_latest(self.registry)

    def drain_emf(self, *, dimensions: dict[str, str], now: int) -> list[str]:
        """EMF lines for what happened since the last call (none if nothing did)."""
        if self._pending is None or not self._pending:
            return []
        pending, self._pending = self._pending, _Pending()
        return emf_lines(pending, dimensions=dimensions, now=now)


def destination_host(url: str) -> str:
    """The host (and port, when given) a destination URL names: the error counts' label."""
    parts = urlsplit(url)
    host = parts.hostname or "unknown"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def error_kind(attempt: Attempt) -> str:
    """How an attempt failed: ``http_4xx``/``http_5xx`` (any status class), ``timeout`` or
    ``connection``."""
    if attempt.status is not None:
        return f"http_{attempt.status // 100}xx"
    return "timeout" if (attempt.error or "").startswith("timed out") else "connection"


def oldest_due_age_seconds(stats: QueueStats, now: int) -> float:
    if stats.oldest_due is None:
        return 0.0
    return max(0, now - stats.oldest_due) / 1000


# --- CloudWatch embedded metric format ------------------------------------------------------------

# EMF metric name → unit. template.yaml's dashboard draws these names.
EMF_METRICS = {
    "Published": "Count",
    "Deduplicated": "Count",
    "Delivered": "Count",
    "Retried": "Count",
    "Failed": "Count",
    "DeadLettered": "Count",
    "AttemptDuration": "Milliseconds",
    "EndToEndLatency": "Milliseconds",
    "QueueDue": "Count",
    "QueueWaiting": "Count",
    "QueueInFlight": "Count",
    "QueueDepth": "Count",
    "OldestDueAge": "Seconds",
    "DeliveryErrors": "Count",
}


def emf_lines(pending: _Pending, *, dimensions: dict[str, str], now: int) -> list[str]:
    """One JSON document per line: the totals (with up to 100 latency values each; more values
    go on further lines), then one line per destination host that had errors."""
    values: dict[str, Any] = dict(pending.counts)
    if pending.queue is not None:
        q = pending.queue
        values.update(
            QueueDue=q.due,
            QueueWaiting=q.waiting,
            QueueInFlight=q.in_flight,
            QueueDepth=q.depth,
            OldestDueAge=oldest_due_age_seconds(q, pending.queue_at),
        )
    series = {"AttemptDuration": pending.attempt_ms, "EndToEndLatency": pending.end_to_end_ms}
    lines: list[str] = []
    offset = 0
    while True:
        chunk = dict(values) if offset == 0 else {}
        for name, all_values in series.items():
            part = all_values[offset : offset + _EMF_VALUES]
            if part:
                chunk[name] = part
        if not chunk:
            break
        lines.append(_emf_document(chunk, dimensions, now))
        offset += _EMF_VALUES
    for host, count in sorted(pending.host_errors.items()):
        lines.append(_emf_document({"DeliveryErrors": count}, {**dimensions, "Host": host}, now))
    return lines


def _emf_document(values: dict[str, Any], dimensions: dict[str, str], now: int) -> str:
    document: dict[str, Any] = {
        "_aws": {
            "Timestamp": now,
            "CloudWatchMetrics": [
                {
                    "Namespace": EMF_NAMESPACE,
                    "Dimensions": [sorted(dimensions)],
                    "Metrics": [{"Name": n, "Unit": EMF_METRICS[n]} for n in values],
                }
            ],
        },
        **dimensions,
        **values,
    }
    return json.dumps(document, separators=(",", ":"))
