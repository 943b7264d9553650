"""Following a message's whole life through the logs API, with its filters and cursor."""

from __future__ import annotations

from aiohttp import web

from relay.clock import ManualClock
from relay.server import EmbeddedRelay
from tests.conftest import Api, Receiver


async def test_delivered_life(api: Api, receiver: Receiver) -> None:
    receiver.respond("/ok", lambda r: web.Response(text="fine"))
    message_id = await api.publish(receiver.url("/ok"), "x", headers={"Upstash-Label": "l1"})
    await api.wait_state(message_id, "DELIVERED")
    events = list(reversed(await api.events(messageId=message_id)))
    assert [e["state"] for e in events] == ["CREATED", "ACTIVE", "DELIVERED"]
    assert all(e["messageId"] == message_id and e["url"] == receiver.url("/ok") for e in events)
    assert events[0]["label"] == "l1" and events[0]["maxRetries"] == 3
    assert events[-1]["responseStatus"] == 200 and events[-1]["responseBody"] == "fine"
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)


async def test_exhausted_life(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    receiver.respond("/fail", 500)
    message_id = await api.publish(
        receiver.url("/fail"), "x", headers={"Upstash-Retries": "1", "Upstash-Retry-Delay": "5"}
    )
    await api.wait_state(message_id, "RETRY")
    clock.advance(5)
    relay.worker.notify()
    await api.wait_state(message_id, "FAILED")
    states = await api.states(message_id)
    assert states == ["CREATED", "ACTIVE", "RETRY", "ACTIVE", "FAILED"]
    failed = (await api.events(messageId=message_id))[0]
    assert failed["responseStatus"] == 500 and failed["dlqId"]


async def test_filters_and_cursor(api: Api, receiver: Receiver) -> None:
    ids = [
        await api.publish(receiver.url(f"/f{i}"), "x", headers={"Upstash-Delay": "1h"})
        for i in range(5)
    ]
    created = await api.events(state="CREATED")
    assert {e["messageId"] for e in created} == set(ids)
    assert await api.events(url=receiver.url("/f3")) == [
        e for e in created if e["messageId"] == ids[3]
    ]
    status, page = await api.call("GET", "/v2/events", params={"count": "2"})
    seen = [e["messageId"] for e in page["events"]]
    while page.get("cursor"):
        status, page = await api.call(
            "GET", "/v2/events", params={"count": "2", "cursor": page["cursor"]}
        )
        seen += [e["messageId"] for e in page["events"]]
    assert seen == list(reversed(ids))
    newest = created[0]["time"]
    assert len(await api.events(fromDate=str(newest + 1))) == 0
    status, _answer = await api.call("GET", "/v2/events", params={"state": "SLEEPING"})
    assert status == 400
    status, logs = await api.call("GET", "/v2/logs", params={"messageId": ids[0]})
    assert [e["state"] for e in logs["logs"]] == ["CREATED"]
