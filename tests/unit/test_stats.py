"""Delivery figures from outcomes: buckets, counts and nearest-rank latency percentiles."""

from __future__ import annotations

from relay.models import MessageState, Outcome
from relay.stats import percentile, summarize

D, R, F = MessageState.DELIVERED, MessageState.RETRY, MessageState.FAILED


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


def test_outcomes_land_in_their_minute() -> None:
    now = 10 * 60_000 + 5_000  # 5 s into minute 10
    outcomes: list[Outcome] = [
        (now, D, 10),
        (now - 1_000, D, 30),
        (now - 60_000, R, 500),  # minute 9
        (now - 61_000, F, None),  # minute 9
        (now - 10 * 60_000, D, 1),  # minute 0: outside a 10-minute window
    ]
    stats = summarize(outcomes, now=now, buckets=10, bucket_ms=60_000)
    assert stats.starts[0] == 60_000 and stats.starts[-1] == 10 * 60_000
    assert stats.delivered[-1] == 2 and stats.retried[-2] == 1 and stats.failed[-2] == 1
    assert stats.totals == {"delivered": 2, "retried": 1, "failed": 1}
    # latency counts delivered attempts only
    assert (stats.p50[-1], stats.p95[-1]) == (10.0, 30.0)
    assert stats.p50[-2] is None
    assert (stats.latency_p50, stats.latency_p95) == (10.0, 30.0)
    assert not stats.partial
