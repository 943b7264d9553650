"""Fixtures of the receiver contract: the reverse proxy in front of each app, the app state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from relay.backends.base import Backend
from relay.backends.sqlite import SqliteBackend
from relay.server import EmbeddedRelay
from tests.receiver.harness import AppState, Proxy


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    proxy = Proxy()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    proxy.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield proxy
    finally:
        await runner.cleanup()


@pytest.fixture
def state(relay: EmbeddedRelay, proxy: Proxy) -> AppState:
    return AppState(relay, public_url=proxy.url("/base"))


@pytest.fixture
def backend(tmp_path: Path) -> Backend:
    """Receivers are the subject here, not storage: one backend is enough."""
    return SqliteBackend(tmp_path / "relay.db")
