"""Messages and the DLQ in bulk: cancel by filter and all, DLQ filters, delete and retry by
filter with a cursor."""

from __future__ import annotations

from typing import Any

from relay.clock import ManualClock
from tests.conftest import Api, Receiver


async def test_cancel_by_filter_then_all(clock: ManualClock, api: Api, receiver: Receiver) -> None:
    later = {"Upstash-Delay": "1h"}
    billing = await api.publish(
        receiver.url("/a"), "x", headers={**later, "Upstash-Label": "billing,eu"}
    )
    plain = await api.publish(receiver.url("/a"), "x", headers=later)
    keyed = await api.publish(
        receiver.url("/k"), "x", headers={**later, "Upstash-Flow-Control-Key": "tenant-k"}
    )
    eu = await api.publish(receiver.url("/b"), "x", headers={**later, "Upstash-Label": "eu"})
    done = await api.publish(receiver.url("/now"), "x")
    await api.wait_state(done, "DELIVERED")

    async def cancel(*params: tuple[str, str]) -> Any:
        status, answer = await api.call(
            "DELETE", "/v2/messages", params=[*params, ("count", "100")]
        )
        assert status == 200, answer
        return answer["cancelled"]

    assert await cancel(("url", receiver.url("/a")), ("label", "billing")) == 1
    assert await cancel(("fromDate", str(clock.now_ms() + 1))) == 0
    assert await cancel(("host", "example.com")) == 0
    assert await cancel(("flowControlKey", "tenant-k")) == 1
    assert await cancel(("label", "eu"), ("label", "other")) == 1  # billing is cancelled already
    assert await cancel() == 1  # neither ids nor filters: all pending, the delivered one stays
    assert [await api.states(m) for m in (billing, eu, plain, keyed)] == [
        ["CREATED", "CANCELED"]
    ] * 4
    assert (await api.states(done))[-1] == "DELIVERED"
    status, answer = await api.call("DELETE", "/v2/messages", params={"fromDate": "soon"})
    assert status == 400 and "fromDate" in answer["error"]


async def _fail_to_dlq(
    api: Api, receiver: Receiver, path: str, label: str | None, **extra: str
) -> str:
    headers = {"Upstash-Retries": "0", **extra}
    if label is not None:
        headers["Upstash-Label"] = label
    message_id = await api.publish(receiver.url(path), "x", headers=headers)
    await api.wait_state(message_id, "FAILED")
    return message_id


async def _dlq(api: Api, *params: tuple[str, str]) -> list[dict[str, Any]]:
    status, answer = await api.call("GET", "/v2/dlq", params=list(params))
    assert status == 200, answer
    return list(answer["messages"])


async def test_dlq_filters(api: Api, receiver: Receiver) -> None:
    receiver.respond("/x", 500)
    receiver.respond("/y", 500)
    receiver.respond("/z", 404)
    x = await _fail_to_dlq(api, receiver, "/x", "l1,shared")
    y = await _fail_to_dlq(
        api,
        receiver,
        "/y",
        "l2,shared",
        **{"Upstash-Flow-Control-Key": "tenant-y", "Upstash-Flow-Control-Value": "parallelism=1"},
    )
    z = await _fail_to_dlq(api, receiver, "/z", None)

    def ids(entries: list[dict[str, Any]]) -> set[str]:
        return {e["messageId"] for e in entries}

    assert ids(await _dlq(api, ("label", "l1"))) == {x}
    assert ids(await _dlq(api, ("label", "shared"))) == {x, y}
    assert ids(await _dlq(api, ("label", "l1,l2"))) == {x, y}
    assert ids(await _dlq(api, ("responseStatus", "404"))) == {z}
    assert ids(await _dlq(api, ("url", receiver.url("/x")), ("url", receiver.url("/z")))) == {x, z}
    assert ids(await _dlq(api, ("callerIp", "127.0.0.1"))) == {x, y, z}
    assert await _dlq(api, ("callerIp", "192.0.2.1")) == []
    assert await _dlq(api, ("flowControlKey", "none-such")) == []
    assert ids(await _dlq(api, ("flowControlKey", "tenant-y"))) == {y}
    assert ids(await _dlq(api, ("callerIp", "127.0.0.1"), ("label", "l2"))) == {y}
    [entry] = await _dlq(api, ("messageId", z))
    assert ids(await _dlq(api, ("dlqIds", entry["dlqId"]))) == {z}
    page = await _dlq(api, ("count", "2"), ("callerIp", "127.0.0.1"))
    assert len(page) == 2
    _, answer = await api.call("GET", "/v2/dlq", params={"count": "2", "callerIp": "127.0.0.1"})
    _, rest = await api.call(
        "GET", "/v2/dlq", params={"count": "2", "callerIp": "127.0.0.1", "cursor": answer["cursor"]}
    )
    assert ids(answer["messages"] + rest["messages"]) == {x, y, z} and "cursor" not in rest


async def test_dlq_delete_and_retry_by_filter(api: Api, receiver: Receiver) -> None:
    receiver.respond("/gone", 500)
    receiver.respond("/again", 500, 200)
    for _ in range(3):
        await _fail_to_dlq(api, receiver, "/gone", "old")
    again = await _fail_to_dlq(api, receiver, "/again", "retry-me")

    status, answer = await api.call("POST", "/v2/dlq/retry", params={"label": "retry-me"})
    assert status == 200 and "cursor" not in answer
    [response] = answer["responses"]
    await api.wait_state(response["messageId"], "DELIVERED")
    created = (await api.events(messageId=response["messageId"], state="CREATED"))[0]
    assert created["sourceMessageId"] == again

    status, answer = await api.call("DELETE", "/v2/dlq", params={"label": "old", "count": "2"})
    assert status == 200 and answer["deleted"] == 2 and answer["cursor"]
    status, answer = await api.call(
        "DELETE", "/v2/dlq", params={"label": "old", "count": "2", "cursor": answer["cursor"]}
    )
    assert answer == {"deleted": 1}
    assert await _dlq(api) == []
    # no ids and no filters: everything (the TypeScript SDK's `{all: true}`)
    await _fail_to_dlq(api, receiver, "/gone", None)
    assert (await api.call("DELETE", "/v2/dlq", params={"count": "100"}))[1] == {"deleted": 1}
    assert (await api.call("POST", "/v2/dlq/retry"))[1] == {"responses": []}
