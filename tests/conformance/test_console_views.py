"""What the console reads, on both backends: the message list and its filters, counts by state,
the outcome figures behind the throughput and latency charts, and the workflow run pages (list,
run, cancel) through the console's routes."""

from __future__ import annotations

import asyncio
import json
import re
from urllib.parse import quote

import pytest
from aiohttp import web

from relay.clock import ManualClock
from relay.console import pages
from relay.models import MessageQuery, MessageState
from relay.server import EmbeddedRelay
from relay.workflows.model import RunState
from tests.conformance.test_workflow_log_details import start_failing_run
from tests.conformance.test_workflow_runs import _batch, _init, _step
from tests.conftest import Api, Receiver
from tests.console.test_http import call, log_in


async def _publish_mix(api: Api, receiver: Receiver) -> dict[str, str]:
    """One delivered, one failed, one delayed (waiting), published in that order."""
    receiver.respond("/fail", lambda r: web.Response(status=500, text="boom"))
    ok = await api.publish(receiver.url("/ok"), "a", headers={"Upstash-Label": "green"})
    await api.wait_state(ok, "DELIVERED")
    failed = await api.publish(
        receiver.url("/fail"), "b", headers={"Upstash-Retries": "0", "Upstash-Label": "red"}
    )
    await api.wait_state(failed, "FAILED")
    later = await api.publish(receiver.url("/later"), "c", headers={"Upstash-Delay": "1h"})
    return {"ok": ok, "failed": failed, "later": later}


async def test_message_list_newest_first_with_filters(
    relay: EmbeddedRelay, api: Api, receiver: Receiver, clock: ManualClock
) -> None:
    ids = await _publish_mix(api, receiver)
    service = relay.service
    page = await service.list_messages(MessageQuery())
    assert [m.id for m in page.items] == [ids["later"], ids["failed"], ids["ok"]]
    assert page.cursor is None
    assert all(m.body == b"" for m in page.items)  # a list carries no bodies
    states = {m.id: m.state for m in page.items}
    assert states[ids["ok"]] == MessageState.DELIVERED
    assert states[ids["failed"]] == MessageState.FAILED
    assert states[ids["later"]] == MessageState.CREATED

    async def listed(**filters: object) -> list[str]:
        return [m.id for m in (await service.list_messages(MessageQuery(**filters))).items]  # type: ignore[arg-type]

    assert await listed(states=[MessageState.FAILED]) == [ids["failed"]]
    assert await listed(states=[MessageState.FAILED, MessageState.DELIVERED]) == [
        ids["failed"],
        ids["ok"],
    ]
    assert await listed(url_contains="/lat") == [ids["later"]]
    assert await listed(labels=["green"]) == [ids["ok"]]
    # (the manual clock gave all three the same creation time: their order is not defined here)
    assert sorted(await listed(message_ids=[ids["ok"], ids["later"]])) == sorted(
        [ids["later"], ids["ok"]]
    )
    assert await listed(message_ids=[ids["ok"]], states=[MessageState.FAILED]) == []
    now = clock.now_ms()
    assert await listed(from_time=now + 1) == []
    assert len(await listed(from_time=now - 1000, to_time=now)) == 3


async def test_message_list_pages_with_a_cursor(relay: EmbeddedRelay, api: Api) -> None:
    ids = [
        await api.publish("http://127.0.0.1:9/x", str(i), headers={"Upstash-Delay": "1h"})
        for i in range(5)
    ]
    service = relay.service
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        page = await service.list_messages(MessageQuery(count=2, cursor=cursor))
        seen += [m.id for m in page.items]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == list(reversed(ids)) and cursor is None


