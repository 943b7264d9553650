"""Flow control: parallelism and rate per key (excess messages wait, none is rejected), pause,
resume, pin, unpin, reset rate, and the management API's shapes."""

from __future__ import annotations

import asyncio
from typing import Any

from relay.clock import ManualClock
from relay.server import EmbeddedRelay
from tests.conformance.test_queues import _eventually, _Gate, _quiet
from tests.conftest import Api, Receiver

INFO_FIELDS = {
    "flowControlKey",
    "waitListSize",
    "parallelismMax",
    "parallelismCount",
    "rateMax",
    "rateCount",
    "ratePeriod",
    "ratePeriodStart",
    "isPaused",
    "isPinnedParallelism",
    "isPinnedRate",
}


def _flow(key: str, value: str) -> dict[str, str]:
    return {"Upstash-Flow-Control-Key": key, "Upstash-Flow-Control-Value": value}


async def _info(api: Api, key: str) -> dict[str, Any]:
    status, info = await api.call("GET", f"/v2/flowControl/{key}")
    assert status == 200, info
    assert set(info) == INFO_FIELDS
    return dict(info)


async def _delivered(api: Api, ids: list[str]) -> list[str]:
    return [m for m in ids if "DELIVERED" in await api.states(m)]


async def test_parallelism_limit_wait_lists_the_excess(api: Api, receiver: Receiver) -> None:
    gate = _Gate()
    receiver.respond("/slow", gate)
    ids = [
        await api.publish(receiver.url("/slow"), str(i), _flow("one-at-a-time", "parallelism=1"))
        for i in range(3)
    ]
    await _eventually(lambda: gate.holding == 1)
    await asyncio.sleep(0.3)
    assert gate.holding == 1
    info = await _info(api, "one-at-a-time")
    assert info["parallelismMax"] == 1 and info["parallelismCount"] == 1
    assert info["waitListSize"] == 2 and info["rateMax"] == 0
    _, message = await api.call("GET", f"/v2/messages/{ids[0]}")
    assert message["flowControlKey"] == "one-at-a-time" and message["parallelism"] == 1
    gate.open.set()
    for message_id in ids:
        await api.wait_state(message_id, "DELIVERED")
    assert [r.body for r in receiver.requests] == [b"0", b"1", b"2"]
    info = await _info(api, "one-at-a-time")
    assert info["parallelismCount"] == 0 and info["waitListSize"] == 0


