"""Workflow runs (reference F1 to F4, F6, F8) at the wire: what the SDKs publish, what relay
delivers. Messages are written as the SDKs write them (JS batch entries lower-cased, Init-only
run settings); the receiver checks each delivery with the official qstash Receiver."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from relay.clock import ManualClock
from relay.server import EmbeddedRelay
from relay.workflows.model import RunState
from tests.conftest import Api, OfficialVerdicts, Received, Receiver


@pytest.fixture
def verdicts(relay: EmbeddedRelay) -> OfficialVerdicts:
    keys = relay.service.keys
    return OfficialVerdicts(keys.current, keys.next)


def _init(url: str, run_id: str, body: str, **headers: str) -> dict[str, Any]:
    return {
        "destination": url,
        "headers": {
            "upstash-workflow-init": "true",
            "upstash-workflow-runid": run_id,
            "upstash-workflow-url": url,
            "upstash-forward-upstash-workflow-sdk-version": "1",
            "content-type": "application/json",
            **headers,
        },
        "body": body,
    }


def _step(url: str, run_id: str, body: str, **headers: str) -> dict[str, Any]:
    entry = _init(url, run_id, body, **headers)
    entry["headers"]["upstash-workflow-init"] = "false"
    return entry


def _from_callback(
    url: str, run_id: str, status: int, header: dict[str, list[str]], **request: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fromCallback step of call step 1 (what QStash posts back after a context.call to a
    third party answered ``status`` with ``header`` and the body "made"), and that callback:
    ``request`` sets its method (POST), sourceHeader and sourceBody ('{"q":1}')."""
    callback = {
        "status": status,
        "header": header,
        "body": base64.b64encode(b"made").decode(),
        "url": "https://third.party/api",
        "method": request.get("method", "POST"),
        "sourceHeader": request.get("source_header", {}),
        "sourceBody": base64.b64encode(request.get("source_body", b'{"q":1}')).decode(),
    }
    step = _step(
        url,
        run_id,
        json.dumps(callback),
        **{
            "upstash-workflow-calltype": "fromCallback",
            "upstash-forward-upstash-workflow-stepid": "1",
        },
    )
    return step, callback


async def _batch(api: Api, *entries: dict[str, Any], status: int = 201) -> Any:
    got, answer = await api.call("POST", "/v2/batch", json=list(entries))
    assert got == status, answer
    return answer


def _h(delivery: Received) -> CIMultiDict[str]:
    """A delivery's headers, whatever the case they were sent in."""
    return CIMultiDict(delivery.headers)


def _entries(delivery: Any) -> list[bytes]:
    return [base64.b64decode(e["body"]) for e in json.loads(delivery.body)]


async def test_init_delivers_entry_zero_and_a_known_run_id_is_deduplicated(
    api: Api, receiver: Receiver, verdicts: OfficialVerdicts
) -> None:
    receiver.respond("/wf", verdicts)
    url = receiver.url("/wf")
    [first] = await _batch(api, _init(url, "wfr_a", '{"name": "Jörg"}'))
    [again] = await _batch(api, _init(url, "wfr_a", '{"other": 1}'))
    assert again == {"messageId": first["messageId"], "deduplicated": True}
    [delivery] = await receiver.wait_for(1, "/wf")
    assert delivery.body == (
        b'[{"messageId":"'
        + first["messageId"].encode()
        + b'","body":"'
        + base64.b64encode('{"name": "Jörg"}'.encode())
        + b'","callType":"step"}]'
    )
    assert _h(delivery)["Content-Type"] == "application/json"
    assert _h(delivery)["Upstash-Workflow-RunId"] == "wfr_a"
    assert _h(delivery)["Upstash-Workflow-Url"] == url
    assert int(_h(delivery)["Upstash-Workflow-CreatedAt"]) > 0
    assert _h(delivery)["Upstash-Workflow-Sdk-Version"] == "1"
    assert verdicts == ["accepted"]
    assert len(receiver.at("/wf")) == 1


async def test_each_step_delivers_the_entries_up_to_its_own(api: Api, receiver: Receiver) -> None:
    url = receiver.url("/wf")
    await _batch(api, _init(url, "wfr_p", "init"))
    await receiver.wait_for(1, "/wf")
    # two parallel plan steps in one batch: each sees the prefix up to itself
    answer = await _batch(api, _step(url, "wfr_p", "plan-1"), _step(url, "wfr_p", "plan-2"))
    deliveries = await receiver.wait_for(3, "/wf")
    seen = sorted((_entries(d) for d in deliveries[1:]), key=len)
    assert seen == [[b"init", b"plan-1"], [b"init", b"plan-1", b"plan-2"]]
    last = json.loads(max(deliveries[1:], key=lambda d: len(d.body)).body)[-1]
    assert last["messageId"] == answer[1]["messageId"]
    status, fetched = await api.call("GET", "/v2/workflows/runs/wfr_p")
    assert status == 200
    assert [base64.b64decode(e["body"]) for e in fetched] == [b"init", b"plan-1", b"plan-2"]


