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


async def test_filters_on_host_path_flow_control_key_and_caller_ip(
    api: Api, receiver: Receiver
) -> None:
    """The filters the TypeScript SDK sends besides the Python SDK's; values of one filter are
    OR-ed, filters AND-ed, and a page stays full and continues where it stopped."""
    port = receiver.url("").rsplit(":", 1)[1]
    later = {"Upstash-Delay": "1h"}
    flow = {**later, "Upstash-Flow-Control-Value": "parallelism=1"}
    one = await api.publish(
        f"http://127.0.0.1:{port}/a/one", "x", {**flow, "Upstash-Flow-Control-Key": "k1"}
    )
    two = await api.publish(
        f"http://localhost:{port}/b", "x", {**flow, "Upstash-Flow-Control-Key": "k2"}
    )
    three = await api.publish(f"http://127.0.0.1:{port}/b", "x", later)

    async def ids(*params: tuple[str, str]) -> list[str]:
        status, page = await api.call("GET", "/v2/events", params=list(params))
        assert status == 200, page
        return [e["messageId"] for e in page["events"]]

    assert await ids(("host", "localhost")) == [two]
    assert await ids(("path", "/b")) == [three, two]
    assert await ids(("host", "127.0.0.1"), ("path", "/b")) == [three]
    assert await ids(("path", "/a/one"), ("path", "/b"), ("state", "CREATED")) == [three, two, one]
    assert await ids(("flowControlKey", "k1")) == [one]
    assert await ids(("flowControlKey", "k1"), ("flowControlKey", "k2")) == [two, one]
    assert await ids(("callerIp", "127.0.0.1")) == [three, two, one]
    assert await ids(("callerIp", "10.9.9.9")) == []
    assert await ids(("flowControlKey", "k2"), ("messageId", two)) == [two]
    assert await ids(("flowControlKey", "k2"), ("messageId", one)) == []

    _, page = await api.call("GET", "/v2/events", params={"path": "/b", "count": "1"})
    assert [e["messageId"] for e in page["events"]] == [three] and page["cursor"]
    _, page = await api.call(
        "GET", "/v2/events", params={"path": "/b", "count": "1", "cursor": page["cursor"]}
    )
    assert [e["messageId"] for e in page["events"]] == [two] and not page.get("cursor")
    event = (await api.events(messageId=one))[0]
    assert (event["callerIp"], event["flowControlKey"]) == ("127.0.0.1", "k1")
