"""Delivery figures computed from the events: outcomes per minute and attempt latency."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from relay.models import MessageState, Outcome


@dataclass(slots=True)
class DeliveryStats:
    """Outcomes of the attempts in a window, per bucket: ``starts[i]`` (ms) begins bucket ``i``;
    latency is the duration of delivered attempts. ``partial`` says the window held more
    outcomes than were read, so the oldest buckets are incomplete."""

    starts: list[int]
    bucket_ms: int
    delivered: list[int]
    retried: list[int]
    failed: list[int]
    p50: list[float | None]
    p95: list[float | None]
    latency_p50: float | None
    latency_p95: float | None
    partial: bool = False

    @property
    def totals(self) -> dict[str, int]:
        return {
            "delivered": sum(self.delivered),
            "retried": sum(self.retried),
            "failed": sum(self.failed),
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of sorted ``values``; None when empty."""
    if not values:
        return None
    rank = max(1, math.ceil(q / 100 * len(values)))
    return float(values[min(rank, len(values)) - 1])


def summarize(
    outcomes: Sequence[Outcome], *, now: int, buckets: int, bucket_ms: int, partial: bool = False
) -> DeliveryStats:
    """Bucket ``outcomes`` into the ``buckets`` periods ending with the one holding ``now``."""
    first = (now // bucket_ms - buckets + 1) * bucket_ms
    counts = {s: [0] * buckets for s in (MessageState.DELIVERED, MessageState.RETRY)}
    counts[MessageState.FAILED] = [0] * buckets
    durations: list[list[int]] = [[] for _ in range(buckets)]
    for time, state, duration in outcomes:
        index = (time - first) // bucket_ms
        if not 0 <= index < buckets or state not in counts:
            continue
        counts[state][index] += 1
        if state == MessageState.DELIVERED and duration is not None:
            durations[index].append(duration)
    for bucket in durations:
        bucket.sort()
    everything = sorted(d for bucket in durations for d in bucket)
    return DeliveryStats(
        starts=[first + i * bucket_ms for i in range(buckets)],
        bucket_ms=bucket_ms,
        delivered=counts[MessageState.DELIVERED],
        retried=counts[MessageState.RETRY],
        failed=counts[MessageState.FAILED],
        p50=[percentile(bucket, 50) for bucket in durations],
        p95=[percentile(bucket, 95) for bucket in durations],
        latency_p50=percentile(everything, 50),
        latency_p95=percentile(everything, 95),
        partial=partial,
    )
