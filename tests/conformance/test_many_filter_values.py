"""Filters with more values than one DynamoDB filter expression may hold (100 IN operands, 4 KB,
300 operators) still answer exactly; infra/limits.py fails the AWS run if a request breaks one."""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.conftest import Api, Receiver


async def _dlq(api: Api, receiver: Receiver, labels: list[str]) -> list[str]:
    """One DLQ entry per label (each message failing once, no retries): their dlqIds."""
    receiver.respond("/fail", lambda r: web.Response(status=500))
    for label in labels:
        mid = await api.publish(
            receiver.url("/fail"), "x", headers={"Upstash-Retries": "0", "Upstash-Label": label}
        )
        await api.wait_state(mid, "FAILED")
    status, answer = await api.call("GET", "/v2/dlq")
    assert status == 200
    return [m["dlqId"] for m in reversed(answer["messages"])]


async def _listed(api: Api, params: list[tuple[str, str]]) -> set[str]:
    status, answer = await api.call("GET", "/v2/dlq", params=params)
    assert status == 200, answer
    return {m["dlqId"] for m in answer["messages"]}


@pytest.mark.parametrize("many", [101, 250])
async def test_dlq_by_more_ids_than_one_in_holds(api: Api, receiver: Receiver, many: int) -> None:
    first, _, third = await _dlq(api, receiver, ["a", "b", "c"])
    # The wanted ids past the first hundred: a filter cut at 100 operands would miss them.
    ids = [f"d{i}" for i in range(many - 2)] + [first, third]
    assert await _listed(api, [("dlqIds", i) for i in ids]) == {first, third}
    # With a second column filtered in the expression (and the ids' column beside it).
    params = [("dlqIds", i) for i in ids] + [("label", "a")]
    assert await _listed(api, params) == {first}


async def test_dlq_by_many_labels(api: Api, receiver: Receiver) -> None:
    """Labels are OR-ed `contains` calls: 200 of them are over 300 operators and 4 KB."""
    _, second = await _dlq(api, receiver, ["a", "b"])
    labels = [f"l{i}" for i in range(199)] + ["b"]
    assert await _listed(api, [("label", label) for label in labels]) == {second}


async def test_a_label_given_twice_is_one_label(api: Api, receiver: Receiver) -> None:
    """DynamoDB refuses a string set holding a value twice: the DLQ entry still gets written."""
    [dlq_id] = await _dlq(api, receiver, ["a, a,b"])
    assert await _listed(api, [("label", "a")]) == {dlq_id}
