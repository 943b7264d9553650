"""Routes of workflow events (``/v2/wait``, ``/v2/notify``, ``/v2/waiters``, webhooks), workflow
logs (``/v2/workflows/events``, ``/v2/workflows/logs``) and the workflow DLQ
(``/v2/workflows/dlq/…``); registered in relay.http.api's route table when it imports this. The
rules live in relay.workflows.waiters, .logs and .dlq."""

from __future__ import annotations

import re
from urllib.parse import unquote

from relay import protocol as p
from relay.http import openapi
from relay.http import schemas as s
from relay.http.api import (
    _BULK_DEFAULT,
    _BULK_MAX,
    ApiRequest,
    ApiResponse,
    _dlq_query,
    _with_cursor,
    delete_dlq_many,
    parse_query,
    route,
)
from relay.service import RelayService
from relay.workflows import dlq, logs, waiters
from relay.workflows.model import RunLogQuery

_MAX_RUNS = 100


@route(
    "POST",
    r"/v2/wait/(?P<event>[^/]+)",
    summary="Wait for an event (a workflow's waitForEvent step)",
    body=openapi.RAW_BODY,
)
async def wait_for_event(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    waiter = await waiters.wait(service, unquote(match["event"]), request.headers, request.body)
    return ApiResponse.json(waiter.to_json())


@route(
    "POST",
    r"/v2/notify/(?P<event>[^/]+)",
    summary="Notify the runs waiting for an event",
    body=openapi.RAW_BODY,
)
async def notify_event(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    return ApiResponse.json(await waiters.notify(service, unquote(match["event"]), request.body))


@route(
    "POST",
    r"/v2/notify/(?P<run>[^/]+)/(?P<event>[^/]+)",
    summary="Notify one run of an event; kept for its next wait if it is not waiting yet",
    body=openapi.RAW_BODY,
)
async def notify_run(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    woken = await waiters.notify(
        service, unquote(match["event"]), request.body, run_id=unquote(match["run"])
    )
    return ApiResponse.json(woken)


@route("GET", r"/v2/waiters/(?P<event>[^/]+)", summary="The steps waiting for an event")
async def list_waiters(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    found = await waiters.waiters_of(service, unquote(match["event"]))
    return ApiResponse.json([w.to_json() for w in found])


async def webhook(service: RelayService, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
    """A call to a ``createWebhook`` URL: the request, as the SDK rebuilds it, is the event of
    the run's ``waitForWebhook`` (kept for it when it is not waiting yet). No token: the
    run id and the random event id in the URL are the capability."""
    event = waiters.webhook_event(
        request.method, request.path, request.query, request.headers, request.body
    )
    run_id, event_id = unquote(match["run"]), unquote(match["event"])
    woken = await waiters.notify(service, event_id, event, run_id=run_id)
    return ApiResponse.json(woken)


for _method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
    route(
        _method,
        r"/v2/workflows/hooks/(?P<user>[^/]+)/(?P<run>[^/]+)/(?P<event>[^/]+)",
        public=True,
        summary="Call a workflow's webhook (createWebhook / waitForWebhook)",
        body=openapi.RAW_BODY,
    )(webhook)


async def workflow_logs(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    """Workflow runs with their steps, newest first: ``workflowRunId``, ``workflowUrl``,
    ``state``, ``workflowCreatedAt``, ``label``, ``fromDate`` and ``toDate`` (ms) filter;
    ``count`` (default 10) and ``cursor`` page."""
    count = request.param("count")
    times = {
        key: p.parse_int(value, what=key) if (value := request.param(key)) else None
        for key in ("workflowCreatedAt", "fromDate", "toDate")
    }
    query = RunLogQuery(
        run_id=request.param("workflowRunId") or None,
        url=request.param("workflowUrl") or None,
        state=request.param("state") or None,
        created_at=times["workflowCreatedAt"],
        label=request.param("label") or None,
        from_time=times["fromDate"],
        to_time=times["toDate"],
        count=p.parse_int(count, what="count", minimum=1, maximum=_MAX_RUNS)
        if count
        else logs.DEFAULT_COUNT,
    )
    if cursor := request.param("cursor"):
        query.before = logs.parse_cursor(cursor)
    return ApiResponse.json(await logs.list_logs(service, query))


# The JS SDK's client.logs calls /events; the REST docs name /logs: one answer for both.
for _path in (r"/v2/workflows/events", r"/v2/workflows/logs"):
    route("GET", _path, summary="Workflow run logs")(workflow_logs)


async def _dlq_targets(service: RelayService, request: ApiRequest) -> tuple[list[str], str | None]:
    """The DLQ ids a bulk workflow DLQ action means: ``dlqIds``, or a page of the workflow
    entries the filters match, and the cursor of the next page."""
    given = parse_query(request, s.DlqFilter)
    if given.dlq_ids:
        return given.dlq_ids, None
    page = await service.list_dlq(_dlq_query(given, _BULK_DEFAULT, _BULK_MAX))
    filters = {k: v for k in dlq.RUN_FILTERS if (v := request.param(k))}
    found = await dlq.of_runs(service, page.items, filters)
    return [f.entry.dlq_id for f in found], page.cursor


@route("POST", r"/v2/workflows/dlq/resume", summary="Resume failed workflow runs as new runs")
async def resume_runs(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    ids, cursor = await _dlq_targets(service, request)
    runs = await dlq.resume(service, ids, dlq.overrides_of(request.headers))
    return ApiResponse.json(_with_cursor({"workflowRuns": runs}, cursor))


@route("POST", r"/v2/workflows/dlq/restart", summary="Restart failed workflow runs as new runs")
async def restart_runs(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    ids, cursor = await _dlq_targets(service, request)
    runs = await dlq.restart(service, ids, dlq.overrides_of(request.headers))
    return ApiResponse.json(_with_cursor({"workflowRuns": runs}, cursor))


@route(
    "POST",
    r"/v2/workflows/dlq/callback/(?P<id>[^/]+)",
    summary="Send a failed workflow run's failure callback again",
)
async def retry_failure_function(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    return ApiResponse.json(await dlq.retry_failure_function(service, unquote(match["id"])))


route("DELETE", r"/v2/workflows/dlq", summary="Delete workflow DLQ messages")(delete_dlq_many)
