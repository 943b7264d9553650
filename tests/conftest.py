"""Shared fixtures: a real relay (in-process, on a real port, on a real SQLite file), real
aiohttp receivers on 127.0.0.1, and an authenticated API session.

- ``relay``: a started ``EmbeddedRelay`` in dev mode (loopback destinations allowed) on the
  backend under test; ``relay.url``, ``relay.service.token``, ``relay.service.keys``,
  ``relay.clock`` (a ``ManualClock``: advance it and call ``relay.worker.notify()``).
- ``receiver``: a ``Receiver`` recording every request; script answers with ``receiver.respond``.
- ``api``: an aiohttp session with the relay's token, ``api.url(path)`` builds URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import aiohttp
import pytest
from aiohttp import web

from infra import limits
from relay.backends.base import Backend
from relay.backends.sqlite import SqliteBackend
from relay.clock import ManualClock
from relay.config import Settings
from relay.server import EmbeddedRelay

if TYPE_CHECKING:
    from relay.backends.aws import AwsBackend

# The emulated stack's template parameters for tests: the SQS event source invokes at once
# instead of gathering records for the template's default 1 s (which only adds latency here).
QUICK_STACK = {"DeliverBatchingWindow": "0"}


def assert_within_policies(denied: Iterable[object]) -> None:
    """At a local stack's teardown: fail if a function made an AWS call that its IAM policy in
    template.yaml does not allow (moto allows everything; infra/policies.py checks)."""
    found = [str(call) for call in denied]
    assert not found, "calls the functions' policies do not allow:\n" + "\n".join(found)


# Every boto3 client made in the tests (in-process moto and the local stack) checks AWS's limits.
limits.install()


@pytest.fixture(autouse=True)
def within_aws_limits() -> Iterator[None]:
    """At each test's teardown: fail if a request broke a limit AWS enforces and moto does not
    (infra/limits.py), even if the code under test swallowed the error."""
    list(limits.drain())
    yield
    found = list(limits.drain())
    assert not found, "requests AWS would reject:\n" + "\n".join(found)


MOTO_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@functools.cache
def _boto_session() -> Any:
    """One boto3 session for every test: a fresh one loads the service models again (~0.1 s)."""
    import boto3

    return boto3.session.Session()


@contextlib.contextmanager
def aws_backend(**options: Any) -> Iterator[AwsBackend]:
    """An ``AwsBackend`` on moto, in-process, with its table, queue and bucket created."""
    from moto import mock_aws

    from relay.backends.aws import AwsBackend

    with mock.patch.dict(os.environ, MOTO_ENVIRONMENT), mock_aws():
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
            os.environ.pop(name, None)
        # One boto3 call at a time: in-process moto's state is not thread-safe (a concurrent
        # write was seen to fail with "dictionary changed size during iteration").
        options.setdefault("max_workers", 1)
        backend = AwsBackend(
            "relay",
            queue_name="relay-dispatch",
            bucket="relay-bodies",
            session=_boto_session(),
            **options,
        )
        backend.create_resources()
        yield backend


BACKENDS: dict[str, Callable[[Path], AbstractContextManager[Backend]]] = {
    "sqlite": lambda tmp: contextlib.nullcontext(SqliteBackend(tmp / "relay.db")),
    # max_sqs_delay=0: every delay waits in DynamoDB, so the injected clock says when it is due.
    "aws": lambda tmp: aws_backend(max_sqs_delay=0),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend in turn (the conformance suite runs once per backend)."""
    with BACKENDS[request.param](tmp_path) as backend:
        yield backend


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def relay(
    backend: Backend, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[EmbeddedRelay]:
    settings = Settings(port=0, db=str(tmp_path / "relay.db"), poll_interval_seconds=0.05)
    server = EmbeddedRelay(settings, dev=True, backend=backend, clock=clock)
    server.clock = clock
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@dataclass
class Received:
    """One request a receiver got."""

    method: str
    path: str
    url: str
    headers: dict[str, str]
    body: bytes
    at: float


Responder = Callable[[Received], Any]


class OfficialVerdicts(list[str]):
    """A receiver answer that checks each delivery with the official ``qstash.Receiver`` and
    records its verdict ("accepted" or "rejected: …"); 401 when it rejects."""

    def __init__(self, current_signing_key: str, next_signing_key: str) -> None:
        super().__init__()
        from qstash import Receiver as OfficialReceiver

        self.official = OfficialReceiver(
            current_signing_key=current_signing_key, next_signing_key=next_signing_key
        )

    def __call__(self, request: Received) -> web.Response:
        try:
            self.official.verify(
                signature=request.headers["Upstash-Signature"],
                body=request.body.decode(),
                url=request.url,
            )
        except Exception as exc:  # the official receiver's own verdict
            self.append(f"rejected: {exc}")
            return web.Response(status=401)
        self.append("accepted")
        return web.Response(text="ok")


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records requests and answers as scripted."""

    base: str = ""
    requests: list[Received] = field(default_factory=list)
    scripts: dict[str, list[Responder | int]] = field(default_factory=dict)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str = "/") -> str:
        return self.base + path

    def respond(self, path: str, *answers: Responder | int) -> None:
        """Answer requests to ``path`` with these, in turn (the last one repeats)."""
        self.scripts[path] = list(answers)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(
        self, count: int, path: str | None = None, timeout: float = 10
    ) -> list[Received]:
        """Wait until ``count`` requests (to ``path``) have arrived; returns them."""

        def matching() -> list[Received]:
            return [r for r in self.requests if path is None or r.path == path]

        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(matching()) >= count), timeout
            )
        return matching()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        received = Received(
            method=request.method,
            path=request.path,
            url=str(request.url),
            headers=dict(request.headers),
            body=await request.read(),
            at=time.time(),
        )
        answers = self.scripts.get(request.path, [200])
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, int):
            response: Any = web.Response(status=answer)
        else:
            response = answer(received)
            if inspect.isawaitable(response):
                response = await response
        async with self._changed:
            self.requests.append(received)
            self._changed.notify_all()
        return response or web.Response(status=200)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recv.base = f"http://127.0.0.1:{port}"
    try:
        yield recv
    finally:
        await runner.cleanup()


class Api:
    """An authenticated client session to the relay under test."""

    def __init__(self, relay: EmbeddedRelay, session: aiohttp.ClientSession) -> None:
        self.relay = relay
        self.session = session
        self.headers = {"Authorization": f"Bearer {relay.service.token}"}

    def url(self, path: str) -> str:
        return self.relay.url + path

    async def call(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        async with self.session.request(
            method,
            self.url(path),
            headers={**self.headers, **(headers or {})},
            skip_auto_headers=("Content-Type",),  # like the SDKs: only what the caller set
            **kwargs,
        ) as response:
            text = await response.text()
            try:
                import json

                return response.status, json.loads(text) if text else None
            except ValueError:
                return response.status, text

    async def publish(
        self, destination: str, body: bytes | str = b"", headers: dict[str, str] | None = None
    ) -> str:
        status, answer = await self.call(
            "POST", "/v2/publish/" + destination, data=body or None, headers=headers
        )
        assert status in (201, 202), answer
        return str(answer["messageId"])

    async def events(self, **params: str) -> list[dict[str, Any]]:
        status, answer = await self.call("GET", "/v2/events", params=params)
        assert status == 200, answer
        return list(answer["events"])

    async def states(self, message_id: str) -> list[str]:
        """The message's states in the order they happened."""
        return [e["state"] for e in reversed(await self.events(messageId=message_id))]

    async def wait_state(self, message_id: str, state: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if state in await self.states(message_id):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{message_id} never reached {state}: {await self.states(message_id)}")


@pytest.fixture
async def api(relay: EmbeddedRelay) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(relay, session)


@pytest.fixture
def anyio_backend() -> Iterator[str]:
    yield "asyncio"
