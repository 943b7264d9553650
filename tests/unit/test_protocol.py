"""Header value formats of the wire protocol."""

from __future__ import annotations

import pytest

from relay.protocol import BadRequest, parse_bool, parse_duration, parse_int, parse_redact_fields


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5", 5),
        ("5s", 5),
        ("2m", 120),
        ("1h", 3600),
        ("7d", 604_800),
        ("1h30m", 5400),
        ("1500ms", 1.5),
        (" 10s ", 10),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "5x", "-5s", "5 s", "1h 30m", "soon", "5s5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(BadRequest, match="invalid"):
        parse_duration(text, what="Upstash-Delay")


def test_ints_and_bools() -> None:
    assert parse_int("3", what="Upstash-Retries") == 3
    with pytest.raises(BadRequest, match="at most 20"):
        parse_int("21", what="Upstash-Retries", maximum=20)
    assert parse_bool("True") and parse_bool("true") and parse_bool("1")
    assert not parse_bool("False") and not parse_bool("")


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("body", "body"),
        ("header", "header"),
        ("headers", "header"),  # the docs' spelling
        ("body, headers[Authorization],header[X-A]", "body,header[Authorization],header[X-A]"),
        ("body,body", "body"),
        (" , ", None),
    ],
)
def test_redact_fields(text: str, canonical: str | None) -> None:
    assert parse_redact_fields(text) == canonical


@pytest.mark.parametrize("text", ["cookies", "header[]", "body[x]", "header[a"])
def test_bad_redact_fields(text: str) -> None:
    with pytest.raises(BadRequest, match="Upstash-Redact-Fields"):
        parse_redact_fields(text)