async def test_counts_and_outcomes(
    relay: EmbeddedRelay, api: Api, receiver: Receiver, clock: ManualClock
) -> None:
    before = clock.now_ms()
    await _publish_mix(api, receiver)
    service = relay.service
    counts = await service.count_messages()
    # exact on both backends (a small table: the AWS backend scans it whole)
    assert counts.exact and counts.segments == 1
    assert counts.by_state == {
        MessageState.DELIVERED: 1,
        MessageState.FAILED: 1,
        MessageState.CREATED: 1,
    }
    assert counts.total == 3

    outcomes = await relay.backend.list_outcomes(before, 100)
    assert sorted(state for _, state, _ in outcomes) == [
        MessageState.DELIVERED,
        MessageState.FAILED,
    ]
    assert all(isinstance(duration, int) for _, _, duration in outcomes)
    assert await relay.backend.list_outcomes(clock.now_ms() + 1, 100) == []

    stats = await service.delivery_stats()
    assert len(stats.starts) == 60 and stats.starts[-1] <= clock.now_ms()
    assert stats.totals == {"delivered": 1, "retried": 0, "failed": 1}
    assert stats.latency_p50 is not None and stats.latency_p50 == stats.latency_p95


# --- workflow runs ---------------------------------------------------------------------------


async def _runs(api: Api, receiver: Receiver) -> str:
    """Run ``wfr_a`` (label signup) with its init and a ``charge`` step delivered, and ``wfr_b``
    to another URL; the URL of ``wfr_a``."""
    url = receiver.url("/wf")
    await _batch(api, _init(url, "wfr_a", '{"order": 7}', **{"upstash-label": "signup"}))
    await receiver.wait_for(1, "/wf")
    step = {"stepId": 1, "stepName": "charge", "stepType": "Run", "out": '"paid"', "concurrent": 1}
    await _batch(api, _step(url, "wfr_a", json.dumps(step)))
    await receiver.wait_for(2, "/wf")
    await _batch(api, _init(receiver.url("/other"), "wfr_b", "{}"))
    return url