async def test_rate_limit_delivers_the_excess_in_later_periods(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    headers = _flow("two-per-10s", "rate=2, period=10s")
    ids = [await api.publish(receiver.url("/r"), str(i), headers) for i in range(5)]
    await receiver.wait_for(2, "/r")
    await asyncio.sleep(0.3)
    assert len(receiver.at("/r")) == 2
    info = await _info(api, "two-per-10s")
    assert info["rateMax"] == 2 and info["rateCount"] == 2 and info["ratePeriod"] == 10
    assert info["waitListSize"] == 3
    assert info["ratePeriodStart"] == clock.now_ms() // 1000
    clock.advance(10_000)
    relay.worker.notify()
    await receiver.wait_for(4, "/r")
    await asyncio.sleep(0.2)
    assert len(receiver.at("/r")) == 4
    clock.advance(10_000)
    relay.worker.notify()
    await receiver.wait_for(5, "/r")
    assert sorted(await _delivered(api, ids)) == sorted(ids)


async def test_a_retrying_message_frees_its_call_slot(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    receiver.respond("/flaky", 500, 200)
    headers = {**_flow("k-retry", "parallelism=1"), "Upstash-Retry-Delay": "5000"}
    first = await api.publish(receiver.url("/flaky"), "1", headers)
    await api.wait_state(first, "RETRY")
    second = await api.publish(receiver.url("/other"), "2", _flow("k-retry", "parallelism=1"))
    await api.wait_state(second, "DELIVERED")  # not held back by the first one's backoff
    assert await _info(api, "k-retry") | {"waitListSize": 0} == await _info(api, "k-retry")
    clock.advance(5000)
    relay.worker.notify()
    await api.wait_state(first, "DELIVERED")


async def test_pause_and_resume(api: Api, receiver: Receiver) -> None:
    assert (await api.call("POST", "/v2/flowControl/paused-key/pause"))[0] == 200
    info = await _info(api, "paused-key")
    assert info["isPaused"] is True
    message_id = await api.publish(receiver.url("/p"), "x", _flow("paused-key", "rate=100"))
    await _quiet(receiver, "/p")
    assert (await _info(api, "paused-key"))["waitListSize"] == 1
    assert (await api.call("POST", "/v2/flowControl/paused-key/resume"))[0] == 200
    await api.wait_state(message_id, "DELIVERED")
    assert (await _info(api, "paused-key"))["isPaused"] is False


async def test_pin_unpin_and_reset_rate(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    first = await api.publish(receiver.url("/z"), "1", _flow("pinned", "rate=1, period=1h"))
    await api.wait_state(first, "DELIVERED")
    second = await api.publish(receiver.url("/z"), "2", _flow("pinned", "rate=1, period=1h"))
    await _eventually(lambda: len(receiver.at("/z")) == 1)
    await asyncio.sleep(0.2)
    assert len(receiver.at("/z")) == 1 and (await _info(api, "pinned"))["waitListSize"] == 1
    assert (await api.call("POST", "/v2/flowControl/pinned/resetRate"))[0] == 200
    await api.wait_state(second, "DELIVERED")

    status, _ = await api.call(
        "POST",
        "/v2/flowControl/pinned/pin",
        params={"parallelism": "2", "rate": "5", "period": "60"},
    )
    assert status == 200
    info = await _info(api, "pinned")
    assert (info["parallelismMax"], info["rateMax"], info["ratePeriod"]) == (2, 5, 60)
    assert info["isPinnedParallelism"] and info["isPinnedRate"]
    # A later message's value does not move what is pinned.
    third = await api.publish(receiver.url("/z"), "3", _flow("pinned", "parallelism=9, rate=9"))
    await api.wait_state(third, "DELIVERED")
    info = await _info(api, "pinned")
    assert (info["parallelismMax"], info["rateMax"]) == (2, 5)
    status, _ = await api.call(
        "POST", "/v2/flowControl/pinned/unpin", params={"parallelism": "true", "rate": "false"}
    )
    assert status == 200
    info = await _info(api, "pinned")
    assert not info["isPinnedParallelism"] and info["isPinnedRate"]
    fourth = await api.publish(receiver.url("/z"), "4", _flow("pinned", "parallelism=3, rate=7"))
    await api.wait_state(fourth, "DELIVERED")
    info = await _info(api, "pinned")
    assert (info["parallelismMax"], info["rateMax"]) == (3, 5)


async def test_headers_are_validated(api: Api, receiver: Receiver) -> None:
    for value in ("parallelism=0", "rate=x", "speed=3", "period=8d", "rate=1, period=0s"):
        status, answer = await api.call(
            "POST", "/v2/publish/" + receiver.url("/v"), headers=_flow("k", value)
        )
        assert status == 400, (value, answer)
    status, answer = await api.call(
        "POST",
        "/v2/publish/" + receiver.url("/v"),
        headers={"Upstash-Flow-Control-Value": "rate=1"},
    )
    assert status == 400 and "Key" in answer["error"]
    # The Python SDK sends an empty value when given only a key: no limits, delivered.
    message_id = await api.publish(receiver.url("/v"), "x", _flow("bare", ""))
    await api.wait_state(message_id, "DELIVERED")
    info = await _info(api, "bare")
    assert info["parallelismMax"] == 0 and info["rateMax"] == 0


async def test_management_api_shapes(api: Api, receiver: Receiver) -> None:
    assert (await api.call("GET", "/v2/flowControl/unknown"))[0] == 404
    for key in ("alpha", "beta"):
        await api.publish(receiver.url("/s"), "x", _flow(key, "parallelism=4"))
    status, listed = await api.call("GET", "/v2/flowControl")
    assert status == 200 and [i["flowControlKey"] for i in listed] == ["alpha", "beta"]
    assert all(set(i) == INFO_FIELDS for i in listed)
    status, found = await api.call("GET", "/v2/flowControl", params={"search": "bet"})
    assert [i["flowControlKey"] for i in found] == ["beta"]
    status, answer = await api.call("GET", "/v2/globalParallelism")
    assert status == 200 and set(answer) == {"parallelismMax", "parallelismCount"}
    assert answer["parallelismMax"] > 0 and answer["parallelismCount"] >= 0
    status, _ = await api.call("POST", "/v2/flowControl/alpha/pin")
    assert status == 400


async def test_queue_and_key_together(api: Api, receiver: Receiver) -> None:
    """A queued message with a key waits for its queue first, then for its key."""
    gate = _Gate()
    receiver.respond("/both", gate)
    await api.call("POST", "/v2/queues", json={"queueName": "keyed", "parallelism": 3})
    ids = []
    for i in range(3):
        status, answer = await api.call(
            "POST",
            "/v2/enqueue/keyed/" + receiver.url("/both"),
            data=str(i),
            headers=_flow("narrow", "parallelism=1"),
        )
        assert status == 201, answer
        ids.append(answer["messageId"])
    await _eventually(lambda: gate.holding == 1)
    await asyncio.sleep(0.3)
    assert gate.holding == 1
    gate.open.set()
    for message_id in ids:
        await api.wait_state(message_id, "DELIVERED")
    assert [r.body for r in receiver.requests] == [b"0", b"1", b"2"]
