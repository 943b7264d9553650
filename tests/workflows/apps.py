"""Scenario A's workflow apps (upstash-workflow 2.0.0) on FastAPI and on Flask, served on
127.0.0.1 by real uvicorn / werkzeug servers in threads, and the relay they talk to.

The relay is a ``Target`` (URL, token, signing keys) handed to the SDK through its ``env``
option, so the same apps run against any relay: ``relay dev`` here, the AWS stack later. Both
signing keys are set, so the SDK verifies every delivery's signature itself."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from flask import Flask
from flask import request as flask_request
from upstash_workflow import AsyncWorkflowContext, WorkflowContext
from upstash_workflow.fastapi import Serve as FastApiServe
from upstash_workflow.flask import Serve as FlaskServe
from werkzeug.serving import make_server

from tests.e2e.process import listening_socket

TRACE = "X-Relay-Trace"

Record = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """The relay the apps and the test's publisher use."""

    url: str
    token: str
    current_signing_key: str
    next_signing_key: str

    def env(self) -> dict[str, str | None]:
        return {
            "QSTASH_URL": self.url,
            "QSTASH_TOKEN": self.token,
            "QSTASH_CURRENT_SIGNING_KEY": self.current_signing_key,
            "QSTASH_NEXT_SIGNING_KEY": self.next_signing_key,
        }


@dataclass
class Recorder:
    """What the steps saw, appended from the server threads."""

    records: list[Record] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, **fields: Any) -> None:
        with self.lock:
            self.records.append({"kind": kind, "time": time.monotonic(), **fields})

    def of(self, kind: str, run_id: str | None = None) -> list[Record]:
        with self.lock:
            return [
                r
                for r in self.records
                if r["kind"] == kind and (run_id is None or r.get("run_id") == run_id)
            ]

    def wait_for(self, kind: str, timeout: float = 20) -> Record:
        deadline = time.monotonic() + timeout
        while not (found := self.of(kind)):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {kind!r} within {timeout}s; got {self.records}")
            time.sleep(0.05)
        return found[0]


def header(headers: dict[str, str], name: str) -> str | None:
    """A header of ``ctx.headers`` whatever its case (Starlette lowers, Werkzeug titles)."""
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


@dataclass
class App:
    """A running workflow app: its base URL and its recorder."""

    url: str
    recorder: Recorder


# --- FastAPI ------------------------------------------------------------------------------------


def fastapi_app(target: Target, base: str, recorder: Recorder) -> FastAPI:
    app = FastAPI()
    serve = FastApiServe(app)
    env = target.env()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        recorder.add("echo", body=await request.json())
        return {"echoed": await request.json(), "by": "fastapi-echo"}

    @serve.post("/wf", env=env)
    async def workflow(ctx: AsyncWorkflowContext[dict[str, Any]]) -> None:
        async def first() -> dict[str, int]:
            recorder.add("first", run_id=ctx.workflow_run_id, trace=header(ctx.headers, TRACE))
            return {"doubled": ctx.request_payload["n"] * 2}

        r1 = await ctx.run("first", first)
        await ctx.sleep("pause", 2)
        response = await ctx.call("call-echo", url=f"{base}/echo", method="POST", body={"r1": r1})

        async def last() -> None:
            recorder.add(
                "last",
                run_id=ctx.workflow_run_id,
                status=response.status,
                body=response.body,
                trace=header(ctx.headers, TRACE),
            )

        await ctx.run("last", last)
        recorder.add("end", run_id=ctx.workflow_run_id)

    async def failure(
        ctx: AsyncWorkflowContext[dict[str, Any]], status: int, message: str, _: dict[str, str]
    ) -> None:
        recorder.add(
            "failure",
            run_id=ctx.workflow_run_id,
            status=status,
            message=message,
            payload=ctx.request_payload,
            trace=header(ctx.headers, TRACE),
        )

    @serve.post("/wf-fail", env=env, retries=0, failure_function=failure)
    async def failing(ctx: AsyncWorkflowContext[dict[str, Any]]) -> None:
        async def fine() -> int:
            recorder.add("fine", run_id=ctx.workflow_run_id)
            return 1

        async def boom() -> None:
            recorder.add("boom", run_id=ctx.workflow_run_id)
            raise RuntimeError("boom-from-step-two")

        await ctx.run("fine", fine)
        await ctx.run("boom", boom)

    return app


@contextmanager
def serve_fastapi(target: Target) -> Iterator[App]:
    sock = listening_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    recorder = Recorder()
    config = uvicorn.Config(fastapi_app(target, base, recorder), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve([sock])), daemon=True)
    thread.start()
    _until(lambda: server.started, "uvicorn to start")
    try:
        yield App(base, recorder)
    finally:
        server.should_exit = True
        thread.join(10)


# --- Flask --------------------------------------------------------------------------------------


def flask_app(target: Target, base: str, recorder: Recorder) -> Flask:
    app = Flask(__name__)
    serve = FlaskServe(app)
    env = target.env()

    @app.post("/echo")
    def echo() -> dict[str, Any]:
        body = flask_request.get_json()
        recorder.add("echo", body=body)
        return {"echoed": body, "by": "flask-echo"}

    @serve.route("/wf", env=env)
    def workflow(ctx: WorkflowContext[dict[str, Any]]) -> None:
        def first() -> dict[str, int]:
            recorder.add("first", run_id=ctx.workflow_run_id, trace=header(ctx.headers, TRACE))
            return {"doubled": ctx.request_payload["n"] * 2}

        r1 = ctx.run("first", first)
        ctx.sleep("pause", 2)
        response = ctx.call("call-echo", url=f"{base}/echo", method="POST", body={"r1": r1})

        def last() -> None:
            recorder.add(
                "last",
                run_id=ctx.workflow_run_id,
                status=response.status,
                body=response.body,
                trace=header(ctx.headers, TRACE),
            )

        ctx.run("last", last)
        recorder.add("end", run_id=ctx.workflow_run_id)

    def failure(
        ctx: WorkflowContext[dict[str, Any]], status: int, message: str, _: dict[str, str]
    ) -> None:
        recorder.add(
            "failure",
            run_id=ctx.workflow_run_id,
            status=status,
            message=message,
            payload=ctx.request_payload,
            trace=header(ctx.headers, TRACE),
        )

    @serve.route("/wf-fail", env=env, retries=0, failure_function=failure)
    def failing(ctx: WorkflowContext[dict[str, Any]]) -> None:
        def fine() -> int:
            recorder.add("fine", run_id=ctx.workflow_run_id)
            return 1

        def boom() -> None:
            recorder.add("boom", run_id=ctx.workflow_run_id)
            raise RuntimeError("boom-from-step-two")

        ctx.run("fine", fine)
        ctx.run("boom", boom)

    return app


@contextmanager
def serve_flask(target: Target) -> Iterator[App]:
    with listening_socket() as sock:  # werkzeug serves on a duplicate of it
        port = sock.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        recorder = Recorder()
        app = flask_app(target, base, recorder)
        server = make_server("127.0.0.1", port, app, threaded=True, fd=sock.fileno())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield App(base, recorder)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _until(done: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}")
        time.sleep(0.02)
