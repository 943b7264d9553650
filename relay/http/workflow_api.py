"""Routes of workflow runs (``/v2/workflows/runs``): end or cancel a run, bulk cancel, and the
lazy fetch of a run's entries; registered in relay.http.api's route table when it imports this.
The rules live in relay.workflows.runs."""

from __future__ import annotations

import re
from urllib.parse import unquote

from relay import protocol as p
from relay.http import openapi
from relay.http import schemas as s
from relay.http.api import ApiRequest, ApiResponse, parse_query, route
from relay.service import RelayService
from relay.workflows import runs
from relay.workflows.model import RunQuery

_RUN = r"/v2/workflows/runs/(?P<run>[^/]+)"


@route(
    "DELETE",
    _RUN,
    summary="End a workflow run: success (cancel=false, the body is its response) or cancel",
    body=openapi.RAW_BODY,
    body_optional=True,
)
async def end_run(service: RelayService, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
    cancel = p.parse_bool(request.param("cancel") or "false")
    response = request.body.decode("utf-8", "replace") if request.body else None
    await runs.end(service, unquote(match["run"]), cancel=cancel, response=response)
    return ApiResponse.json({})


@route(
    "DELETE",
    r"/v2/workflows/runs",
    summary="Cancel workflow runs by id, by URL, by filter, or all",
    query=s.RunFilter,
)
async def cancel_runs(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    given = parse_query(request, s.RunFilter)
    query = RunQuery(
        run_ids=given.workflow_run_ids,
        url=given.workflow_url,
        url_exact=given.workflow_url_exact_match,
        count=given.count,
        labels=given.label,
        flow_control_keys=given.flow_control_key,
        caller_ips=given.caller_ip,
        hosts=given.host,
        paths=given.path,
        from_time=given.from_date,
        to_time=given.to_date,
    )
    return ApiResponse.json({"cancelled": await runs.cancel_matching(service, query)})


@route("GET", _RUN, summary="A workflow run's entries (the SDK's lazy fetch)")
async def fetch_run(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    body = await runs.fetch(service, unquote(match["run"]))
    return ApiResponse(200, body, {"Content-Type": "application/json"})
