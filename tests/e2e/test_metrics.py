"""``/metrics``, ``/healthz`` and ``/readyz`` on a real relay (each backend): scraped while
messages flow, the counters add up to what was published; readiness fails when the store
cannot be written; the three answer without the token, nothing else does."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from relay.clock import ManualClock
from relay.health import READY_MAX_AGE
from relay.metrics import GAUGES_MAX_AGE
from relay.server import EmbeddedRelay
from tests.conftest import Api, Receiver
from tests.e2e.process import RelayProcess

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(relay: EmbeddedRelay) -> Samples:
    """Every sample of ``GET /metrics`` (no token), keyed by name and labels."""
    async with aiohttp.ClientSession() as session, session.get(relay.url + "/metrics") as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = await answer.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


async def test_counters_add_up_while_messages_flow(
    relay: EmbeddedRelay, api: Api, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.respond("/fail", 500)
    receiver.respond("/flaky", 503, 200)
    host = receiver.base.removeprefix("http://")
    ok, failing = 24, 6
    scrapes: list[Samples] = []
    stop = asyncio.Event()

    async def keep_scraping() -> None:
        while not stop.is_set():
            scrapes.append(await scrape(relay))
            await asyncio.sleep(0.01)

    scraper = asyncio.create_task(keep_scraping())
    ids = await asyncio.gather(
        *(api.publish(receiver.url(f"/ok/{i}"), f"m{i}") for i in range(ok)),
        *(
            api.publish(receiver.url("/fail"), "x", headers={"Upstash-Retries": "0"})
            for _ in range(failing)
        ),
    )
    flaky = await api.publish(receiver.url("/flaky"), "y", headers={"Upstash-Retries": "1"})
    duplicate = {"Upstash-Deduplication-Id": "same"}
    await api.publish(receiver.url("/ok/dup"), "d", headers=duplicate)
    await api.publish(receiver.url("/ok/dup"), "d", headers=duplicate)
    for message_id in ids[:ok]:
        await api.wait_state(message_id, "DELIVERED")
    for message_id in ids[ok:]:
        await api.wait_state(message_id, "FAILED")
    await api.wait_state(flaky, "RETRY")
    clock.advance(3_600_000)  # the retry's backoff is over
    relay.worker.notify()
    await api.wait_state(flaky, "DELIVERED")
    stop.set()
    await scraper
    await asyncio.sleep(GAUGES_MAX_AGE)  # the queue gauges are read again
    final = await scrape(relay)

    published = ok + failing + 1 + 1  # and one deduplicated publish
    assert value(final, "relay_messages_published_total", source="api") == published
    assert value(final, "relay_messages_deduplicated_total") == 1
    attempts = {
        outcome: value(final, "relay_delivery_attempts_total", outcome=outcome)
        for outcome in ("delivered", "retried", "failed")
    }
    assert attempts == {"delivered": ok + 2, "retried": 1, "failed": failing}
    # Every published message ended delivered or failed, and nothing is left queued.
    assert attempts["delivered"] + attempts["failed"] == published
    assert value(final, "relay_messages_dead_lettered_total", reason="retries_exhausted") == failing
    assert value(final, "relay_delivery_errors_total", host=host, kind="http_5xx") == failing + 1
    assert value(final, "relay_delivery_attempt_duration_seconds_count") == sum(attempts.values())
    assert value(final, "relay_delivery_end_to_end_seconds_count") == ok + 2
    # The flaky message waited out its backoff (the clock moved an hour) before delivery.
    assert value(final, "relay_delivery_end_to_end_seconds_sum") >= 3600
    assert total(final, "relay_queue_depth") == 0
    assert value(final, "relay_queue_oldest_due_age_seconds") == 0

    # Scraped while flowing: counters only grow, and never run ahead of what was published.
    assert len(scrapes) >= 3
    for before, after in zip(scrapes, [*scrapes[1:], final], strict=True):
        for name in ("relay_messages_published_total", "relay_delivery_attempts_total"):
            assert total(before, name) <= total(after, name)
    for sample in scrapes:
        done = value(sample, "relay_delivery_attempts_total", outcome="delivered") + value(
            sample, "relay_delivery_attempts_total", outcome="failed"
        )
        assert done <= value(sample, "relay_messages_published_total", source="api")


async def test_queue_gauges_count_what_waits(
    relay: EmbeddedRelay, api: Api, receiver: Receiver
) -> None:
    for _ in range(3):
        await api.publish(receiver.url("/later"), "x", headers={"Upstash-Delay": "1h"})
    samples = await scrape(relay)
    assert value(samples, "relay_queue_depth", state="waiting") == 3
    assert value(samples, "relay_queue_depth", state="due") == 0
    assert value(samples, "relay_queue_oldest_due_age_seconds") == 0


async def test_probes_and_metrics_need_no_token_and_nothing_else_is_open(
    relay: EmbeddedRelay,
) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz", "/metrics"):
            async with session.get(relay.url + path) as answer:
                assert answer.status == 200, path
        for method, path in (("GET", "/v2/events"), ("POST", "/metrics"), ("GET", "/nowhere")):
            async with session.request(method, relay.url + path) as answer:
                assert answer.status == 401, (method, path)
        async with session.get(relay.url + "/healthz") as answer:
            assert await answer.json() == {"status": "ok"}


async def test_readyz_fails_when_the_store_is_gone(relay: EmbeddedRelay) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(relay.url + "/readyz") as answer:
            assert answer.status == 200
        await relay.backend.close()
        await asyncio.sleep(READY_MAX_AGE)  # the last check is not reused
        async with session.get(relay.url + "/readyz") as answer:
            assert answer.status == 503
            assert "store" in (await answer.json())["error"]
        async with session.get(relay.url + "/healthz") as answer:
            assert answer.status == 200  # the process is still up


async def test_readyz_of_relay_dev_fails_while_its_database_cannot_be_written(
    tmp_path: Path,
) -> None:
    """A real `relay dev`; another connection holds SQLite's write lock, as a stuck backup or
    a full disk would keep it from writing."""
    db = tmp_path / "dev.db"
    process = RelayProcess(db).start()
    try:
        async with aiohttp.ClientSession() as session:

            async def readyz() -> int:
                async with session.get(process.url + "/readyz") as answer:
                    return answer.status

            assert await readyz() == 200
            blocker = sqlite3.connect(db, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            try:
                await asyncio.sleep(READY_MAX_AGE)  # the last check is not reused
                started = time.monotonic()
                assert await readyz() == 503
                assert time.monotonic() - started < 5  # answers before a probe times out
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            deadline = time.monotonic() + 15
            while await readyz() != 200:
                assert time.monotonic() < deadline, "readyz did not recover"
                await asyncio.sleep(0.2)
    finally:
        assert process.stop() == 0
