"""Scenario A of the workflow reference: `upstash-workflow` 2.0.0, unchanged, on FastAPI and on
Flask, against a real `relay dev` process (run → sleep 2 s → call → run; a failing run reaching
its failure function). The SDK verifies every delivery's signature itself.

The relay is the ``target`` fixture (tests/workflows/conftest.py: URL, token, keys), so the
same scenario runs against every relay listed there."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest
from qstash import QStash

from tests.workflows.apps import TRACE, App, Target, serve_fastapi, serve_flask

pytestmark = pytest.mark.slow

Serve = Callable[[Target], AbstractContextManager[App]]


@pytest.fixture(params=[serve_fastapi, serve_flask], ids=["fastapi", "flask"])
def app(request: pytest.FixtureRequest, target: Target) -> Iterator[App]:
    serve: Serve = request.param
    with serve(target) as running:
        yield running


def _status(target: Target, method: str, path: str) -> int:
    request = urllib.request.Request(
        target.url + path, method=method, headers={"Authorization": f"Bearer {target.token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _trigger(target: Target, url: str, body: object, trace: str) -> None:
    """A plain publish to the workflow URL: the SDK starts the run from its delivery."""
    QStash(target.token, base_url=target.url).message.publish_json(
        url=url, body=body, headers={TRACE: trace}, retries=0
    )


def test_run_sleep_call_run(app: App, target: Target, request: pytest.FixtureRequest) -> None:
    trace = f"trace-{request.node.callspec.id}"
    _trigger(target, f"{app.url}/wf", {"n": 21}, trace)
    end = app.recorder.wait_for("end", timeout=30)
    run_id = end["run_id"]
    assert run_id.startswith("wfr_")
    recorded = {kind: app.recorder.of(kind) for kind in ("first", "echo", "last", "end")}
    assert {kind: len(found) for kind, found in recorded.items()} == dict.fromkeys(recorded, 1)
    [first], [echo], [last] = recorded["first"], recorded["echo"], recorded["last"]
    assert first["run_id"] == last["run_id"] == run_id
    assert echo["body"] == {"r1": {"doubled": 42}}
    assert echo["time"] - first["time"] >= 2.0  # the sleep
    assert last["status"] == 200
    assert last["body"]["echoed"] == {"r1": {"doubled": 42}}
    # The trigger's header reaches the steps through the sleep and the call.
    assert first["trace"] == last["trace"] == trace
    # The run is over: the lazy fetch of its entries answers 404. The SDK ends the run (DELETE)
    # after the workflow function returned, so a moment after "end" was recorded.
    deadline = time.monotonic() + 15
    while (status := _status(target, "GET", f"/v2/workflows/runs/{run_id}")) != 404:
        assert time.monotonic() < deadline, f"the run never ended: {status}"
        time.sleep(0.05)


def test_failure_function(app: App, target: Target, request: pytest.FixtureRequest) -> None:
    trace = f"trace-fail-{request.node.callspec.id}"
    _trigger(target, f"{app.url}/wf-fail", {"kind": "fail", "n": 3}, trace)
    failure = app.recorder.wait_for("failure", timeout=30)
    assert failure["status"] == 500
    assert failure["message"] == "boom-from-step-two"
    assert failure["payload"] == {"kind": "fail", "n": 3}
    assert failure["trace"] == trace
    assert failure["run_id"].startswith("wfr_")
    assert len(app.recorder.of("fine")) == 1 and len(app.recorder.of("boom")) == 1
    assert len(app.recorder.of("failure")) == 1
