"""On template.yaml's stack (run locally, lambda/*.py unchanged): the functions log CloudWatch
EMF lines whose figures add up to what was published and delivered, the scheduler adds the
queue gauges, and the probes answer through the HttpApi without the token."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from infra.dev_aws import DEV_CREDENTIALS
from infra.emulator import LocalAws
from relay import protocol as p
from tests.conftest import QUICK_STACK, Receiver, assert_within_policies

pytestmark = pytest.mark.slow


@pytest.fixture
async def stack() -> AsyncIterator[LocalAws]:
    local = await LocalAws(
        credentials=DEV_CREDENTIALS, tick_seconds=0.5, parameters=QUICK_STACK
    ).start()
    try:
        yield local
    finally:
        await local.stop()
    assert_within_policies(local.denied)


def _emf(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith('{"_aws"')]


def _sum(documents: list[dict[str, Any]], name: str) -> float:
    return sum(d.get(name, 0) for d in documents if "Host" not in d)


async def test_functions_log_emf_that_adds_up(
    stack: LocalAws, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver.respond("/fail", 500)
    headers = {"Authorization": f"Bearer {p.DEV_TOKEN}"}
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz", "/metrics"):
            async with session.get(stack.url + path) as answer:
                assert answer.status == 200, (path, await answer.text())
        async with session.get(stack.url + "/v2/events") as answer:
            assert answer.status == 401
        for i in range(3):
            async with session.post(
                f"{stack.url}/v2/publish/{receiver.url(f'/ok/{i}')}", data="x", headers=headers
            ) as answer:
                assert answer.status == 201
        for _ in range(2):
            async with session.post(
                f"{stack.url}/v2/publish/{receiver.url('/fail')}",
                data="x",
                headers={**headers, "Upstash-Retries": "0"},
            ) as answer:
                assert answer.status == 201
        async with session.get(stack.url + "/metrics") as answer:
            assert 'relay_messages_published_total{source="api"} 5.0' in await answer.text()

    documents: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        documents += _emf(capsys.readouterr().out)
        settled = _sum(documents, "Delivered") + _sum(documents, "Failed")
        if settled >= 5 and any("QueueDepth" in d for d in documents):
            break
        await asyncio.sleep(0.2)
    assert _sum(documents, "Published") == 5
    assert (_sum(documents, "Delivered"), _sum(documents, "Failed")) == (3, 2)
    assert _sum(documents, "DeadLettered") == 2
    assert sum(len(d.get("AttemptDuration", [])) for d in documents) == 5
    assert sum(len(d.get("EndToEndLatency", [])) for d in documents) == 3
    host = receiver.base.removeprefix("http://")
    assert sum(d["DeliveryErrors"] for d in documents if d.get("Host") == host) == 2
    assert all(d["Stack"] == "relay" for d in documents)
    gauges = [d for d in documents if "QueueDepth" in d]
    assert gauges and all(d["QueueDepth"] >= 0 for d in gauges)
