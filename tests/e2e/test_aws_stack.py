"""template.yaml's stack run locally (infra/): moto server for DynamoDB, SQS, S3 and Secrets
Manager, the HttpApi and the SQS event source emulated, lambda/*.py called unchanged.

The official `qstash` SDK publishes through the emulated HttpApi, lambda/deliver.py delivers to a
real local receiver, and `qstash.Receiver` verifies the signature.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import boto3
import pytest
from qstash import AsyncQStash
from qstash.message import BatchJsonRequest

from infra.dev_aws import DEV_CREDENTIALS
from infra.emulator import LocalAws
from relay import protocol as p
from relay.backends.aws import AwsBackend
from relay.models import Lease, Settlement
from tests.conftest import QUICK_STACK, OfficialVerdicts, Receiver, assert_within_policies

pytestmark = pytest.mark.slow


@pytest.fixture
async def stack() -> AsyncIterator[LocalAws]:
    # A one-second visibility timeout (the template says 960 s) so that records the delivery
    # function reports as failed come back within the test.
    local = await LocalAws(
        credentials=DEV_CREDENTIALS, visibility_timeout=1, meter=True, parameters=QUICK_STACK
    ).start()
    try:
        yield local
    finally:
        await local.stop()
    assert_within_policies(local.denied)


async def wait_until(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_official_sdk_publish_and_batch_verified_by_official_receiver(
    stack: LocalAws, receiver: Receiver
) -> None:
    verify = verdicts = OfficialVerdicts(
        current_signing_key=p.DEV_CURRENT_SIGNING_KEY, next_signing_key=p.DEV_NEXT_SIGNING_KEY
    )

    receiver.respond("/hook", verify)
    client = AsyncQStash(p.DEV_TOKEN, base_url=stack.url)
    single = await client.message.publish_json(
        url=receiver.url("/hook") + "?tenant=a&note=two%20words",
        body={"order": 42, "name": "Zoë"},
        headers={"X-Trace": "t-1"},
    )
    batch = await client.message.batch_json(
        [BatchJsonRequest(url=receiver.url("/hook"), body={"n": n}) for n in range(3)]
    )
    deliveries = await receiver.wait_for(4, "/hook", timeout=20)
    assert verdicts == ["accepted"] * 4
    first = next(d for d in deliveries if d.headers["Upstash-Message-Id"] == single.message_id)  # type: ignore[union-attr]
    assert first.url.endswith("/hook?tenant=a&note=two%20words")
    # API Gateway lower-cases header names; forwarded headers arrive lower-cased.
    assert {k.lower(): v for k, v in first.headers.items()}["x-trace"] == "t-1"
    assert json.loads(first.body) == {"order": 42, "name": "Zoë"}
    ids = {single.message_id} | {b.message_id for b in batch}  # type: ignore[union-attr]
    assert {d.headers["Upstash-Message-Id"] for d in deliveries} == ids

    async def delivered() -> set[str]:
        done = set()
        for message_id in ids:
            logs = await client.log.list(filter={"message_id": message_id})
            if any(e.state.value == "DELIVERED" for e in logs.logs):
                done.add(message_id)
        return done

    deadline = time.monotonic() + 10
    while await delivered() != ids:
        assert time.monotonic() < deadline, "outcomes not stored"
        await asyncio.sleep(0.1)
    message = await client.message.get(single.message_id)  # type: ignore[union-attr]
    assert message.url.endswith("/hook?tenant=a&note=two%20words")
    # Every AWS request went through the meter; none of them failed the handlers.
    assert stack.meter is not None and stack.meter.usage.total("dynamodb") > 0
    assert all(c.invocations.errors == 0 for c in stack.containers.values())


def _crash_settle(monkeypatch: pytest.MonkeyPatch, path: str, times: int) -> list[str]:
    """Make the delivery function crash after attempting a message to ``path`` and before its
    outcome is stored, ``times`` times per message."""
    crashed: list[str] = []
    settle = AwsBackend.settle

    async def crashing(self: AwsBackend, lease: Lease, settlement: Settlement, now: int) -> bool:
        if lease.message.url.endswith(path) and crashed.count(lease.message.id) < times:
            crashed.append(lease.message.id)
            raise ConnectionResetError("simulated crash before the outcome was stored")
        return await settle(self, lease, settlement, now)

    monkeypatch.setattr(AwsBackend, "settle", crashing)
    return crashed


async def _publish_batch(stack: LocalAws, items: list[dict[str, Any]]) -> list[str]:
    client = AsyncQStash(p.DEV_TOKEN, base_url=stack.url)
    answers = await client.message.batch_json([BatchJsonRequest(**item) for item in items])
    return [a.message_id for a in answers]  # type: ignore[union-attr]


async def test_crash_mid_batch_only_failed_items_come_back(
    stack: LocalAws, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed = _crash_settle(monkeypatch, "/crash", times=1)
    ids = await _publish_batch(
        stack,
        [
            {"url": receiver.url(path), "body": {"n": n}}
            for n in range(3)
            for path in ("/ok", "/crash")
        ],
    )
    ok_ids, crash_ids = set(ids[0::2]), set(ids[1::2])
    await receiver.wait_for(3, "/ok")
    await receiver.wait_for(6, "/crash")  # each crashed once, then came back and was delivered
    deliver = stack.containers["DeliverFunction"].invocations
    reported = {
        item["itemIdentifier"] for result in deliver.results for item in result["batchItemFailures"]
    }
    source = stack.event_sources[0]
    await wait_until(lambda: source.deleted >= 6)
    await asyncio.sleep(1.5)  # anything else that was to come back would have by now
    assert set(crashed) == crash_ids
    # The crashed records, by their SQS message ids (and any copy that raced its own publish and
    # was deferred: reported too, and delivered once all the same).
    assert len(reported) >= 3
    assert [r.headers["Upstash-Message-Id"] for r in receiver.at("/ok")].count(
        next(iter(ok_ids))
    ) == 1
    assert sorted(r.headers["Upstash-Message-Id"] for r in receiver.at("/ok")) == sorted(ok_ids)
    crash_deliveries = [r.headers["Upstash-Message-Id"] for r in receiver.at("/crash")]
    assert sorted(crash_deliveries) == sorted(list(crash_ids) * 2)
    sqs = boto3.client("sqs", endpoint_url=stack.endpoint_url)
    attributes = sqs.get_queue_attributes(
        QueueUrl=source.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }


async def test_poison_message_reaches_the_dispatch_dlq_after_max_receives(
    stack: LocalAws, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _crash_settle(monkeypatch, "/poison", times=1000)
    [poison, fine] = await _publish_batch(
        stack,
        [
            {"url": receiver.url("/poison"), "body": "x"},
            {"url": receiver.url("/fine"), "body": "y"},
        ],
    )
    queue = stack.transformed.resources["DispatchQueue"]["Properties"]
    max_receives = int(queue["RedrivePolicy"]["maxReceiveCount"])
    dlq_url = stack.deployed.physical["DispatchDeadLetterQueue"].rsplit("/", 1)[1]
    sqs = boto3.client("sqs", endpoint_url=stack.endpoint_url)
    dlq = sqs.get_queue_url(QueueName=dlq_url)["QueueUrl"]
    moved: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while not moved:
        assert time.monotonic() < deadline, (
            "the poison message never reached the DLQ",
            len(receiver.at("/poison")),
            stack.containers["DeliverFunction"].invocations.results,
        )
        await asyncio.sleep(0.2)
        answer = await asyncio.to_thread(sqs.receive_message, QueueUrl=dlq)
        moved = answer.get("Messages", [])
    assert json.loads(moved[0]["Body"])["id"] == poison
    # One attempt per receive (a receive that raced the publish and was deferred makes none).
    assert 0 < len(receiver.at("/poison")) <= max_receives
    assert [r.headers["Upstash-Message-Id"] for r in receiver.at("/fine")] == [fine]


def test_make_dev_aws_prints_the_four_qstash_lines() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.dev_aws", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    found: dict[str, str] = {}
    output: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while "QSTASH_NEXT_SIGNING_KEY" not in found and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            name, sep, value = line.strip().partition("=")
            if sep and name.startswith("QSTASH_"):
                found[name] = value
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    # `--port 0`: the port it listens on, as its first line says, is the one QSTASH_URL names.
    running = re.search(r"running at http://127\.0\.0\.1:(\d+) ", "".join(output))
    assert running and int(running.group(1)) > 0, "".join(output)
    assert found == {
        "QSTASH_URL": f"http://localhost:{running.group(1)}",
        "QSTASH_TOKEN": p.DEV_TOKEN,
        "QSTASH_CURRENT_SIGNING_KEY": p.DEV_CURRENT_SIGNING_KEY,
        "QSTASH_NEXT_SIGNING_KEY": p.DEV_NEXT_SIGNING_KEY,
    }, "".join(output)
    assert code == 0, "".join(output)