async def test_run_settings_of_the_init_apply_to_later_steps(api: Api, receiver: Receiver) -> None:
    receiver.respond("/wf", 200, 200, 500)
    url = receiver.url("/wf")
    family = {
        "upstash-failure-callback": receiver.url("/failure"),
        "upstash-failure-callback-workflow-runid": "wfr_s",
        "upstash-failure-callback-workflow-calltype": "failureCall",
        "upstash-failure-callback-forward-upstash-workflow-is-failure": "true",
        "upstash-failure-callback-forward-x-trace": "t1",
    }
    init = _init(url, "wfr_s", '{"n": 1}', **family)
    init["headers"].update(
        {
            "upstash-forward-x-trace": "t1",
            "upstash-retries": "0",
            "upstash-label": "signup",
            "upstash-flow-control-key": "tenant-a",
            "upstash-flow-control-value": "parallelism=5",
        }
    )
    await _batch(api, init)
    await receiver.wait_for(1, "/wf")
    [s1] = await _batch(api, _step(url, "wfr_s", "s1"))
    second = (await receiver.wait_for(2, "/wf"))[1]
    assert _h(second)["X-Trace"] == "t1"  # the Init's forward
    [created] = [e for e in await api.events(messageId=s1["messageId"]) if e["state"] == "CREATED"]
    assert (created["label"], created["flowControlKey"]) == ("signup", "tenant-a")
    parallel = await _batch(api, _step(url, "wfr_s", "s2"), _step(url, "wfr_s", "s3"))
    [failure] = await receiver.wait_for(1, "/failure")
    body = json.loads(failure.body)
    assert base64.b64decode(body["sourceBody"]) == b'{"n": 1}'  # the initial payload
    assert body["status"] == 500 and body["maxRetries"] == 0  # the Init's retries
    assert body["workflowRunId"] == "wfr_s" and body["workflowUrl"] == url
    assert body["url"] == url and body["failureUrl"] == receiver.url("/failure")
    assert isinstance(body["workflowCreatedAt"], int) and body["dlqId"]
    assert failure.body == json.dumps(body, separators=(",", ":")).encode()
    assert _h(failure)["Upstash-Workflow-RunId"] == "wfr_s"
    assert _h(failure)["Upstash-Workflow-Is-Failure"] == "true"
    assert "Upstash-Workflow-Sdk-Version" not in _h(failure)
    assert _h(failure)["X-Trace"] == "t1"
    # both parallel steps failed: the run failed once, with one failure callback
    for step in parallel:
        await api.wait_state(step["messageId"], "FAILED")
    status, _answer = await api.call("GET", "/v2/workflows/runs/wfr_s")
    assert status == 404
    await _batch(api, _step(url, "wfr_s", "late"), status=400)
    assert len(receiver.at("/failure")) == 1


async def test_default_retries_are_three_whatever_relay_default(
    relay: EmbeddedRelay, api: Api, receiver: Receiver
) -> None:
    relay.service.settings.default_retries = 7  # the SDKs omit the header when they mean 3
    [workflow] = await _batch(api, _init(receiver.url("/wf"), "wfr_r", "x"))
    plain = await api.publish(receiver.url("/plain"), "x")
    for message_id, retries in ((workflow["messageId"], 3), (plain, 7)):
        [created] = [e for e in await api.events(messageId=message_id) if e["state"] == "CREATED"]
        assert created["maxRetries"] == retries


async def test_non_retryable_answer_fails_the_run_at_once(api: Api, receiver: Receiver) -> None:
    receiver.respond(
        "/wf", lambda r: web.Response(status=489, headers={"Upstash-NonRetryable-Error": "true"})
    )
    url = receiver.url("/wf")
    family = {
        "upstash-failure-callback": receiver.url("/failure"),
        "upstash-failure-callback-workflow-runid": "wfr_n",
        "upstash-failure-callback-workflow-calltype": "failureCall",
    }
    await _batch(api, _init(url, "wfr_n", "x", **family))
    [failure] = await receiver.wait_for(1, "/failure")
    assert json.loads(failure.body)["status"] == 489
    assert len(receiver.at("/wf")) == 1  # retries 3, yet not retried
    status, _answer = await api.call("GET", "/v2/workflows/runs/wfr_n")
    assert status == 404


