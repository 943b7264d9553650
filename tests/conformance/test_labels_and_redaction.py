"""`Upstash-Label` kept and filterable; `Upstash-Redact-Fields` delivered as sent, shown as
``REDACTED:<sha256>`` by every answer."""

from __future__ import annotations

import hashlib

from tests.conftest import Api, Receiver


def redacted(value: str) -> str:
    return "REDACTED:" + hashlib.sha256(value.encode()).hexdigest()


async def test_labels(api: Api, receiver: Receiver) -> None:
    later = {"Upstash-Delay": "1h"}
    both = await api.publish(receiver.url("/l"), "x", headers={**later, "Upstash-Label": "a, b"})
    other = await api.publish(receiver.url("/l"), "x", headers={**later, "Upstash-Label": "ab"})
    _, message = await api.call("GET", f"/v2/messages/{both}")
    assert message["label"] == "a,b" and message["labels"] == ["a", "b"]

    async def labelled(*labels: str) -> set[str]:
        status, page = await api.call("GET", "/v2/events", params=[("label", v) for v in labels])
        assert status == 200, page
        return {e["messageId"] for e in page["events"]}

    assert await labelled("b") == {both}
    assert await labelled("ab") == {other}
    assert await labelled("a,zz") == {both}
    assert await labelled("zz", "ab") == {other}
    assert await labelled("c") == set()


async def test_redacted_fields(api: Api, receiver: Receiver) -> None:
    receiver.respond("/secret", 500, 200)
    message_id = await api.publish(
        receiver.url("/secret"),
        "card=4242",
        headers={
            "Upstash-Forward-Authorization": "Bearer s3cret",
            "Upstash-Forward-X-Kept": "1",
            "Upstash-Redact-Fields": "body, header[authorization]",
            "Upstash-Retries": "0",
        },
    )
    [first] = await receiver.wait_for(1, "/secret")
    assert first.body == b"card=4242" and first.headers["Authorization"] == "Bearer s3cret"
    await api.wait_state(message_id, "FAILED")

    status, message = await api.call("GET", f"/v2/messages/{message_id}")
    assert message["body"] == redacted("card=4242")
    assert message["header"]["Authorization"] == [redacted("Bearer s3cret")]
    assert message["header"]["X-Kept"] == ["1"]
    [created] = await api.events(messageId=message_id, state="CREATED")
    assert created["header"]["Authorization"] == [redacted("Bearer s3cret")]
    assert "redact" not in created
    status, dlq = await api.call("GET", "/v2/dlq", params={"messageId": message_id})
    [entry] = dlq["messages"]
    assert entry["body"] == redacted("card=4242") and entry["header"]["X-Kept"] == ["1"]

    # a DLQ retry delivers the original values again
    status, answer = await api.call("POST", f"/v2/dlq/retry/{entry['dlqId']}")
    assert status == 201
    [_, second] = await receiver.wait_for(2, "/secret")
    assert second.body == b"card=4242" and second.headers["Authorization"] == "Bearer s3cret"
    status, retried = await api.call("GET", f"/v2/messages/{answer['messageId']}")
    assert retried["body"] == redacted("card=4242")


async def test_redacting_every_header_and_a_bad_field(api: Api, receiver: Receiver) -> None:
    message_id = await api.publish(
        receiver.url("/h"),
        "plain",
        headers={
            "Upstash-Forward-A": "1",
            "Content-Type": "text/plain",
            "Upstash-Redact-Fields": "headers",
            "Upstash-Delay": "1h",
        },
    )
    status, message = await api.call("GET", f"/v2/messages/{message_id}")
    assert message["body"] == "plain"
    assert message["header"] == {"A": [redacted("1")], "Content-Type": [redacted("text/plain")]}
    status, answer = await api.call(
        "POST",
        "/v2/publish/" + receiver.url("/h"),
        headers={"Upstash-Redact-Fields": "body,cookies"},
    )
    assert status == 400 and "Upstash-Redact-Fields" in answer["error"]
