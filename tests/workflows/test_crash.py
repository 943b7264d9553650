"""A SIGKILL of `relay dev` in the middle of a workflow run loses no step: killed during a sleep,
and killed between two steps (a step's result stored, the next step's delivery in flight), the
run completes after each restart with every step function run exactly once."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from qstash import QStash
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from upstash_workflow import AsyncWorkflowContext
from upstash_workflow.fastapi import Serve

from tests.e2e.process import RelayProcess, listening_socket
from tests.workflows.apps import Recorder, Target

pytestmark = pytest.mark.slow

HELD_ENTRIES = 4  # [init, a, pause, b]: the delivery that runs step c


class HoldOnce:
    """ASGI wrapper: holds the first delivery carrying ``HELD_ENTRIES`` entries until released,
    then answers it 503 without running the workflow (its relay is gone by then)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.holding = threading.Event()
        self.release = threading.Event()
        self.done = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if not self.done and _entry_count(body) == HELD_ENTRIES:
            self.done = True
            self.holding.set()
            await asyncio.to_thread(self.release.wait, 30)
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _entry_count(body: bytes) -> int:
    try:
        entries = json.loads(body)
    except ValueError:
        return 0
    return len(entries) if isinstance(entries, list) else 0


def _app(target: Target, recorder: Recorder) -> FastAPI:
    app = FastAPI()
    serve = Serve(app)

    @serve.post("/wf", env=target.env())
    async def workflow(ctx: AsyncWorkflowContext[dict[str, Any]]) -> None:
        for name in ("a", "b", "c"):

            async def step(name: str = name) -> str:
                recorder.add(name, run_id=ctx.workflow_run_id)
                return name.upper()

            await ctx.run(name, step)
            if name == "a":
                await ctx.sleep("pause", 2)
        recorder.add("end", run_id=ctx.workflow_run_id)

    return app


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "relay.db"


@pytest.fixture
def first_relay(db: Path) -> Iterator[RelayProcess]:
    """The relay before any crash: on a free port, which each restart takes again (the app
    calls back to this URL)."""
    relay = RelayProcess(db).start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture
def app_server(first_relay: RelayProcess) -> Iterator[tuple[str, Recorder, HoldOnce]]:
    # `relay dev`'s documented dev credentials: the same after every restart.
    target = Target(
        url=first_relay.url,
        token=_dev("QSTASH_TOKEN"),
        current_signing_key=_dev("QSTASH_CURRENT_SIGNING_KEY"),
        next_signing_key=_dev("QSTASH_NEXT_SIGNING_KEY"),
    )
    recorder = Recorder()
    held = HoldOnce(_app(target, recorder))
    sock = listening_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(held, log_level="critical"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve([sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", recorder, held
    finally:
        held.release.set()
        server.should_exit = True
        thread.join(10)


FINAL = {"DELIVERED", "FAILED", "CANCELED"}


def _unsettled(relay: RelayProcess, url: str) -> list[dict[str, Any]]:
    """The messages to ``url`` whose newest event is not a final state, as the API shows them."""
    auth = {"Authorization": f"Bearer {_dev('QSTASH_TOKEN')}"}
    with httpx.Client(base_url=relay.url, headers=auth, timeout=10) as http:
        events = http.get("/v2/events", params={"url": url, "count": 1000}).json()["events"]
        newest: dict[str, str] = {}
        for event in events:  # newest first
            newest.setdefault(event["messageId"], event["state"])
        pending = [m for m, state in newest.items() if state not in FINAL]
        return [http.get(f"/v2/messages/{m}").json() for m in pending]


def _wait_until(what: str, ready: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def _dev(name: str) -> str:
    from relay import protocol as p

    return {
        "QSTASH_TOKEN": p.DEV_TOKEN,
        "QSTASH_CURRENT_SIGNING_KEY": p.DEV_CURRENT_SIGNING_KEY,
        "QSTASH_NEXT_SIGNING_KEY": p.DEV_NEXT_SIGNING_KEY,
    }[name]


def test_sigkill_during_a_sleep_and_between_steps_loses_no_step(
    first_relay: RelayProcess, db: Path, app_server: tuple[str, Recorder, HoldOnce]
) -> None:
    base, recorder, held = app_server
    relay = first_relay
    try:
        QStash(_dev("QSTASH_TOKEN"), base_url=relay.url).message.publish_json(
            url=f"{base}/wf", body={"n": 1}, retries=3
        )
        recorder.wait_for("a")

        def sleeping() -> bool:
            pending = _unsettled(relay, f"{base}/wf")
            return len(pending) == 1 and (pending[0].get("notBefore") or 0) > time.time() * 1000

        # Step a stored, its delivery settled, the 2 s sleep submitted: the run sleeps.
        _wait_until("the run sleeps, nothing else under way", sleeping)
        relay.kill()
        relay.stop()
        relay = RelayProcess(db, port=first_relay.port).start()

        assert held.holding.wait(20), "the delivery after step b never came"
        # Step b is stored and the delivery that ran it settled (else it is delivered again
        # after the restart and runs b once more: a kill in another window than this one's);
        # the delivery that runs c is in flight.
        _wait_until(
            "only the held delivery under way", lambda: len(_unsettled(relay, f"{base}/wf")) == 1
        )
        relay.kill()
        relay.stop()
        held.release.set()
        relay = RelayProcess(db, port=first_relay.port).start()

        end = recorder.wait_for("end", timeout=30)
        time.sleep(0.5)  # a second execution of any step would show by now
        for name in ("a", "b", "c"):
            assert [r["run_id"] for r in recorder.of(name)] == [end["run_id"]], name
    finally:
        relay.stop()
