"""The console in a real browser (Debian's chromium, driven by Playwright) against a real
``relay dev`` process: log in, watch messages, read a timeline, steer the DLQ, rotate keys,
cancel a workflow run.

Screenshots for the README: ``RELAY_SCREENSHOTS=docs .venv/bin/pytest tests/console -k screenshot``
writes ``docs/console-overview.png`` and ``docs/console-message.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright, expect

from bench.console import seed
from tests.conformance.test_workflow_runs import _init, _step
from tests.conftest import Receiver
from tests.e2e.process import RelayProcess

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000

pytestmark = pytest.mark.slow


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (`make test` installs it)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@contextlib.contextmanager
def running(db: Path) -> Iterator[RelayProcess]:
    """A real `relay dev` on its own port, on ``db``."""
    process = RelayProcess(db).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def relay_dev(tmp_path: Path) -> Iterator[RelayProcess]:
    with running(tmp_path / "relay.db") as process:
        yield process


async def publish(relay: RelayProcess, url: str, body: str, **headers: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{relay.url}/v2/publish/{url}",
            data=body,
            headers={"Authorization": f"Bearer {relay.env['QSTASH_TOKEN']}", **headers},
        ) as response,
    ):
        answer = await response.json()
        assert response.status == 201, answer
        first = answer[0] if isinstance(answer, list) else answer  # a URL group: one per endpoint
        return str(first["messageId"])


async def api_get(relay: RelayProcess, path: str) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            relay.url + path, headers={"Authorization": f"Bearer {relay.env['QSTASH_TOKEN']}"}
        ) as response,
    ):
        assert response.status == 200
        return await response.json()


async def wait_state(relay: RelayProcess, message_id: str, state: str) -> None:
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        events = (await api_get(relay, f"/v2/events?messageId={message_id}"))["events"]
        if any(e["state"] == state for e in events):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{message_id} never reached {state}")


async def log_in(browser: Browser, relay: RelayProcess, start: str = "/console/") -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(relay.url + start)
    await expect(page).to_have_url(re.compile(r"/console/login"))
    await page.fill("#token", relay.env["QSTASH_TOKEN"])
    await page.click("button[type=submit]")
    await expect(page).to_have_url(relay.url + start)
    return page


async def test_log_in_then_watch_a_message_arrive_and_get_delivered(
    browser: Browser, relay_dev: RelayProcess, receiver: Receiver
) -> None:
    page = await log_in(browser, relay_dev, "/console/messages")
    await expect(page.locator("tbody#rows")).to_contain_text("No messages")
    await page.evaluate("window.stillThisPage = true")  # survives only without a reload

    message_id = await publish(
        relay_dev, receiver.url("/jobs"), '{"n": 1}', **{"Upstash-Delay": "3s"}
    )
    row = page.locator(f'tr[data-id="{message_id}"]')
    await expect(row).to_be_visible(timeout=WAIT_MS)
    await expect(row.locator(".state")).to_have_text(re.compile("CREATED|ACTIVE"))
    await expect(row.locator(".state")).to_have_text("DELIVERED", timeout=WAIT_MS)
    assert await page.evaluate("window.stillThisPage") is True
    [got] = receiver.at("/jobs")
    assert got.body == b'{"n": 1}'

    # the filters narrow the same live list
    await page.select_option("select[name=state]", "FAILED")
    await page.click("form.filters button[type=submit]")
    await expect(page.locator("tbody#rows")).to_contain_text("No messages match these filters")


async def test_a_failed_message_shows_each_attempt(
    browser: Browser, relay_dev: RelayProcess, receiver: Receiver
) -> None:
    receiver.respond("/fail", lambda r: web.Response(status=500, text="database is down"))
    message_id = await publish(
        relay_dev,
        receiver.url("/fail"),
        '{"order": 7}',
        **{
            "Upstash-Retries": "1",
            "Upstash-Retry-Delay": "200",
            "Upstash-Forward-X-Tenant": "acme",
        },
    )
    await wait_state(relay_dev, message_id, "FAILED")

    page = await log_in(browser, relay_dev, "/console/messages")
    await page.select_option("select[name=state]", "FAILED")
    await page.click("form.filters button[type=submit]")
    await page.click(f'tr[data-id="{message_id}"] a')
    await expect(page).to_have_url(f"{relay_dev.url}/console/messages/{message_id}")
    timeline = page.locator("#timeline")
    await expect(timeline).to_have_attribute("data-state", "FAILED")
    states = await timeline.locator(".ev-head .state").all_inner_texts()
    assert states == ["CREATED", "ACTIVE", "RETRY", "ACTIVE", "FAILED"]
    attempts = timeline.locator(".attempt")
    await expect(attempts).to_have_count(2)
    for i in range(2):
        await expect(attempts.nth(i)).to_contain_text("HTTP 500")
        await expect(attempts.nth(i)).to_contain_text("database is down")
        await expect(attempts.nth(i)).to_contain_text(re.compile(r"in \d+ ms"))
    await expect(attempts.nth(0)).to_contain_text("next attempt")
    await expect(attempts.nth(1)).to_contain_text("moved to the DLQ")
    # the request as it was sent
    await expect(page.locator("table.kv")).to_contain_text("X-Tenant")
    await expect(page.locator("#request-body")).to_have_text('{"order": 7}')


async def test_retry_a_dlq_entry_then_delete_in_bulk(
    browser: Browser, relay_dev: RelayProcess, receiver: Receiver
) -> None:
    receiver.respond("/flaky", 500, 200)  # fails once, then works
    receiver.respond("/gone", 500)
    flaky = await publish(relay_dev, receiver.url("/flaky"), "x", **{"Upstash-Retries": "0"})
    gone = [
        await publish(relay_dev, receiver.url("/gone"), str(i), **{"Upstash-Retries": "0"})
        for i in range(2)
    ]
    for message_id in (flaky, *gone):
        await wait_state(relay_dev, message_id, "FAILED")

    page = await log_in(browser, relay_dev, "/console/dlq")
    rows = page.locator("tr[data-dlq]")
    await expect(rows).to_have_count(3)
    flaky_row = rows.filter(has_text=flaky)
    await flaky_row.locator("summary").click()
    await expect(flaky_row.locator("details")).to_contain_text("HTTP 500")
    await flaky_row.get_by_role("button", name="Retry").click()
    await expect(page.locator(".notice")).to_contain_text("Retried 1 DLQ message")
    await expect(rows).to_have_count(2)

    await page.goto(relay_dev.url + "/console/messages?url=%2Fflaky")
    listed = page.locator("tbody#rows tr[data-id]")
    await expect(listed).to_have_count(2)
    await expect(page.locator(f'tr[data-id="{flaky}"] .state')).to_have_text("FAILED")
    retried = listed.first
    await expect(retried.locator(".state")).to_have_text("DELIVERED", timeout=WAIT_MS)
    assert len(receiver.at("/flaky")) == 2

    await page.goto(relay_dev.url + "/console/dlq")
    await page.check("input[data-select-all]")
    await page.get_by_role("button", name="Delete selected").click()
    await expect(page.locator(".notice")).to_contain_text("Deleted 2 DLQ message")
    await expect(page.locator("tr[data-dlq]")).to_have_count(0)
    assert (await api_get(relay_dev, "/v2/dlq"))["messages"] == []


async def test_a_wrong_token_is_refused(browser: Browser, relay_dev: RelayProcess) -> None:
    page = await browser.new_page()
    await page.goto(relay_dev.url + "/console/dlq")
    await page.fill("#token", "not-the-token")
    await page.click("button[type=submit]")
    await expect(page.locator(".error")).to_have_text("That is not this relay's token.")
    assert await page.context.cookies() == []
    await page.goto(relay_dev.url + "/console/")
    await expect(page).to_have_url(re.compile(r"/console/login$"))


async def test_actions_without_the_csrf_token_are_refused(
    browser: Browser, relay_dev: RelayProcess
) -> None:
    page = await log_in(browser, relay_dev, "/console/keys")
    cookie = (await page.context.cookies())[0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    before = await page.locator("#current-key").inner_text()
    upcoming = await page.locator("#next-key").inner_text()

    # a form whose CSRF field is gone
    await page.click("text=Rotate keys…")
    await page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
    await page.click("text=Yes, rotate now")
    await expect(page.locator(".error")).to_contain_text("CSRF")
    # a request with the session cookie but without the token
    refused = await page.request.post(
        relay_dev.url + "/console/keys/rotate", form={"confirm": "rotate"}, max_redirects=0
    )
    assert refused.status == 403
    keys = await api_get(relay_dev, "/v2/keys")
    assert keys["current"] == before

    # the real thing, confirmed
    await page.goto(relay_dev.url + "/console/keys")
    await page.click("text=Rotate keys…")
    await expect(page.locator(".confirm")).to_contain_text("Rotate the signing keys?")
    await page.click("text=Yes, rotate now")
    await expect(page.locator(".notice")).to_contain_text("Rotated the signing keys")
    await expect(page.locator("#current-key")).to_have_text(upcoming)
    assert (await api_get(relay_dev, "/v2/keys"))["current"] == upcoming


async def test_url_groups_are_edited_in_place(
    browser: Browser, relay_dev: RelayProcess, receiver: Receiver
) -> None:
    page = await log_in(browser, relay_dev, "/console/url-groups")
    await expect(page.locator("main")).to_contain_text("No URL groups yet")
    add = page.locator("form[action='/console/url-groups/add']")
    for path, name in (("/a", "first"), ("/b", "")):
        await add.locator("input[name=group]").fill("fanout")
        await add.locator("input[name=url]").fill(receiver.url(path))
        await add.locator("input[name=name]").fill(name)
        await add.locator("button").click()
        await expect(page.locator(".notice")).to_contain_text("Saved the endpoint")
    group = page.locator("section.group")
    await expect(group.locator("tbody tr")).to_have_count(2)
    await publish(relay_dev, "fanout", "hi")
    await receiver.wait_for(1, "/a")
    await receiver.wait_for(1, "/b")
    await group.locator("tbody tr").filter(has_text="/b").get_by_role("button").click()
    await expect(page.locator(".notice")).to_contain_text("Removed the endpoint")
    await expect(page.locator("section.group tbody tr")).to_have_count(1)
    await page.get_by_role("button", name="Delete group fanout").click()
    await expect(page.locator("main")).to_contain_text("No URL groups yet")


async def api_post(
    relay: RelayProcess, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
) -> Any:
    sent = {"Authorization": f"Bearer {relay.env['QSTASH_TOKEN']}", **(headers or {})}
    async with (
        aiohttp.ClientSession() as session,
        session.post(relay.url + path, headers=sent, **kwargs) as response,
    ):
        assert response.status in (200, 201), await response.text()
        return await response.json()


async def test_pause_and_resume_a_queue(
    browser: Browser, relay_dev: RelayProcess, receiver: Receiver
) -> None:
    await api_post(relay_dev, "/v2/queues", json={"queueName": "emails", "parallelism": 1})
    page = await log_in(browser, relay_dev, "/console/queues")
    row = page.locator('tr[data-queue="emails"]')
    await expect(row.locator(".queue-state")).to_have_text("RUNNING")
    await row.get_by_role("button", name="Pause").click()
    await expect(page.locator(".notice")).to_contain_text("Paused the queue")
    await expect(row.locator(".queue-state")).to_have_text("PAUSED")

    await api_post(relay_dev, f"/v2/enqueue/emails/{receiver.url('/send')}", data="hello")
    await asyncio.sleep(1.0)
    assert receiver.at("/send") == []  # held by the pause
    await page.reload()
    await expect(row.locator(".lag")).to_have_text("1")

    await row.get_by_role("button", name="Resume").click()
    await expect(page.locator(".notice")).to_contain_text("Resumed the queue")
    await expect(row.locator(".queue-state")).to_have_text("RUNNING")
    [got] = await receiver.wait_for(1, "/send")
    assert got.body == b"hello"


async def test_schedules_show_the_next_fire_in_their_zone(
    browser: Browser, relay_dev: RelayProcess, receiver: Receiver
) -> None:
    answer = await api_post(
        relay_dev,
        f"/v2/schedules/{receiver.url('/daily')}",
        headers={"Upstash-Cron": "CRON_TZ=Europe/Paris 0 9 * * *"},
    )
    schedule_id = answer["scheduleId"]
    page = await log_in(browser, relay_dev, "/console/schedules")
    row = page.locator(f'tr[data-schedule="{schedule_id}"]')
    await expect(row.locator(".next-fire")).to_have_text(re.compile(r" 09:00:00 Europe/Paris$"))
    await row.get_by_role("button", name="Pause").click()
    await expect(page.locator(".notice")).to_contain_text("Paused the schedule")
    await expect(row.locator(".next-fire")).to_have_text("paused")
    await row.get_by_role("button", name="Delete").click()
    await expect(page.locator("main")).to_contain_text("No schedules")


async def test_a_workflow_run_shows_its_steps_and_is_cancelled(
    browser: Browser, relay_dev: RelayProcess, receiver: Receiver
) -> None:
    url = receiver.url("/wf")
    init = _init(url, "wfr_browser", '{"order": 7}')
    await api_post(relay_dev, "/v2/batch", json=[init])
    await receiver.wait_for(1, "/wf")
    step = {"stepId": 1, "stepName": "charge", "stepType": "Run", "out": '"paid"', "concurrent": 1}
    await api_post(relay_dev, "/v2/batch", json=[_step(url, "wfr_browser", json.dumps(step))])
    await receiver.wait_for(2, "/wf")

    page = await log_in(browser, relay_dev, "/console/workflows")
    await page.click('tr[data-run="wfr_browser"] a')
    await expect(page.locator("#run-state")).to_have_text("RUN_STARTED")
    steps = page.locator("#steps .step")
    await expect(steps).to_have_count(2)
    await expect(steps.nth(1)).to_contain_text("charge")
    await expect(steps.nth(1)).to_contain_text('"paid"')
    await page.click("text=Cancel run…")
    await expect(page.locator(".confirm")).to_contain_text("Cancel this run?")
    await page.click("text=Yes, cancel the run")
    await expect(page.locator(".notice")).to_contain_text("Cancelled the workflow run")
    await expect(page.locator("#run-state")).to_have_text("RUN_CANCELED")
    logs = await api_get(relay_dev, "/v2/workflows/logs?workflowRunId=wfr_browser")
    assert logs["runs"][0]["workflowState"] == "RUN_CANCELED"


async def test_screenshots_of_the_overview_and_a_timeline(
    browser: Browser, tmp_path: Path, receiver: Receiver
) -> None:
    """An hour of seeded traffic and one live message retried into delivery."""
    db = tmp_path / "relay.db"
    now = int(time.time() * 1000)
    await seed(db, 3_000, now=now, span_ms=3_600_000, step_ms=15_000, delayed=24)
    with running(db) as relay:
        receiver.respond("/orders/fulfil", 503, 503, lambda r: web.json_response({"ok": True}))
        message_id = await publish(
            relay,
            receiver.url("/orders/fulfil"),
            '{"order": "A-1042", "items": 3, "total": "89.90"}',
            **{
                "Content-Type": "application/json",
                "Upstash-Retry-Delay": "1000 * (1 + retried)",
                "Upstash-Label": "orders",
                "Upstash-Forward-X-Tenant": "acme",
            },
        )
        await wait_state(relay, message_id, "DELIVERED")

        page = await log_in(browser, relay, "/console/")
        charts = page.locator(".chart[data-drawn] canvas")
        await expect(charts).to_have_count(2)
        await expect(page.locator(".card.state-delivered .n")).not_to_have_text("0")
        await expect(page.locator("#p95")).to_have_text(re.compile(r"\d+ ms"))
        overview = await page.screenshot(
            path=str(tmp_path / "console-overview.png"), full_page=True
        )

        await page.goto(f"{relay.url}/console/messages/{message_id}")
        await expect(page.locator("#timeline")).to_have_attribute("data-state", "DELIVERED")
        message = await page.screenshot(path=str(tmp_path / "console-message.png"), full_page=True)
    assert overview.startswith(b"\x89PNG") and message.startswith(b"\x89PNG")
    if target := os.environ.get("RELAY_SCREENSHOTS"):
        for name in ("console-overview.png", "console-message.png"):
            shutil.copy(tmp_path / name, Path(target) / name)
