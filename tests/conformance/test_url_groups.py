"""URL groups: endpoints upserted and removed, publish fans out one message per endpoint."""

from __future__ import annotations

from relay.server import EmbeddedRelay
from relay.signing import verify
from tests.conftest import Api, Receiver


async def test_fan_out_to_every_endpoint(
    relay: EmbeddedRelay, api: Api, receiver: Receiver
) -> None:
    endpoints = [{"url": receiver.url("/a"), "name": "a"}, {"url": receiver.url("/b")}]
    status, _ = await api.call("POST", "/v2/topics/orders/endpoints", json={"endpoints": endpoints})
    assert status == 200
    status, group = await api.call("GET", "/v2/topics/orders")
    assert group["name"] == "orders" and group["endpoints"] == endpoints
    assert group["createdAt"] <= group["updatedAt"]
    status, answer = await api.call("POST", "/v2/publish/orders", data="hi")
    assert status == 201 and isinstance(answer, list) and len(answer) == 2
    assert [a["url"] for a in answer] == [receiver.url("/a"), receiver.url("/b")]
    assert answer[0]["messageId"] != answer[1]["messageId"]
    [a] = await receiver.wait_for(1, "/a")
    [b] = await receiver.wait_for(1, "/b")
    assert a.headers["Upstash-Topic-Name"] == "orders"
    assert a.headers["Upstash-Message-Id"] == answer[0]["messageId"]
    verify(b.headers["Upstash-Signature"], relay.service.keys, body=b"hi", url=b.url)
    status, message = await api.call("GET", f"/v2/messages/{answer[0]['messageId']}")
    assert message["topicName"] == "orders" and message["endpointName"] == "a"
    events = await api.events(topicName="orders", state="CREATED")
    assert len(events) == 2


async def test_batch_item_to_a_group_answers_a_nested_list(api: Api, receiver: Receiver) -> None:
    endpoints = {"endpoints": [{"url": receiver.url("/x")}, {"url": receiver.url("/y")}]}
    await api.call("POST", "/v2/topics/g/endpoints", json=endpoints)
    status, answer = await api.call(
        "POST",
        "/v2/batch",
        json=[
            {"destination": "g", "headers": {}, "body": "1"},
            {"destination": receiver.url("/z")},
        ],
    )
    assert status == 201
    assert isinstance(answer[0], list) and len(answer[0]) == 2 and "messageId" in answer[1]


async def test_upsert_update_remove_delete(api: Api, receiver: Receiver) -> None:
    path = "/v2/topics/grp/endpoints"
    await api.call("POST", path, json={"endpoints": [{"url": receiver.url("/1"), "name": "one"}]})
    await api.call("POST", path, json={"endpoints": [{"url": receiver.url("/1"), "name": "uno"}]})
    await api.call("POST", path, json={"endpoints": [{"url": receiver.url("/2"), "name": "two"}]})
    status, group = await api.call("GET", "/v2/topics/grp")
    assert [e.get("name") for e in group["endpoints"]] == ["uno", "two"]
    await api.call("DELETE", path, json={"endpoints": [{"name": "uno"}]})
    status, groups = await api.call("GET", "/v2/topics")
    assert [g["name"] for g in groups] == ["grp"] and len(groups[0]["endpoints"]) == 1
    await api.call("DELETE", path, json={"endpoints": [{"url": receiver.url("/2")}]})
    status, _answer = await api.call("GET", "/v2/topics/grp")
    assert status == 404, "a group whose last endpoint went is gone"
    await api.call("POST", path, json={"endpoints": [{"url": receiver.url("/3")}]})
    assert (await api.call("DELETE", "/v2/topics/grp"))[0] == 200
    assert (await api.call("DELETE", "/v2/topics/grp"))[0] == 404


async def test_bad_group_input(api: Api) -> None:
    status, answer = await api.call("POST", "/v2/publish/missing-group", data="x")
    assert status == 404 and "missing-group" in answer["error"]
    status, answer = await api.call("POST", "/v2/topics/g/endpoints", json={"endpoints": []})
    assert status == 400
    status, answer = await api.call(
        "POST", "/v2/topics/g/endpoints", json={"endpoints": [{"url": "ftp://x"}]}
    )
    assert status == 400 and "url" in answer["error"]
    status, answer = await api.call("POST", "/v2/topics/g/endpoints", data="nope")
    assert status == 400
    assert (await api.call("GET", "/v2/topics/g"))[0] == 404
