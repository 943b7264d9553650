"""The retry policy: default backoff, the expression language (safe), Retry-After, outcomes."""

from __future__ import annotations

import pytest

from relay.protocol import BadRequest
from relay.retry import (
    Outcome,
    RetryDelay,
    classify,
    default_backoff_ms,
    next_retry_delay_ms,
    retry_after_ms,
)

NOW = 1_800_000_000_000


def test_default_backoff_matches_qstash_table() -> None:
    # QStash documents 12s, 2m28s, 30m8s, 6h7m6s, then a day
    assert [default_backoff_ms(n) // 1000 for n in (1, 2, 3, 4, 5, 9)] == [
        12,
        148,
        1808,
        22026,
        86400,
        86400,
    ]


@pytest.mark.parametrize(
    ("expression", "retried", "expected"),
    [
        ("1000", 0, 1000),
        ("1000 * (1 + retried)", 2, 3000),
        ("pow(2, retried) * 1000", 3, 8000),
        ("max(1000, pow(2, retried) * 100)", 1, 1000),
        ("min(5000, exp(retried) * 10)", 20, 5000),
        ("sqrt(retried) + abs(-3) + floor(1.7) + ceil(0.2) + round(2.5)", 4, 10),
        ("retried % 2 * 100", 3, 100),
        ("10 / 0", 0, 86_400_000),  # clamped, not a crash
        ("-5000", 0, 0),
        ("pow(10, 1000)", 0, 86_400_000),
    ],
)
def test_expressions(expression: str, retried: int, expected: int) -> None:
    assert RetryDelay.parse(expression).delay_ms(retried) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "retried.__class__",
        "open('x')",
        "retried ** 2",
        "lambda: 1",
        "[1, 2]",
        "'1000'",
        "pow(2)",
        "max(1, 2, 3)",
        "x + 1",
        "1000 if retried else 0",
        "",
        "1" * 600,
    ],
)
def test_rejected_expressions(expression: str) -> None:
    with pytest.raises(BadRequest):
        RetryDelay.parse(expression)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("Retry-After", "30")], 30_000),
        ([("retry-after", "0")], 0),
        ([("Retry-After", "1.5")], 1_500),
        ([("X-RateLimit-Reset", "6m5s")], 365_000),
        ([("X-RateLimit-Reset-Requests", "250ms")], 250),
        ([("Retry-After", "90000")], None),  # over a day: ignored
        ([("Retry-After", "soon")], None),
        ([], None),
    ],
)
def test_retry_after(headers: list[tuple[str, str]], expected: int | None) -> None:
    assert retry_after_ms(headers, NOW) == expected


def test_retry_after_http_date() -> None:
    from email.utils import formatdate

    date = formatdate((NOW + 60_000) / 1000, usegmt=True)
    assert retry_after_ms([("Retry-After", date)], NOW) == 60_000


def test_classify_table() -> None:
    assert classify(200, []) is Outcome.DELIVERED
    assert classify(204, []) is Outcome.DELIVERED
    assert classify(301, []) is Outcome.RETRYABLE
    assert classify(500, []) is Outcome.RETRYABLE
    assert classify(None, []) is Outcome.RETRYABLE
    assert classify(489, []) is Outcome.RETRYABLE
    assert classify(489, [("Upstash-NonRetryable-Error", "true")]) is Outcome.NON_RETRYABLE
    assert classify(500, [("Upstash-NonRetryable-Error", "true")]) is Outcome.RETRYABLE


def test_next_delay_precedence() -> None:
    expression = RetryDelay.parse("777")
    assert (
        next_retry_delay_ms(retried=0, expression=None, response_headers=[], now_ms=NOW) == 12_182
    )
    assert (
        next_retry_delay_ms(retried=0, expression=expression, response_headers=[], now_ms=NOW)
        == 777
    )
    assert (
        next_retry_delay_ms(
            retried=0, expression=expression, response_headers=[("Retry-After", "3")], now_ms=NOW
        )
        == 3_000
    )
