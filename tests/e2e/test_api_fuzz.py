"""Property-based fuzzing of the HTTP API against its own OpenAPI document (schemathesis).

The embedded relay runs in a thread (its own event loop, a throwaway SQLite file). Every route
of the table is exercised with generated requests, valid and invalid; none may answer 5xx, and
every answer must match the document (status, content type, JSON schema). Deliveries are
stubbed out: fuzzed destinations are never called. Bounded: a few dozen examples per route,
derandomized so that a run is repeatable.

The document is built at import, from the route table (schemathesis' lazy ``from_fixture``
loader fails under pytest 9); a test checks that the relay serves that same document at
``/v2/openapi.json`` without a token, as tools load it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from relay.config import Settings
from relay.delivery import Deliverer
from relay.http.api import openapi_document
from relay.models import Attempt, Message
from relay.server import EmbeddedRelay

EXAMPLES = 20  # per route and generation phase: about 30 s in all on an idle machine


async def _no_delivery(self: Deliverer, message: Message) -> Attempt:
    """Every fuzzed message "delivers" without leaving the process (one to a URL with `fail`
    in it gets a 500)."""
    status = 500 if "fail" in message.url else 200
    return Attempt(status=status, headers=[], body=b"no", error=None, duration_ms=0)


class RunningRelay:
    """An ``EmbeddedRelay`` on a thread of its own, for synchronous HTTP clients."""

    def __init__(self, db: Path) -> None:
        self.relay = EmbeddedRelay(Settings(port=0, db=str(db)), dev=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> RunningRelay:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.relay.start(), self._loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.relay.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        return self.relay.url

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.relay.service.token}"}


@pytest.fixture(scope="module")
def running_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRelay]:
    with (
        mock.patch.object(Deliverer, "attempt", _no_delivery),
        RunningRelay(tmp_path_factory.mktemp("fuzz") / "relay.db") as running,
    ):
        yield running


DOCUMENT = openapi_document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_document_is_served_without_a_token(running_relay: RunningRelay) -> None:
    answer = httpx.get(running_relay.url + "/v2/openapi.json")
    assert answer.status_code == 200
    assert answer.json() == DOCUMENT


def test_answers_about_stored_records_match_the_document(running_relay: RunningRelay) -> None:
    """Generated ids rarely exist: these answers are checked with records that do (which the
    fuzzing below then finds in its listings too)."""
    with httpx.Client(base_url=running_relay.url, headers=running_relay.auth) as http:
        later = {"Upstash-Delay": "1h", "Upstash-Label": "a,b", "Upstash-Redact-Fields": "body"}
        kept = http.post("/v2/publish/https://example.com/ok", headers=later, content=b"\xff")
        failed = http.post("/v2/publish/https://example.com/fail", headers={"Upstash-Retries": "0"})
        group = http.post(
            "/v2/topics/fuzz/endpoints", json={"endpoints": [{"url": "https://a.b/"}]}
        )
        published = http.post("/v2/publish/fuzz", content=b"{}")
        for answer in (kept, failed, group, published):
            assert answer.status_code < 300, answer.text
        dlq: list[Any] = []
        for _ in range(200):
            dlq = http.get("/v2/dlq").json()["messages"]
            if dlq:
                break
            time.sleep(0.05)
        [entry] = dlq
        calls = [
            ("/v2/publish/{destination}", "POST", published),
            ("/v2/messages/{id}", "GET", http.get(f"/v2/messages/{kept.json()['messageId']}")),
            ("/v2/events", "GET", http.get("/v2/events")),
            ("/v2/logs", "GET", http.get("/v2/logs", params={"count": 1})),
            ("/v2/dlq", "GET", http.get("/v2/dlq")),
            ("/v2/dlq/{id}", "GET", http.get(f"/v2/dlq/{entry['dlqId']}")),
            ("/v2/topics", "GET", http.get("/v2/topics")),
            ("/v2/topics/{name}", "GET", http.get("/v2/topics/fuzz")),
            ("/v2/keys", "GET", http.get("/v2/keys")),
        ]
        for path, method, answer in calls:
            assert answer.status_code < 300, (path, answer.text)
            schema[path][method].validate_response(answer)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_matches_its_document(case: schemathesis.Case, running_relay: RunningRelay) -> None:
    case.call_and_validate(
        base_url=running_relay.url,
        headers=running_relay.auth,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
