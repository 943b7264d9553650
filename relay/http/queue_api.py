"""Routes of queues (``/v2/enqueue``, ``/v2/queues``) and flow control (``/v2/flowControl``,
``/v2/globalParallelism``); registered in relay.http.api's route table when it imports this."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from relay import flow_control, queues
from relay.http import openapi
from relay.http import schemas as s
from relay.http.api import ApiRequest, ApiResponse, _publish_request, parse_body, parse_query, route
from relay.protocol import BadRequest
from relay.service import RelayService

_QUEUE = r"/v2/queues/(?P<name>[^/]+)"
_KEY = r"/v2/flowControl/(?P<key>[^/]+)"


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class QueueUpsert(_Wire):
    """``POST /v2/queues``: both SDKs send all three fields."""

    queue_name: str
    parallelism: int | None = Field(default=None, ge=1, le=queues.MAX_PARALLELISM)
    paused: bool | None = None


class Queue(_Wire):
    """A queue; ``lag`` counts its messages not finished yet."""

    name: str
    parallelism: int
    created_at: int
    updated_at: int
    lag: int
    paused: bool


class FlowControlInfo(_Wire):
    """A flow-control key: limits (0: none), use, pins."""

    flow_control_key: str
    wait_list_size: int
    parallelism_max: int
    parallelism_count: int
    rate_max: int
    rate_count: int
    rate_period: int = Field(description="seconds")
    rate_period_start: int = Field(description="unix seconds")
    is_paused: bool
    is_pinned_parallelism: bool
    is_pinned_rate: bool


class GlobalParallelism(_Wire):
    parallelism_max: int
    parallelism_count: int


class FlowControlSearch(BaseModel):
    search: str | None = None


class Pin(BaseModel):
    """``pin``: the limits to fix (period: seconds or a duration)."""

    parallelism: int | None = Field(default=None, ge=1, le=flow_control.MAX_LIMIT)
    rate: int | None = Field(default=None, ge=1, le=flow_control.MAX_LIMIT)
    period: str | None = None


class Unpin(BaseModel):
    """``unpin``: which limits to release (neither given: both)."""

    parallelism: bool | None = None
    rate: bool | None = None


def _name(match: re.Match[str]) -> str:
    return unquote(match["name"])


def _key(match: re.Match[str]) -> str:
    key = unquote(match["key"])
    flow_control.check_key(key)
    return key


# --- queues ------------------------------------------------------------------------------------


@route(
    "POST",
    r"/v2/enqueue/(?P<queue>[^/]+)/(?P<destination>.+)",
    summary="Enqueue a message: publish it to the end of a FIFO queue (created if missing)",
    headers=s.PublishHeaders,
    body=openapi.RAW_BODY,
    response=s.Published | list[s.Published],
    statuses=(201, 202),
)
async def enqueue(service: RelayService, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
    """As publish, into the queue named in the path."""
    publish = _publish_request(request, match["destination"])
    publish.queue = unquote(match["queue"])
    status, answer = await service.publish(publish)
    return ApiResponse.json(answer, status)


@route(
    "POST",
    r"/v2/queues",
    summary="Create or update a queue",
    body=QueueUpsert,
    response=s.Empty,
)
async def upsert_queue(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    given = parse_body(request, QueueUpsert)
    await queues.upsert(
        service, given.queue_name, parallelism=given.parallelism, paused=given.paused
    )
    return ApiResponse.json({})


@route("GET", r"/v2/queues", summary="List queues", response=list[Queue])
async def list_queues(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    return ApiResponse.json(await queues.list_all(service))


@route("GET", _QUEUE, summary="Get a queue", response=Queue)
async def get_queue(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    return ApiResponse.json(await queues.get(service, _name(match)))


@route("DELETE", _QUEUE, summary="Delete a queue", response=s.Empty)
async def delete_queue(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    """Its messages already enqueued are still delivered, one at a time."""
    await queues.delete(service, _name(match))
    return ApiResponse.json({})


@route("POST", _QUEUE + "/pause", summary="Pause a queue", response=s.Empty)
async def pause_queue(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    """It keeps accepting messages and starts none until resumed."""
    await queues.set_paused(service, _name(match), True)
    return ApiResponse.json({})


@route("POST", _QUEUE + "/resume", summary="Resume a queue", response=s.Empty)
async def resume_queue(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    await queues.set_paused(service, _name(match), False)
    return ApiResponse.json({})


# --- flow control ------------------------------------------------------------------------------


@route(
    "GET",
    r"/v2/flowControl",
    summary="List flow-control keys",
    query=FlowControlSearch,
    response=list[FlowControlInfo],
)
async def list_flow_control(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    given = parse_query(request, FlowControlSearch)
    return ApiResponse.json(await flow_control.list_info(service, given.search))


@route("GET", _KEY, summary="Get a flow-control key", response=FlowControlInfo)
async def get_flow_control(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    return ApiResponse.json(await flow_control.get_info(service, _key(match)))


@route("POST", _KEY + "/pause", summary="Pause a flow-control key", response=s.Empty)
async def pause_flow_control(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    """Its messages wait, new ones too, until resumed."""
    await flow_control.change(service, _key(match), paused=True)
    return ApiResponse.json({})


@route("POST", _KEY + "/resume", summary="Resume a flow-control key", response=s.Empty)
async def resume_flow_control(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    await flow_control.change(service, _key(match), paused=False)
    return ApiResponse.json({})


@route(
    "POST", _KEY + "/pin", summary="Pin a flow-control key's limits", query=Pin, response=s.Empty
)
async def pin_flow_control(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    """Later messages' values are ignored for what is pinned."""
    given = parse_query(request, Pin)
    period = None if given.period is None else flow_control.parse_period(given.period)
    if (given.parallelism, given.rate, period) == (None, None, None):
        raise BadRequest("give the limits to pin: parallelism, rate and/or period")
    key = _key(match)
    pin = flow_control.FlowControl(key, given.parallelism, given.rate, period)
    await flow_control.change(service, key, pin=pin)
    return ApiResponse.json({})


@route(
    "POST",
    _KEY + "/unpin",
    summary="Unpin a flow-control key's limits",
    query=Unpin,
    response=s.Empty,
)
async def unpin_flow_control(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    """The next message's values apply again to what is unpinned."""
    given = parse_query(request, Unpin)
    if given.parallelism is None and given.rate is None:
        which = (True, True)
    else:
        which = (bool(given.parallelism), bool(given.rate))
    await flow_control.change(service, _key(match), unpin=which)
    return ApiResponse.json({})


@route("POST", _KEY + "/resetRate", summary="Start a new rate window now", response=s.Empty)
async def reset_flow_control_rate(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    await flow_control.change(service, _key(match), reset_rate=True)
    return ApiResponse.json({})


@route(
    "GET",
    r"/v2/globalParallelism",
    summary="Attempts under way, and how many may run at once",
    response=GlobalParallelism,
)
async def global_parallelism(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    answer: dict[str, Any] = await flow_control.global_parallelism(service)
    return ApiResponse.json(answer)
