"""A waitForEvent timeout survives a SIGKILL of `relay dev`: the waiter and its deadline are
stored, and the restarted relay answers the wait with its timeout entry once the deadline
passes (and a notify after that finds no one waiting)."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.process import RelayProcess

pytestmark = pytest.mark.slow

RUN = "wfr_restart"
STEP = {"stepId": 1, "stepName": "w", "stepType": "Wait", "concurrent": 1}


class _Workflow(BaseHTTPRequestHandler):
    """Records the entry arrays delivered to it; answers 200."""

    received: list[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"] or 0))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def workflow_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Workflow)
    _Workflow.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/wf"
    finally:
        server.shutdown()


def _call(relay: RelayProcess, method: str, path: str, body: Any, **headers: str) -> Any:
    request = urllib.request.Request(
        relay.url + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {relay.env['QSTASH_TOKEN']}", **headers},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def _until(count: int, timeout: float) -> list[list[dict[str, Any]]]:
    deadline = time.monotonic() + timeout
    while len(_Workflow.received) < count:
        assert time.monotonic() < deadline, f"waited for {count} deliveries"
        time.sleep(0.05)
    return _Workflow.received


def test_a_wait_times_out_after_a_restart(tmp_path: Path, workflow_url: str) -> None:
    relay = RelayProcess(tmp_path / "relay.db").start()
    try:
        headers = {
            "Upstash-Workflow-RunId": RUN,
            "Upstash-Workflow-Url": workflow_url,
            "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
            "Content-Type": "application/json",
        }
        init = {"Upstash-Workflow-Init": "true", **headers}
        _call(relay, "POST", "/v2/batch", [{"destination": workflow_url, "headers": init}])
        _until(1, 10)
        wait = {"url": workflow_url, "timeout": "2s", "step": STEP}
        started = time.monotonic()
        _call(relay, "POST", "/v2/wait/evt", wait, **headers, **{"Upstash-Workflow-Init": "false"})
    finally:
        relay.kill()
    relay = RelayProcess(tmp_path / "relay.db", port=relay.port).start()
    try:
        [_, timed_out] = _until(2, 10)
        assert time.monotonic() - started >= 2
        entry = json.loads(base64.b64decode(timed_out[-1]["body"]))
        assert entry["waitTimeout"] is True and entry["stepName"] == "w"
        assert _call(relay, "POST", "/v2/notify/evt", "late") == []
    finally:
        relay.stop()
