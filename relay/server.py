"""The embedded relay, assembled: SQLite backend, service, delivery worker, schedule ticker and
the HTTP API."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web

from relay.backends.base import Backend
from relay.backends.sqlite import SqliteBackend
from relay.clock import Clock, Ids, OffsetClock
from relay.config import Settings
from relay.delivery import Deliverer, DeliveryWorker
from relay.destinations import connector_options
from relay.http.app import create_app
from relay.scheduling import ScheduleTicker
from relay.service import RelayService, resolve_credentials

log = logging.getLogger("relay.server")


class EmbeddedRelay:
    """One relay process: answers the API on ``host:port`` and delivers what it stores.

    ``dev`` uses the QStash dev server's credentials and allows loopback destinations.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        dev: bool = False,
        backend: Backend | None = None,
        clock: Clock | None = None,
        ids: Ids | None = None,
    ) -> None:
        self.settings = settings
        self.dev = dev
        self.backend: Backend = backend or SqliteBackend(
            settings.db, synchronous=settings.sqlite_synchronous
        )
        self.clock = clock
        self.ids = ids
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._ticker_task: asyncio.Task[None] | None = None
        self.service: RelayService
        self.worker: DeliveryWorker
        self.ticker: ScheduleTicker
        self.port = settings.port

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    async def start(self) -> None:
        s = self.settings
        await self.backend.open()
        token, keys = await resolve_credentials(s, self.backend, dev=self.dev)
        allow_private = self.dev or s.allow_private_destinations
        clock = self.clock
        if clock is None and self.dev and s.clock_offset_seconds:
            clock = OffsetClock(int(s.clock_offset_seconds * 1000))
        self.service = RelayService(
            self.backend,
            s,
            keys=keys,
            token=token,
            clock=clock,
            ids=self.ids,
            allow_private=allow_private,
        )
        await self.service.load_keys()  # a rotation stored before this start
        connector = aiohttp.TCPConnector(
            limit=s.delivery_concurrency, **connector_options(allow_private)
        )
        # No cookie jar: a destination's cookies must not travel with later deliveries.
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        self.worker = DeliveryWorker(
            Deliverer(self.service, self._session),
            concurrency=s.delivery_concurrency,
            visibility_ms=(s.max_timeout_seconds + 60) * 1000,
            poll_interval=s.poll_interval_seconds,
        )
        self.service.on_accepted(self.worker.notify)
        self.ticker = ScheduleTicker(self.service, interval=s.schedule_tick_seconds)
        app = create_app(self.service, max_request_bytes=s.max_request_bytes)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        # The port before the worker: a relay that cannot listen (the port in use) has delivered
        # nothing, and closes what it opened.
        site = web.TCPSite(self._runner, s.host, s.port)
        try:
            await site.start()
        except OSError:
            await self.stop()
            raise
        server = site._server
        if server is not None and s.port == 0:
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]
        self._worker_task = asyncio.create_task(self.worker.run())
        self._ticker_task = asyncio.create_task(self.ticker.run())

    async def stop(self) -> None:
        """Stop taking requests, let in-flight deliveries finish (within the grace period),
        then close the store. What was not delivered is delivered after the next start."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._ticker_task is not None:
            self.ticker.stop()
            await self._ticker_task
        if self._worker_task is not None:
            await self.worker.stop(self.settings.shutdown_grace_seconds)
            await self._worker_task
        if self._session is not None:
            await self._session.close()
        await self.backend.close()
