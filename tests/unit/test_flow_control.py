"""relay.flow_control: the headers' grammar and a key's settings."""

from __future__ import annotations

import pytest

from relay.flow_control import FlowControl, FlowKey, parse
from relay.protocol import BadRequest


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("parallelism=3, rate=10, period=60s", (3, 10, 60)),  # as both SDKs send it
        ("rate=5,period=2m", (None, 5, 120)),  # as the docs write it
        ("period=30", (None, None, 30)),  # bare seconds
        ("Parallelism=1", (1, None, None)),
        ("", (None, None, None)),  # the Python SDK with only a key
        (None, (None, None, None)),
    ],
)
def test_parse(value: str | None, expected: tuple[int | None, ...]) -> None:
    given = parse("k", value)
    assert given is not None
    assert (given.parallelism, given.rate, given.period) == expected


@pytest.mark.parametrize(
    "value",
    ["parallelism=0", "rate=-1", "rate=1.5", "speed=1", "rate", "period=8d", "period=500ms"],
)
def test_parse_refuses(value: str) -> None:
    with pytest.raises(BadRequest):
        parse("k", value)


def test_key_rules() -> None:
    assert parse(None, None) is None
    for key in ("", "a/b", "a b", "x" * 257):
        with pytest.raises(BadRequest):
            parse(key, "rate=1")
    with pytest.raises(BadRequest):
        parse(None, "rate=1")


def test_latest_limits_win_unless_pinned() -> None:
    key = FlowKey("k").configured(FlowControl("k", parallelism=2, rate=5, period=10))
    assert (key.parallelism, key.rate, key.period) == (2, 5, 10_000)
    assert key.configured(FlowControl("k")) == key  # an empty value changes nothing
    pinned = FlowKey("k", parallelism=1, pinned_parallelism=True)
    moved = pinned.configured(FlowControl("k", parallelism=9, rate=3))
    assert (moved.parallelism, moved.rate, moved.period) == (1, 3, 1000)
