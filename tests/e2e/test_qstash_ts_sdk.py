"""The official TypeScript SDK (`@upstash/qstash`, run with node from tests/node) against the
embedded relay: it publishes to a URL group and creates, reads, pauses, resumes and deletes
schedules; the schedule it made then fires at its cron time (the injected clock's)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from relay import scheduling
from relay.clock import ManualClock
from relay.server import EmbeddedRelay
from tests.conftest import Receiver

NODE_DIR = Path(__file__).parent.parent / "node"


async def run_node(script: str, request: dict[str, Any]) -> dict[str, Any]:
    """Run ``tests/node/<script>`` with ``request`` on stdin; its JSON answer. Asynchronously:
    the relay it talks to is served by this event loop."""
    if not (NODE_DIR / "node_modules" / "@upstash" / "qstash").is_dir() or not shutil.which("node"):
        message = "tests/node is not installed: `make test` runs npm ci there"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    process = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / script),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(json.dumps(request).encode()), 60)
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def test_typescript_sdk_schedules_and_url_group(
    relay: EmbeddedRelay, receiver: Receiver, clock: ManualClock
) -> None:
    result = await run_node(
        "schedules.mjs",
        {"baseUrl": relay.url, "token": relay.service.token, "receiver": receiver.url("")},
    )
    published = result["published"]
    assert [p["url"] for p in published] == [receiver.url("/a"), receiver.url("/b")]
    [a] = await receiver.wait_for(1, "/a")
    [b] = await receiver.wait_for(1, "/b")
    assert a.headers["Upstash-Topic-Name"] == "team" and b.body == b'{"hello":"ts"}'

    assert result["scheduleId"] == "ts-schedule"
    schedule = result["schedule"]
    assert schedule["destination"] == receiver.url("/cron?x=1")
    assert schedule["cron"] == "* * * * *" and schedule["retries"] == 1
    assert schedule["header"]["x-job"] == ["ts"]  # the TS SDK sends header names lower-case
    assert result["paused"] is True
    group = result["groupSchedule"]
    assert group["destination"] == "team" and group["labels"] == ["daily", "team"]
    assert sorted(result["listed"]) == sorted(["ts-schedule", group["scheduleId"]])
    assert result["afterDelete"] == ["ts-schedule"]

    # Resumed, it fires at the next whole minute of the relay's clock (ticked here, alone).
    relay.ticker.stop()
    clock.advance(schedule["nextScheduleTime"] - clock.now_ms())
    assert (await scheduling.tick(relay.service)).fired == 1
    [fire] = await receiver.wait_for(1, "/cron")
    assert fire.headers["Upstash-Schedule-Id"] == "ts-schedule"
    headers = {k.lower(): v for k, v in fire.headers.items()}
    assert fire.body == b'{"job":"ts"}' and headers["content-type"] == "application/json"
    assert headers["x-job"] == "ts"
