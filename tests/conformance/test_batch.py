"""`POST /v2/batch`: one answer per item, in order; all or nothing."""

from __future__ import annotations

import json

from relay.server import EmbeddedRelay
from tests.conftest import Api, Receiver


async def test_batch_publishes_each_item(
    relay: EmbeddedRelay, api: Api, receiver: Receiver
) -> None:
    items = [
        {
            "destination": receiver.url("/b1"),
            "headers": {"Upstash-Forward-H": "1"},
            "body": "one",
            "queue": None,
        },
        {
            "destination": receiver.url("/b2?x=1"),
            "headers": {"content-type": "application/json"},
            "body": '{"n":2}',
        },
        {"destination": receiver.url("/b3"), "headers": {}},
    ]
    status, answer = await api.call("POST", "/v2/batch", json=items)
    assert status == 201 and len(answer) == 3
    assert all(a["messageId"].startswith("msg_") for a in answer)
    [one] = await receiver.wait_for(1, "/b1")
    [two] = await receiver.wait_for(1, "/b2")
    [three] = await receiver.wait_for(1, "/b3")
    assert one.body == b"one" and one.headers["H"] == "1"
    assert two.url.endswith("/b2?x=1") and two.headers["Content-Type"] == "application/json"
    assert three.body == b""
    assert one.headers["Upstash-Message-Id"] == answer[0]["messageId"]


async def test_batch_dedup_answers_per_item(api: Api, receiver: Receiver) -> None:
    item = {
        "destination": receiver.url("/bd"),
        "headers": {"Upstash-Deduplication-Id": "z"},
        "body": "x",
    }
    status, answer = await api.call("POST", "/v2/batch", json=[item, item])
    assert status == 201
    assert answer[1] == {"messageId": answer[0]["messageId"], "deduplicated": True}


async def test_one_bad_item_stores_nothing(api: Api, receiver: Receiver) -> None:
    items = [
        {"destination": receiver.url("/ok"), "headers": {}, "body": "x"},
        {"destination": receiver.url("/bad"), "headers": {"Upstash-Delay": "soon"}, "body": "x"},
    ]
    status, answer = await api.call("POST", "/v2/batch", json=items)
    assert status == 400 and answer["error"].startswith("batch item 1:")
    assert await api.events() == []


async def test_batch_body_must_be_an_array(api: Api) -> None:
    for body in ("{}", "not json", json.dumps([{"headers": {}}]), json.dumps([])):
        status, answer = await api.call("POST", "/v2/batch", data=body)
        assert status == 400 and answer["error"], body