async def test_workflow_run_list_filters_and_pages(
    relay: EmbeddedRelay, api: Api, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await _runs(api, receiver)
    cookie, _ = await log_in(relay)

    async def listed(query: str = "") -> tuple[list[str], str]:
        page = await call(relay, "GET", f"/console/workflows?{query}", cookie=cookie)
        assert page.status == 200, page.body
        html = page.body.decode()
        return re.findall(r'data-run="([^"]+)"', html), html

    found, html = await listed()
    assert sorted(found) == ["wfr_a", "wfr_b"]
    assert "signup" in html and "RUN_STARTED" in html
    assert (await listed("url=" + quote(url, safe="")))[0] == ["wfr_a"]
    assert (await listed("state=RUN_STARTED&url=" + quote(url, safe="")))[0] == ["wfr_a"]
    found, html = await listed("state=RUN_CANCELED")
    assert found == [] and "No workflow runs match these filters" in html
    bad = await call(relay, "GET", "/console/workflows?state=DONE", cookie=cookie)
    assert bad.status == 400 and b"invalid run state" in bad.body
    bad = await call(relay, "GET", "/console/workflows?cursor=x", cookie=cookie)
    assert bad.status == 400

    monkeypatch.setattr(pages, "PAGE_SIZE", 1)
    first, html = await listed()
    cursor = re.search(r'cursor=([^"]+)">Older runs', html)
    assert cursor is not None
    second, html = await listed("cursor=" + cursor[1])
    assert sorted(first + second) == ["wfr_a", "wfr_b"]


async def test_workflow_run_page_shows_its_steps(
    relay: EmbeddedRelay, api: Api, receiver: Receiver
) -> None:
    await _runs(api, receiver)
    cookie, _ = await log_in(relay)
    page = await call(relay, "GET", "/console/workflows/wfr_a", cookie=cookie)
    assert page.status == 200
    html = page.body.decode()
    assert 'id="run-state">RUN_STARTED' in html
    assert re.findall(r'data-step="([^"]*)"', html) == ["init", "charge"]
    assert "&#34;paid&#34;" in html and "order" in html
    # each step links to the message that carried it
    status, log = await api.call("GET", "/v2/workflows/logs?workflowRunId=wfr_a")
    assert status == 200
    for group in log["runs"][0]["steps"]:
        for step in group["steps"]:
            assert f'href="/console/messages/{step["messageId"]}"' in html
    assert "?confirm=cancel" in html  # the run is going on: it can be cancelled
    unknown = await call(relay, "GET", "/console/workflows/wfr_nope", cookie=cookie)
    assert unknown.status == 404 and b"wfr_nope not found" in unknown.body


async def test_the_next_step_shows_its_errors(
    relay: EmbeddedRelay, api: Api, receiver: Receiver
) -> None:
    await start_failing_run(api, receiver, "wfr_f")
    cookie, _ = await log_in(relay)
    for _ in range(50):
        page = await call(relay, "GET", "/console/workflows/wfr_f", cookie=cookie)
        if b"boom" in page.body:
            break
        await asyncio.sleep(0.05)  # the settlement lands
    html = page.body.decode()
    assert 'data-group="next"' in html and "STEP_RETRY" in html
    assert 'data-step="charge"' in html and "HTTP 500: boom" in html


async def test_cancel_a_workflow_run(relay: EmbeddedRelay, api: Api, receiver: Receiver) -> None:
    await _runs(api, receiver)
    cookie, csrf = await log_in(relay)
    action = "/console/workflows/wfr_a/cancel"
    for form in ("confirm=cancel", "confirm=cancel&csrf=wrong"):
        refused = await call(relay, "POST", action, cookie=cookie, form=form)
        assert refused.status == 403 and b"CSRF" in refused.body
    unconfirmed = await call(relay, "POST", action, cookie=cookie, form=f"csrf={csrf}")
    assert unconfirmed.status == 400
    run = await relay.service.backend.get_run("wfr_a")
    assert run is not None and run.state is RunState.RUN_STARTED

    asked = await call(relay, "GET", "/console/workflows/wfr_a?confirm=cancel", cookie=cookie)
    assert b"Cancel this run?" in asked.body
    done = await call(relay, "POST", action, cookie=cookie, form=f"csrf={csrf}&confirm=cancel")
    assert done.status == 303
    assert done.headers["Location"] == "/console/workflows/wfr_a?done=run-cancelled"
    run = await relay.service.backend.get_run("wfr_a")
    assert run is not None and run.state is RunState.RUN_CANCELED
    page = await call(relay, "GET", done.headers["Location"], cookie=cookie)
    html = page.body.decode()
    assert 'id="run-state">RUN_CANCELED' in html and "Cancelled the workflow run" in html
    assert "?confirm=cancel" not in html
    # the other run goes on; an unknown run is a 404 page
    other = await relay.service.backend.get_run("wfr_b")
    assert other is not None and other.state is RunState.RUN_STARTED
    unknown = await call(
        relay,
        "POST",
        "/console/workflows/wfr_nope/cancel",
        cookie=cookie,
        form=f"csrf={csrf}&confirm=cancel",
    )
    assert unknown.status == 404


async def test_overview_cards_say_how_the_counts_were_made(
    relay: EmbeddedRelay, api: Api, receiver: Receiver
) -> None:
    from relay.backends.aws import AwsBackend

    await _publish_mix(api, receiver)
    cookie, _ = await log_in(relay)

    async def figures() -> tuple[list[str], str]:
        html = (await call(relay, "GET", "/console/figures", cookie=cookie)).body.decode()
        return re.findall(r'<span class="n">([^<]*)</span>', html), html

    cards, html = await figures()
    assert cards[0] == "3" and not any("~" in card for card in cards)
    assert "sample" not in html
    aws = relay.backend if isinstance(relay.backend, AwsBackend) else None
    assert ("Counts refresh every 60 seconds." in html) == bool(aws)  # SQLite: afresh each time
    if aws:  # a table "large" for a sample of 1 item, counted again
        aws.count_sample, aws._counts.seconds = 1, 0
        cards, html = await figures()
        assert all(card.startswith("~") for card in cards)
        assert re.search(r"Estimated \(~\) from a 1/\d+ sample of the table\. Counts refresh", html)