async def test_end_is_idempotent_and_later_steps_are_refused(api: Api, receiver: Receiver) -> None:
    url = receiver.url("/wf")
    await _batch(api, _init(url, "wfr_e", "x"))
    for _ in range(2):
        status, _answer = await api.call(
            "DELETE", "/v2/workflows/runs/wfr_e?cancel=false", data=b'{"result":"ok"}'
        )
        assert status == 200
    status, answer = await api.call("POST", "/v2/batch", json=[_step(url, "wfr_e", "s")])
    assert status == 400 and "wfr_e" in answer["error"]
    status, answer = await api.call("DELETE", "/v2/workflows/runs/wfr_unknown?cancel=true")
    assert status == 404 and "error" in answer
    status, _answer = await api.call("GET", "/v2/workflows/runs/wfr_e")
    assert status == 404


async def test_cancel_drops_a_sleeping_step(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    url = receiver.url("/wf")
    await _batch(api, _init(url, "wfr_c", "x"))
    await receiver.wait_for(1, "/wf")
    [sleep] = await _batch(api, _step(url, "wfr_c", "nap", **{"upstash-delay": "30s"}))
    status, answer = await api.call("DELETE", "/v2/workflows/runs?workflowRunIds=wfr_c")
    assert (status, answer) == (200, {"cancelled": 1})
    status, answer = await api.call("DELETE", "/v2/workflows/runs?workflowRunIds=wfr_c")
    assert answer == {"cancelled": 0}
    assert (await api.states(sleep["messageId"]))[-1] == "CANCELED"  # at once
    clock.advance(31_000)
    relay.worker.notify()
    await asyncio.sleep(0.2)
    assert len(receiver.at("/wf")) == 1


async def test_a_due_message_of_an_ended_run_is_dropped_unsent(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    url = receiver.url("/wf")
    [init] = await _batch(api, _init(url, "wfr_d", "x", **{"upstash-delay": "10s"}))
    # ended behind the API's back: nothing cancelled the waiting Init
    await relay.service.backend.end_run("wfr_d", RunState.RUN_CANCELED, clock.now_ms())
    clock.advance(11_000)
    relay.worker.notify()
    await api.wait_state(init["messageId"], "CANCELED")
    assert receiver.at("/wf") == []


async def test_bulk_cancel_by_url_prefix_exact_url_and_count(api: Api, receiver: Receiver) -> None:
    for run_id, path in (("wfr_1", "/a/x"), ("wfr_2", "/a/y"), ("wfr_3", "/a"), ("wfr_4", "/b")):
        await _batch(api, _init(receiver.url(path), run_id, "x", **{"upstash-delay": "1h"}))

    async def cancel(query: str) -> int:
        status, answer = await api.call("DELETE", "/v2/workflows/runs?" + query)
        assert status == 200, answer
        return int(answer["cancelled"])

    exact = f"workflowUrl={receiver.url('/a')}&workflowUrlExactMatch=true"
    assert await cancel(exact) == 1
    assert await cancel(f"workflowUrl={receiver.url('/a/')}&count=1") == 1
    assert await cancel(f"workflowUrl={receiver.url('/a/')}&count=100") == 1
    assert await cancel("workflowRunIds=wfr_4&workflowRunIds=wfr_1") == 1


async def test_forwarded_hop_by_hop_and_relay_headers_are_dropped(
    api: Api, receiver: Receiver, verdicts: OfficialVerdicts
) -> None:
    receiver.respond("/wf", verdicts)
    forwards = {
        f"Upstash-Forward-{name}": "stale"
        for name in (
            "host",
            "content-length",
            "upstash-signature",
            "upstash-message-id",
            "upstash-retried",
            "connection",
            "accept-encoding",
            "user-agent",
        )
    }
    await _batch(api, _init(receiver.url("/wf"), "wfr_h", "x", **forwards))
    [delivery] = await receiver.wait_for(1, "/wf")
    assert verdicts == ["accepted"]
    assert _h(delivery)["Upstash-Retried"] == "0"
    assert _h(delivery)["User-Agent"] == "Upstash-QStash"
    assert "stale" not in _h(delivery).values()


async def test_call_goes_raw_to_the_third_party_and_its_callback_to_the_run(
    api: Api, receiver: Receiver
) -> None:
    receiver.respond("/api", lambda r: web.Response(text="third"))
    url = receiver.url("/wf")
    await _batch(api, _init(url, "wfr_k", "x", **{"upstash-forward-x-trace": "t"}))
    await receiver.wait_for(1, "/wf")
    call = _step(receiver.url("/api"), "wfr_k", "null")
    call["headers"] = {
        "upstash-workflow-runid": "wfr_k",
        "upstash-workflow-init": "false",
        "upstash-workflow-calltype": "toCallback",
        "upstash-method": "GET",
        "upstash-forward-x-call": "c",
        "upstash-callback": url,
        "upstash-callback-workflow-runid": "wfr_k",
        "upstash-callback-workflow-calltype": "fromCallback",
        "upstash-callback-forward-upstash-workflow-callback": "true",
    }
    await _batch(api, call)
    [third] = await receiver.wait_for(1, "/api")
    assert third.method == "GET" and third.body == b""
    assert _h(third)["X-Call"] == "c"
    assert not any(k.lower().startswith("upstash-workflow") for k in _h(third))
    assert "X-Trace" not in _h(third)  # the run's headers stay with the workflow URL
    callback = (await receiver.wait_for(2, "/wf"))[1]
    body = json.loads(callback.body)
    assert base64.b64decode(body["body"]) == b"third" and body["status"] == 200
    assert _h(callback)["Upstash-Workflow-RunId"] == "wfr_k"
    assert _h(callback)["Upstash-Workflow-Callback"] == "true"
    assert _h(callback)["X-Trace"] == "t"
    assert "Upstash-Workflow-Sdk-Version" not in _h(callback)


async def test_bulk_cancel_filters_by_the_message_filters_rule(
    api: Api, receiver: Receiver, clock: ManualClock
) -> None:
    """label, flowControlKey, callerIp, host, path, fromDate and toDate: values OR-ed,
    filters AND-ed, as ``DELETE /v2/messages`` has them."""
    later = {"upstash-delay": "1h"}
    started = clock.now_ms()
    await _batch(api, _init(receiver.url("/p"), "wfr_l", "x", **later, **{"upstash-label": "a,b"}))
    flow = {"upstash-flow-control-key": "k1", "upstash-flow-control-value": "parallelism=1"}
    await _batch(api, _init(receiver.url("/q"), "wfr_k", "x", **later, **flow))
    clock.advance(10_000)
    await _batch(api, _init(receiver.url("/p"), "wfr_t", "x", **later))
    await _batch(api, _init(receiver.url("/r"), "wfr_r", "x", **later))

    async def cancel(*params: tuple[str, str]) -> int:
        status, answer = await api.call("DELETE", "/v2/workflows/runs", params=list(params))
        assert status == 200, answer
        return int(answer["cancelled"])

    assert await cancel(("label", "b"), ("path", "/q")) == 0  # AND-ed
    assert await cancel(("callerIp", "192.0.2.1")) == 0
    assert await cancel(("host", "elsewhere.example")) == 0
    assert await cancel(("label", "b"), ("label", "zz")) == 1  # OR-ed: wfr_l
    assert await cancel(("flowControlKey", "k1"), ("callerIp", "127.0.0.1")) == 1  # wfr_k
    assert await cancel(("toDate", str(started + 5_000)), ("path", "/p")) == 0  # wfr_l ended
    assert await cancel(("fromDate", str(started + 5_000)), ("path", "/p")) == 1  # wfr_t
    states = {
        r: (await api.call("GET", f"/v2/workflows/events?workflowRunId={r}"))[1]
        for r in ("wfr_l", "wfr_k", "wfr_t", "wfr_r")
    }
    assert {r: a["runs"][0]["workflowState"] for r, a in states.items()} == {
        "wfr_l": "RUN_CANCELED",
        "wfr_k": "RUN_CANCELED",
        "wfr_t": "RUN_CANCELED",
        "wfr_r": "RUN_STARTED",
    }


async def test_the_workflow_dlq_and_logs_show_how_the_failure_callback_went(
    api: Api, receiver: Receiver
) -> None:
    receiver.respond("/wf", 500)
    handled = web.Response(status=202, text="handled", headers={"X-Handled": "yes"})
    receiver.respond("/failed", lambda r: handled)
    init = _init(
        receiver.url("/wf"),
        "wfr_fc",
        "x",
        **{
            "upstash-retries": "0",
            "upstash-failure-callback": receiver.url("/failed"),
            # as the SDK sends them: the failure callback is a message of the run
            "upstash-failure-callback-workflow-calltype": "failureCall",
            "upstash-failure-callback-workflow-runid": "wfr_fc",
        },
    )
    await _batch(api, init)
    await receiver.wait_for(1, "/failed")
    info: dict[str, Any] = {}
    for _ in range(100):
        _, page = await api.call("GET", "/v2/dlq?source=workflow&workflowRunId=wfr_fc")
        info = page["messages"][0]["failureCallbackInfo"] if page["messages"] else {}
        if info.get("state") == "CALLBACK_SUCCESS":
            break
        await asyncio.sleep(0.05)
    assert info == {
        "state": "CALLBACK_SUCCESS",
        "responseStatus": 202,
        "responseBody": "handled",
        "responseHeaders": info["responseHeaders"],
    }
    assert info["responseHeaders"]["X-Handled"] == ["yes"]
    _, logs = await api.call("GET", "/v2/workflows/events?workflowRunId=wfr_fc")
    function = logs["runs"][0]["failureFunction"]
    assert (function["responseStatus"], function["responseBody"]) == (202, "handled")
