"""The official `qstash` Python SDK publishes to `relay dev`; the official `qstash.Receiver`
verifies the delivery at a real receiver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from qstash import AsyncQStash

from relay.protocol import (
    DEV_CURRENT_SIGNING_KEY,
    DEV_NEXT_SIGNING_KEY,
    DEV_TOKEN,
    DEV_WEBHOOK_SECRET,
)
from tests.conftest import OfficialVerdicts
from tests.conftest import Receiver as Destination
from tests.e2e import sdk_scenarios
from tests.e2e.process import RelayProcess


@pytest.fixture
def relay_dev(tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path / "dev.db").start()
    try:
        yield process
    finally:
        assert process.stop() == 0, "".join(process.output)


def test_relay_dev_prints_the_dev_credentials(relay_dev: RelayProcess) -> None:
    assert relay_dev.env == {
        "QSTASH_URL": f"http://localhost:{relay_dev.port}",
        "QSTASH_TOKEN": DEV_TOKEN,
        "QSTASH_CURRENT_SIGNING_KEY": DEV_CURRENT_SIGNING_KEY,
        "QSTASH_NEXT_SIGNING_KEY": DEV_NEXT_SIGNING_KEY,
        "RELAY_WEBHOOK_SECRET": DEV_WEBHOOK_SECRET,
    }


async def test_official_sdk_publish_json_with_delay(
    relay_dev: RelayProcess, receiver: Destination
) -> None:
    verify = verdicts = OfficialVerdicts(
        current_signing_key=relay_dev.env["QSTASH_CURRENT_SIGNING_KEY"],
        next_signing_key=relay_dev.env["QSTASH_NEXT_SIGNING_KEY"],
    )

    receiver.respond("/hook", verify)
    client = AsyncQStash(relay_dev.env["QSTASH_TOKEN"], base_url=relay_dev.url)
    published_at = time.time()
    result = await client.message.publish_json(
        url=receiver.url("/hook") + "?tenant=a&note=two%20words",
        body={"order": 42, "name": "Zoë"},
        delay="2s",
        headers={"X-Trace": "t-1"},
    )
    [delivery] = await receiver.wait_for(1, "/hook", timeout=15)
    assert verdicts == ["accepted"]
    assert delivery.at - published_at >= 2.0
    assert delivery.headers["Upstash-Message-Id"] == result.message_id  # type: ignore[union-attr]
    assert delivery.headers["X-Trace"] == "t-1"
    assert delivery.url.endswith("/hook?tenant=a&note=two%20words")
    assert delivery.body == b'{"order": 42, "name": "Zo\\u00eb"}'

    message = await client.message.get(result.message_id)  # type: ignore[union-attr]
    assert message.message_id == result.message_id  # type: ignore[union-attr]
    for _ in range(100):
        logs = await client.log.list(filter={"message_id": message.message_id})
        if any(entry.state.value == "DELIVERED" for entry in logs.logs):
            break
        await asyncio.sleep(0.05)
    states = [entry.state.value for entry in reversed(logs.logs)]
    assert states == ["CREATED", "ACTIVE", "DELIVERED"]


async def test_official_sdk_batch_dedup_and_cancel(
    relay_dev: RelayProcess, receiver: Destination
) -> None:
    client = AsyncQStash(relay_dev.env["QSTASH_TOKEN"], base_url=relay_dev.url)
    first = await client.message.publish(
        url=receiver.url("/d"), body="x", deduplication_id="once", delay=3600
    )
    again = await client.message.publish(
        url=receiver.url("/d"), body="x", deduplication_id="once", delay=3600
    )
    assert again.message_id == first.message_id and again.deduplicated  # type: ignore[union-attr]
    await client.message.cancel(first.message_id)  # type: ignore[union-attr]
    batch = await client.message.batch_json(
        [{"url": receiver.url("/b1"), "body": {"n": 1}}, {"url": receiver.url("/b2"), "body": 2}]
    )
    assert len(batch) == 2
    await receiver.wait_for(1, "/b1")
    await receiver.wait_for(1, "/b2")


def _client(relay_dev: RelayProcess) -> AsyncQStash:
    return AsyncQStash(relay_dev.env["QSTASH_TOKEN"], base_url=relay_dev.url)


async def test_official_sdk_url_group(relay_dev: RelayProcess, receiver: Destination) -> None:
    await sdk_scenarios.url_group_fan_out(_client(relay_dev), receiver)


async def test_official_sdk_dlq_list_get_retry_delete(
    relay_dev: RelayProcess, receiver: Destination
) -> None:
    await sdk_scenarios.dlq_get_retry_delete(
        _client(relay_dev), receiver, base_url=relay_dev.url, token=relay_dev.env["QSTASH_TOKEN"]
    )


async def test_rotation_signs_with_the_new_key_and_survives_a_restart(
    relay_dev: RelayProcess, receiver: Destination
) -> None:
    before, after = await sdk_scenarios.rotation_then_delivery(_client(relay_dev), receiver)
    assert relay_dev.stop() == 0
    relay_dev.start()
    assert relay_dev.env["QSTASH_CURRENT_SIGNING_KEY"] == after.current  # what it prints
    assert await _client(relay_dev).signing_key.get() == after
    await sdk_scenarios.signed_with(
        _client(relay_dev), receiver, after, retired=before.current, path="/after-restart"
    )
