"""SIGKILL while publishing and delivering, restart on the same database: nothing accepted is
lost (duplicates allowed, as at-least-once promises)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.conftest import Receiver
from tests.e2e.process import RelayProcess


async def test_sigkill_loses_no_accepted_message(tmp_path: Path, receiver: Receiver) -> None:
    delivered: set[str] = set()

    async def slow(request: object) -> web.Response:
        assert hasattr(request, "headers")
        await asyncio.sleep(0.05)
        delivered.add(request.headers["Upstash-Message-Id"])
        return web.Response()

    receiver.respond("/job", slow)
    db = tmp_path / "crash.db"
    relay = RelayProcess(db).start()
    headers = {"Authorization": f"Bearer {relay.env['QSTASH_TOKEN']}"}
    accepted: set[str] = set()

    async with aiohttp.ClientSession() as session:
        # a batch already stored, most of it still to deliver
        items = [
            {"destination": receiver.url("/job"), "headers": {}, "body": f"b{i}"}
            for i in range(300)
        ]
        async with session.post(relay.url + "/v2/batch", json=items, headers=headers) as response:
            assert response.status == 201
            accepted.update(a["messageId"] for a in await response.json())

        async def publish_forever() -> None:
            n = 0
            while True:
                n += 1
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.post(
                        f"{relay.url}/v2/publish/{receiver.url('/job')}",
                        data=f"p{n}",
                        headers=headers,
                    ) as response:
                        if response.status == 201:
                            accepted.add((await response.json())["messageId"])

        publisher = asyncio.create_task(publish_forever())
        await receiver.wait_for(40, "/job", timeout=20)
        relay.kill()  # mid-flight: deliveries leased, publishes on the wire
        await asyncio.sleep(0.2)
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        assert len(delivered) < len(accepted), "the kill came too late to test anything"

        restarted = RelayProcess(db, port=relay.port).start()
        try:
            for _ in range(600):
                if accepted <= delivered:
                    break
                await asyncio.sleep(0.05)
            missing = accepted - delivered
            assert not missing, f"{len(missing)} accepted messages never delivered"
            # ...and ends DELIVERED in the logs of the restarted relay
            logged: set[str] = set()
            for _ in range(200):
                logged = await _delivered_in_logs(session, restarted.url, headers)
                if accepted <= logged:
                    break
                await asyncio.sleep(0.05)
            assert accepted <= logged
        finally:
            assert restarted.stop() == 0


async def _delivered_in_logs(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> set[str]:
    logged: set[str] = set()
    params = {"state": "DELIVERED", "count": "1000"}
    while True:
        async with session.get(url + "/v2/events", params=params, headers=headers) as response:
            body = await response.json()
        logged |= {e["messageId"] for e in body["events"]}
        if not body.get("cursor"):
            return logged
        params["cursor"] = body["cursor"]
