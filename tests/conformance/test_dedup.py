"""Deduplication by id and by content: the first id, `deduplicated: true`, one delivery."""

from __future__ import annotations

from relay.clock import ManualClock
from tests.conftest import Api, Receiver


async def _publish(
    api: Api, url: str, body: str, headers: dict[str, str]
) -> tuple[int, dict[str, object]]:
    status, answer = await api.call("POST", "/v2/publish/" + url, data=body, headers=headers)
    return status, answer


async def test_deduplication_id(api: Api, receiver: Receiver) -> None:
    url = receiver.url("/d")
    s1, first = await _publish(api, url, "a", {"Upstash-Deduplication-Id": "order-1"})
    s2, second = await _publish(api, url, "b", {"Upstash-Deduplication-Id": "order-1"})
    assert s1 == 201 and first.get("deduplicated") is None
    assert s2 == 202 and second == {"messageId": first["messageId"], "deduplicated": True}
    await receiver.wait_for(1, "/d")
    s3, third = await _publish(api, url, "a", {"Upstash-Deduplication-Id": "order-2"})
    assert s3 == 201 and third["messageId"] != first["messageId"]
    await receiver.wait_for(2, "/d")
    assert [r.body for r in receiver.at("/d")] == [b"a", b"a"]


async def test_content_based_deduplication(api: Api, receiver: Receiver) -> None:
    url = receiver.url("/c")
    headers = {"Upstash-Content-Based-Deduplication": "True"}  # the Python SDK capitalises
    _, first = await _publish(api, url, "same", headers)
    s2, second = await _publish(api, url, "same", headers)
    _s3, third = await _publish(api, url, "different", headers)
    assert s2 == 202 and second["messageId"] == first["messageId"] and second["deduplicated"]
    assert third["messageId"] != first["messageId"]
    s4, fourth = await _publish(api, url, "same", {})
    assert s4 == 201 and fourth["messageId"] != first["messageId"]


async def test_dedup_window_expires(clock: ManualClock, api: Api, receiver: Receiver) -> None:
    url = receiver.url("/w")
    _, first = await _publish(api, url, "a", {"Upstash-Deduplication-Id": "k"})
    clock.advance(600_001)
    status, again = await _publish(api, url, "a", {"Upstash-Deduplication-Id": "k"})
    assert status == 201 and again["messageId"] != first["messageId"]
