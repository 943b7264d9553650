"""What the official SDKs do with URL groups, the DLQ and signing keys, written once and run
against `relay dev` (tests/e2e/test_qstash_sdk.py) and against template.yaml's stack on moto
(tests/e2e/test_aws_stack_sdk.py). Deliveries go to a real receiver; `qstash.Receiver` judges
every signature."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from qstash import AsyncQStash
from qstash.message import PublishUrlGroupResponse
from qstash.signing_key import SigningKey

from tests.conftest import OfficialVerdicts, Received, Receiver
from tests.e2e.test_qstash_ts_sdk import run_node

DELIVERY_TIMEOUT = 30  # seconds; the AWS stack on moto is the slow one


async def url_group_fan_out(client: AsyncQStash, receiver: Receiver) -> None:
    """``url_group``: upsert, get, list, publish to the group (one message per endpoint, each
    delivered with `Upstash-Topic-Name`), remove an endpoint by name, delete."""
    a, b = receiver.url("/a"), receiver.url("/b")
    await client.url_group.upsert_endpoints(
        url_group="team", endpoints=[{"url": a}, {"url": b, "name": "b"}]
    )
    group = await client.url_group.get("team")
    assert sorted((e.url, e.name) for e in group.endpoints) == [(a, None), (b, "b")]
    assert [g.name for g in await client.url_group.list()] == ["team"]

    published = await client.message.publish_json(url_group="team", body={"to": "all"})
    assert isinstance(published, list)
    assert all(isinstance(p, PublishUrlGroupResponse) for p in published)
    ids = {p.url: p.message_id for p in published}  # type: ignore[union-attr]
    assert sorted(ids) == [a, b] and len(set(ids.values())) == 2
    for url, path in ((a, "/a"), (b, "/b")):
        [delivery] = await receiver.wait_for(1, path, timeout=DELIVERY_TIMEOUT)
        assert delivery.headers["Upstash-Topic-Name"] == "team"
        assert delivery.headers["Upstash-Message-Id"] == ids[url]
        assert delivery.body == b'{"to": "all"}'

    await client.url_group.remove_endpoints(url_group="team", endpoints=[{"name": "b"}])
    assert [e.url for e in (await client.url_group.get("team")).endpoints] == [a]
    await client.url_group.delete("team")
    assert await client.url_group.list() == []


async def dlq_get_retry_delete(
    client: AsyncQStash, receiver: Receiver, *, base_url: str, token: str
) -> None:
    """``dlq``: failed messages listed (with a filter), read, retried with a new message id
    (by the TypeScript SDK: the Python SDK 3.4.0 has no DLQ retry), deleted one by one and in
    bulk."""
    receiver.respond("/down", 500, 500, 500, 200)  # the retry (fourth request) gets through
    failed = [
        await client.message.publish_json(
            url=receiver.url("/down"), body={"n": n}, retries=0, label="dlq-test"
        )
        for n in range(3)
    ]
    ids = [f.message_id for f in failed]  # type: ignore[union-attr]
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while len(entries := (await client.dlq.list(filter={"label": "dlq-test"})).messages) < 3:
        assert time.monotonic() < deadline, f"the DLQ holds {len(entries)} of 3"
        await asyncio.sleep(0.1)
    assert sorted(e.message_id for e in entries) == sorted(ids)
    assert {e.response_status for e in entries} == {500}
    first, second, third = sorted(entries, key=lambda e: ids.index(e.message_id))
    got = await client.dlq.get(first.dlq_id)
    assert (got.message_id, got.url, got.label) == (ids[0], receiver.url("/down"), "dlq-test")

    answer = await run_node(
        "dlq.mjs", {"baseUrl": base_url, "token": token, "dlqIds": [first.dlq_id]}
    )
    [response] = answer["responses"]
    assert response["messageId"] not in ids
    [*_, retried] = await receiver.wait_for(4, "/down", timeout=DELIVERY_TIMEOUT)
    assert retried.headers["Upstash-Message-Id"] == response["messageId"]
    assert retried.body == b'{"n": 0}'

    await client.dlq.delete(second.dlq_id)
    assert await client.dlq.delete_many([third.dlq_id, second.dlq_id]) == 1
    assert (await client.dlq.list(filter={"label": "dlq-test"})).messages == []


async def rotation_then_delivery(
    client: AsyncQStash, receiver: Receiver
) -> tuple[SigningKey, SigningKey]:
    """``signing_key``: a delivery before the rotation verifies with the old pair; right
    after `rotate()` the next one verifies with the new pair, and not with the old current key
    alone. Returns the keys before and after."""
    before = await client.signing_key.get()
    old = OfficialVerdicts(before.current, before.next)
    receiver.respond("/before", old)
    await client.message.publish_json(url=receiver.url("/before"), body={"n": 0})
    await receiver.wait_for(1, "/before", timeout=DELIVERY_TIMEOUT)
    assert old == ["accepted"]

    after = await client.signing_key.rotate()
    assert after.current == before.next and after.next not in (before.current, before.next)
    assert await client.signing_key.get() == after
    await signed_with(client, receiver, after, retired=before.current, path="/after")
    return before, after


async def signed_with(
    client: AsyncQStash, receiver: Receiver, keys: SigningKey, *, retired: str, path: str
) -> None:
    """Publish to ``path``: `qstash.Receiver` with ``keys`` accepts the delivery, and one that
    holds only the ``retired`` key (the current one before the rotation) rejects it."""
    new = OfficialVerdicts(keys.current, keys.next)
    old = OfficialVerdicts(retired, retired)

    def judge(request: Received) -> web.Response:
        old(request)
        return new(request)

    receiver.respond(path, judge)
    await client.message.publish_json(url=receiver.url(path), body={"signed": "new"})
    await receiver.wait_for(1, path, timeout=DELIVERY_TIMEOUT)
    assert new == ["accepted"] and old[0].startswith("rejected")
