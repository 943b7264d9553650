"""The official `qstash` Python SDK's DLQ, logs and message namespaces, unchanged, on both
backends: labels, redaction, DLQ filters and bulk delete, bulk cancel."""

from __future__ import annotations

import hashlib

from qstash import AsyncQStash
from qstash.log import LogState

from relay.server import EmbeddedRelay
from tests.conftest import Api, Receiver


async def test_official_sdk_dlq_logs_and_bulk_cancel(
    relay: EmbeddedRelay, api: Api, receiver: Receiver
) -> None:
    client = AsyncQStash(relay.service.token, base_url=relay.url)
    receiver.respond("/down", 500)
    failed = await client.message.publish_json(
        url=receiver.url("/down"),
        body={"card": 4242},
        retries=0,
        label="payments",
        redact={"body": True, "header": ["Authorization"]},
        headers={"Authorization": "Bearer s3cret"},
    )
    await api.wait_state(failed.message_id, "FAILED")  # type: ignore[union-attr]
    [delivered] = await receiver.wait_for(1, "/down")
    assert delivered.body == b'{"card": 4242}'

    logs = await client.log.list(filter={"label": "payments", "state": LogState.FAILED})
    assert [entry.message_id for entry in logs.logs] == [failed.message_id]  # type: ignore[union-attr]
    page = await client.dlq.list(filter={"label": "payments", "response_status": 500})
    [entry] = page.messages
    assert entry.body == "REDACTED:" + hashlib.sha256(b'{"card": 4242}').hexdigest()
    assert entry.response_status == 500 and page.cursor is None
    assert (await client.dlq.list(filter={"label": "other"})).messages == []
    assert (await client.dlq.get(entry.dlq_id)).message_id == entry.message_id
    assert await client.dlq.delete_many([entry.dlq_id]) == 1

    later = [
        await client.message.publish_json(url=receiver.url("/later"), body={}, delay="1h")
        for _ in range(3)
    ]
    ids = [result.message_id for result in later]  # type: ignore[union-attr]
    assert await client.message.cancel_many(ids[:1]) == 1
    assert await client.message.cancel_all() == 2
    assert (await client.message.get(ids[2])).message_id == ids[2]
