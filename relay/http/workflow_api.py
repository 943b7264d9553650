"""Routes of workflow runs (``/v2/workflows/runs``): end or cancel a run, bulk cancel, and the
lazy fetch of a run's entries; registered in relay.http.api's route table when it imports this.
The rules live in relay.workflows.runs."""

from __future__ import annotations

import re
from urllib.parse import unquote

from relay import protocol as p
from relay.http import openapi
from relay.http.api import ApiRequest, ApiResponse, route
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


@route("DELETE", r"/v2/workflows/runs", summary="Cancel workflow runs by id or by URL")
async def cancel_runs(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    count = request.param("count")
    query = RunQuery(
        run_ids=request.param_list("workflowRunIds"),
        url=request.param("workflowUrl") or None,
        url_exact=p.parse_bool(request.param("workflowUrlExactMatch") or "false"),
        count=p.parse_int(count, what="count", minimum=1) if count else None,
    )
    return ApiResponse.json({"cancelled": await runs.cancel_matching(service, query)})


@route("GET", _RUN, summary="A workflow run's entries (the SDK's lazy fetch)")
async def fetch_run(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    body = await runs.fetch(service, unquote(match["run"]))
    return ApiResponse(200, body, {"Content-Type": "application/json"})
