"""The HTTP API, once: a transport-neutral request, the route table, and the handlers that turn
requests into service calls. ``app.py`` (aiohttp) and the Lambda adapter only translate."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_origin
from urllib.parse import parse_qsl, unquote

import orjson
from pydantic import BaseModel, ValidationError

from relay import protocol as p
from relay import scheduling, tokens
from relay.destinations import repair_scheme
from relay.health import store_problem
from relay.http import openapi
from relay.http import schemas as s
from relay.http.render import dlq_json, event_json, message_json
from relay.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from relay.models import DlqQuery, EventQuery, MessageState, PendingQuery
from relay.protocol import ApiError, BadRequest, NotFound, Unauthorized
from relay.redaction import redact
from relay.service import PublishRequest, RelayService
from relay.workflows import dlq as workflow_dlq
from relay.workflows import invoke

log = logging.getLogger("relay.http")


@dataclass(slots=True)
class ApiRequest:
    """One API request as both transports see it. ``path`` and ``query`` are raw (still
    percent-encoded): a destination URL travels unencoded inside them."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    remote: str | None = None
    _params: list[tuple[str, str]] | None = field(default=None, repr=False)

    def header(self, name: str) -> str | None:
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None

    @property
    def params(self) -> list[tuple[str, str]]:
        if self._params is None:
            self._params = parse_qsl(self.query, keep_blank_values=True)
        return self._params

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.params if k == name), None)

    def param_list(self, name: str) -> list[str]:
        """Repeated parameters, and comma-separated values within each."""
        return [part for k, v in self.params if k == name for part in v.split(",") if part]


@dataclass(slots=True)
class ApiResponse:
    """What a handler answers; the transport writes it out."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, obj: Any, status: int = 200) -> ApiResponse:
        return cls(status, orjson.dumps(obj), {"Content-Type": "application/json"})


Handler = Callable[[RelayService, ApiRequest, "re.Match[str]"], Awaitable[ApiResponse]]
ROUTES: list[tuple[str, re.Pattern[str], Handler]] = []
# Handlers answered without the token: probes and scrapers (`/healthz`, `/readyz`, `/metrics`),
# and the console's pages, which check their own session cookie (relay.console.pages).
PUBLIC: set[Handler] = set()
# What the OpenAPI document says of a handler (relay.http.openapi); others get a permissive entry.
DOCS: dict[Handler, openapi.Doc] = {}


def route(
    method: str,
    pattern: str,
    *,
    public: bool = False,
    summary: str | None = None,
    query: type[BaseModel] | None = None,
    headers: type[BaseModel] | None = None,
    body: Any = None,
    body_optional: bool = False,
    response: Any = None,
    statuses: tuple[int, ...] = (200,),
) -> Callable[[Handler], Handler]:
    """Register a handler for ``method`` and the path regex ``pattern`` (named groups are
    path parameters). The rest describes it in ``/v2/openapi.json``: ``query`` and ``headers``
    are models of its parameters, ``body`` the model (or type) of its JSON body —
    ``openapi.RAW_BODY`` for any bytes — and ``response`` the type of its answers."""
    doc = None
    if (summary, query, headers, body, response) != (None,) * 5:
        doc = openapi.Doc(summary, query, headers, body, body_optional, response, statuses)

    def register(handler: Handler) -> Handler:
        ROUTES.append((method, re.compile(pattern + r"\Z"), handler))
        if public:
            PUBLIC.add(handler)
        if doc is not None:
            DOCS[handler] = doc
        return handler

    return register


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route registered so far (built once per route
    count: routes are registered at import)."""
    if _document[0] != len(ROUTES):
        _document[:] = [
            len(ROUTES),
            openapi.document(
                openapi.Operation(
                    method=method,
                    pattern=pattern.pattern,
                    name=handler.__name__,
                    description=handler.__doc__,
                    doc=DOCS.get(handler),
                    public=handler in PUBLIC,
                )
                for method, pattern, handler in ROUTES
            ),
        ]
    document: dict[str, Any] = copy.deepcopy(_document[1])  # the caller's to change
    return document


_document: list[Any] = [-1, {}]


Model = TypeVar("Model", bound=BaseModel)


def parse_query(request: ApiRequest, model: type[Model]) -> Model:
    """The query string as ``model``: a list field takes every value of its parameter (repeated,
    or comma-separated), any other the first; empty values count as missing."""
    data: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if get_origin(info.annotation) is list:
            if values := request.param_list(key):
                data[key] = values
        elif raw := request.param(key):
            data[key] = raw
    return _validated(model, data, "query parameter")


def parse_body(request: ApiRequest, model: type[Model]) -> Model:
    """The JSON body as ``model`` (an absent body is ``{}``)."""
    try:
        data = orjson.loads(request.body) if request.body else {}
    except orjson.JSONDecodeError:
        raise BadRequest("body must be JSON") from None
    return _validated(model, data, "body field")


def _validated(model: type[Model], data: Any, what: str) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors()
        )
        raise BadRequest(f"invalid {what}: {problems}") from None


async def handle(service: RelayService, request: ApiRequest) -> ApiResponse:
    """Authenticate, route and run one request; every error becomes QStash-shaped JSON."""
    try:
        try:
            matched = _match(request)
        except ApiError:
            _authenticate(service, request)  # a caller without the token learns nothing
            raise
        if matched is None or matched[0] not in PUBLIC:
            _authenticate(service, request)
        if matched is None:
            raise NotFound(f"no route for {request.method} {request.path}")
        handler, match = matched
        return await handler(service, request, match)
    except ApiError as exc:
        return ApiResponse.json({"error": exc.message}, exc.status)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return ApiResponse.json({"error": "internal server error"}, 500)


def _match(request: ApiRequest) -> tuple[Handler, re.Match[str]] | None:
    allowed = False
    for method, pattern, handler in ROUTES:
        match = pattern.match(request.path)
        if match is None:
            continue
        if method == request.method:
            return handler, match
        allowed = True
    if allowed:
        raise ApiError(f"method {request.method} not allowed on {request.path}", 405)
    return None


def _authenticate(service: RelayService, request: ApiRequest) -> None:
    given = request.param("qstash_token")
    header = request.header("Authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
    if given is None:
        raise Unauthorized("missing token: send 'Authorization: Bearer <QSTASH_TOKEN>'")
    if not tokens.accepts(given, service.token):
        raise Unauthorized("invalid token")


# --- publish ---------------------------------------------------------------------------------


def _publish_request(request: ApiRequest, destination: str) -> PublishRequest:
    """Rebuild the destination from the raw path and raw query (the SDKs do not encode it);
    relay's own query keys (`qstash_token`, `upstash-*`) are taken out and become headers."""
    kept: list[str] = []
    config: list[tuple[str, str]] = []
    for part in request.query.split("&") if request.query else []:
        key = unquote(part.split("=", 1)[0]).lower()
        if key == "qstash_token":
            continue
        if key.startswith(p.PREFIX):
            config.append((key, unquote(part.partition("=")[2].replace("+", " "))))
            continue
        kept.append(part)
    url = repair_scheme(destination) + ("?" + "&".join(kept) if kept else "")
    return PublishRequest(
        destination=url,
        headers=request.headers,
        body=request.body,
        caller_ip=request.remote,
        query_headers=config,
    )


@route(
    "POST",
    r"/v2/publish/(?P<destination>.+)",
    summary="Publish a message to a URL, or to every endpoint of a URL group",
    headers=s.PublishHeaders,
    body=openapi.RAW_BODY,
    response=s.Published | list[s.Published],
    statuses=(201, 202),
)
async def publish(service: RelayService, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
    """The destination is the rest of the path, unencoded, with the request's query string
    (a URL group's name otherwise); 202 answers a deduplicated publish."""
    publish_request = _publish_request(request, match["destination"])
    if invoke.requested(request.headers):  # a workflow's context.invoke starts a child run
        status, answer = await invoke.start(service, publish_request)
    else:
        status, answer = await service.publish(publish_request)
    return ApiResponse.json(answer, status)


@route(
    "POST",
    r"/v2/batch",
    summary="Publish many messages at once",
    body=list[s.BatchItem],
    response=list[s.Published | list[s.Published]],
    statuses=(201,),
)
async def batch(service: RelayService, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
    try:
        items = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise BadRequest("batch body must be a JSON array of messages") from None
    if not isinstance(items, list):
        raise BadRequest("batch body must be a JSON array of messages")
    requests = []
    for index, item in enumerate(items):
        requests.append(_batch_item(item, index, request.remote))
    status, answer = await service.batch(requests)
    return ApiResponse.json(answer, status)


def _batch_item(item: Any, index: int, remote: str | None) -> PublishRequest:
    if not isinstance(item, dict) or not isinstance(item.get("destination"), str):
        raise BadRequest(f"batch item {index}: needs a 'destination' string")
    headers = item.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise BadRequest(f"batch item {index}: 'headers' must map names to strings")
    body = item.get("body")
    if body is not None and not isinstance(body, str):
        raise BadRequest(f"batch item {index}: 'body' must be a string")
    queue = item.get("queue")
    if queue is not None and not isinstance(queue, str):
        raise BadRequest(f"batch item {index}: 'queue' must be a queue's name")
    return PublishRequest(
        destination=repair_scheme(item["destination"]),
        headers=list(headers.items()),
        body=(body or "").encode(),
        caller_ip=remote,
        queue=queue or None,  # the item is enqueued (the Python SDK sends null when not)
    )


# --- messages --------------------------------------------------------------------------------


@route("GET", r"/v2/messages/(?P<id>[^/]+)", summary="Get a message", response=s.Message)
async def get_message(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    return ApiResponse.json(message_json(await service.get_message(unquote(match["id"]))))


@route(
    "DELETE",
    r"/v2/messages",
    summary="Cancel messages by id, by filter, or all pending ones",
    query=s.MessageFilter,
    body=s.MessageIds,
    body_optional=True,
    response=s.Cancelled,
)
async def cancel_many(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    """Ids come as repeated ``messageIds`` parameters (TypeScript SDK) or a JSON body
    (Python SDK). Without ids, the filters choose among the messages not yet finished; with
    neither, every one of them is cancelled."""
    given = parse_query(request, s.MessageFilter)
    ids = given.message_ids + parse_body(request, s.MessageIds).message_ids
    if ids:
        return ApiResponse.json({"cancelled": await service.cancel_many(ids)})
    query = PendingQuery(
        urls=given.url,
        hosts=given.host,
        paths=given.path,
        topic_names=given.topic_name,
        queue_names=given.queue_name,
        schedule_ids=given.schedule_id,
        labels=given.label,
        flow_control_keys=given.flow_control_key,
        caller_ips=given.caller_ip,
        from_time=given.from_date,
        to_time=given.to_date,
    )
    return ApiResponse.json({"cancelled": await service.cancel_matching(query)})


def _json_object(request: ApiRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        value = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise BadRequest("body must be a JSON object") from None
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


def _json_list(request: ApiRequest, key: str) -> list[Any]:
    value = _json_object(request).get(key) or []
    if not isinstance(value, list):
        raise BadRequest(f"{key!r} must be a list")
    return value


@route(
    "DELETE",
    r"/v2/messages/(?P<id>[^/]+)",
    summary="Cancel a message",
    response=s.Cancelled,
)
async def cancel_message(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    return ApiResponse.json({"cancelled": await service.cancel(unquote(match["id"]))})


# --- logs ------------------------------------------------------------------------------------


def _states(values: list[s.StateFilter]) -> list[MessageState]:
    states: list[MessageState] = []
    for value in values:
        if value is s.StateFilter.IN_PROGRESS:
            states += [MessageState.ACTIVE, MessageState.RETRY, MessageState.ERROR]
        else:
            states.append(MessageState(value.value))
    return states


def _event_query(request: ApiRequest) -> EventQuery:
    given = parse_query(request, s.EventFilter)
    return EventQuery(
        message_ids=given.message_id + given.message_ids,
        states=_states(given.state),
        urls=given.url,
        topic_names=given.topic_name,
        queue_names=given.queue_name,
        schedule_ids=given.schedule_id,
        labels=given.label,
        hosts=given.host,
        paths=given.path,
        flow_control_keys=given.flow_control_key,
        caller_ips=given.caller_ip,
        from_time=given.from_date,
        to_time=given.to_date,
        cursor=given.cursor,
        count=min(given.count or 1000, 1000),
    )


@route("GET", r"/v2/events", summary="List logs", query=s.EventFilter, response=s.EventsPage)
async def list_events(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    """Newest first; the official SDKs call this path."""
    page = await service.list_events(_event_query(request))
    return ApiResponse.json(_page(page.cursor, "events", [event_json(e) for e in page.items]))


@route("GET", r"/v2/logs", summary="List logs", query=s.EventFilter, response=s.LogsPage)
async def list_logs(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    """Newest first; the path and key QStash's documentation uses."""
    page = await service.list_events(_event_query(request))
    return ApiResponse.json(_page(page.cursor, "logs", [event_json(e) for e in page.items]))


def _page(cursor: str | None, key: str, items: list[Any]) -> dict[str, Any]:
    return _with_cursor({key: items}, cursor)


def _with_cursor(answer: dict[str, Any], cursor: str | None) -> dict[str, Any]:
    """``answer`` with the cursor of the next page; none on the last page."""
    if cursor:
        answer["cursor"] = cursor
    return answer


# --- DLQ -------------------------------------------------------------------------------------


def _dlq_query(given: s.DlqFilter, count: int, maximum: int) -> DlqQuery:
    return DlqQuery(
        dlq_ids=given.dlq_ids,
        message_ids=given.message_id,
        urls=given.url,
        topic_names=given.topic_name,
        queue_names=given.queue_name,
        schedule_ids=given.schedule_id,
        labels=given.label,
        response_statuses=given.response_status,
        caller_ips=given.caller_ip,
        flow_control_keys=given.flow_control_key,
        from_time=given.from_date,
        to_time=given.to_date,
        cursor=given.cursor,
        count=min(given.count or count, maximum),
    )


@route("GET", r"/v2/dlq", summary="List the DLQ", query=s.DlqFilter, response=s.DlqPage)
async def list_dlq(service: RelayService, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
    """Newest first, 100 at most per page."""
    page = await service.list_dlq(_dlq_query(parse_query(request, s.DlqFilter), 100, 100))
    messages = [dlq_json(e) for e in page.items]
    if request.param("source") == "workflow":  # the workflow SDK's client.dlq.list
        filters = {k: v for k in workflow_dlq.RUN_FILTERS if (v := request.param(k))}
        found = await workflow_dlq.of_runs(service, page.items, filters)
        # The run's redaction (its Init's) holds for its messages, those stored without it too.
        messages = [{**dlq_json(f.entry, also=f.run.redact), **f.fields} for f in found]
    return ApiResponse.json(_page(page.cursor, "messages", messages))


@route("GET", r"/v2/dlq/(?P<id>[^/]+)", summary="Get a DLQ message", response=s.DlqMessage)
async def get_dlq(service: RelayService, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
    return ApiResponse.json(dlq_json(await service.get_dlq(unquote(match["id"]))))


@route("DELETE", r"/v2/dlq/(?P<id>[^/]+)", summary="Delete a DLQ message", response=s.Deleted)
async def delete_dlq(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    dlq_id = unquote(match["id"])
    if not await service.delete_dlq([dlq_id]):
        raise NotFound(f"dlq message {dlq_id} not found")
    return ApiResponse.json({"deleted": 1})


# Bulk DLQ operations: ids (query or JSON body), else one page of the entries the filters
# match — every entry without filters — and the cursor of the next page (callers loop on it).
_BULK_DEFAULT, _BULK_MAX = 100, 1000


@route(
    "DELETE",
    r"/v2/dlq",
    summary="Delete DLQ messages by id, by filter, or all",
    query=s.DlqFilter,
    body=s.DlqIds,
    body_optional=True,
    response=s.Deleted,
)
async def delete_dlq_many(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    """By ids: those entries. Otherwise a page of the entries the filters match (``count``,
    default 100), and the ``cursor`` to delete the next page with."""
    given = parse_query(request, s.DlqFilter)
    ids = given.dlq_ids + parse_body(request, s.DlqIds).dlq_ids
    if ids:
        return ApiResponse.json({"deleted": await service.delete_dlq(ids)})
    deleted, cursor = await service.delete_dlq_matching(_dlq_query(given, _BULK_DEFAULT, _BULK_MAX))
    return ApiResponse.json(_with_cursor({"deleted": deleted}, cursor))


@route(
    "POST",
    r"/v2/dlq/retry",
    summary="Retry DLQ messages by id, by filter, or all",
    query=s.DlqFilter,
    body=s.DlqIds,
    body_optional=True,
    response=s.Retried,
)
async def retry_dlq_many(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    """Each entry is published again with a new message id (its CREATED log names the old
    one) and leaves the DLQ. By ids, or a page of the entries the filters match and the
    ``cursor`` of the next."""
    given = parse_query(request, s.DlqFilter)
    ids = given.dlq_ids + parse_body(request, s.DlqIds).dlq_ids
    cursor = None
    if ids:
        new_ids = await service.retry_dlq(ids)
    else:
        new_ids, cursor = await service.retry_dlq_matching(
            _dlq_query(given, _BULK_DEFAULT, _BULK_MAX)
        )
    return ApiResponse.json(
        _with_cursor({"responses": [{"messageId": m} for m in new_ids]}, cursor)
    )


@route(
    "POST",
    r"/v2/dlq/retry/(?P<id>[^/]+)",
    summary="Retry a DLQ message",
    response=s.Published,
    statuses=(201,),
)
async def retry_dlq(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    [new_id] = await service.retry_dlq([unquote(match["id"])])
    return ApiResponse.json({"messageId": new_id}, 201)


# --- URL groups ------------------------------------------------------------------------------


@route(
    "POST",
    r"/v2/topics/(?P<name>[^/]+)/endpoints",
    summary="Add endpoints to a URL group (created if missing)",
    body=s.Endpoints,
    response=s.Empty,
)
async def upsert_endpoints(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    await service.upsert_endpoints(unquote(match["name"]), _endpoints(request))
    return ApiResponse.json({})


@route(
    "DELETE",
    r"/v2/topics/(?P<name>[^/]+)/endpoints",
    summary="Remove endpoints from a URL group",
    body=s.Endpoints,
    response=s.Empty,
)
async def remove_endpoints(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    await service.remove_endpoints(unquote(match["name"]), _endpoints(request))
    return ApiResponse.json({})


def _endpoints(request: ApiRequest) -> list[dict[str, Any]]:
    endpoints = _json_list(request, "endpoints")
    if not all(isinstance(e, dict) for e in endpoints):
        raise BadRequest("'endpoints' must be a list of objects like {\"url\": ...}")
    return endpoints


@route("GET", r"/v2/topics", summary="List URL groups", response=list[s.UrlGroup])
async def list_url_groups(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    return ApiResponse.json(await service.list_url_groups())


@route("GET", r"/v2/topics/(?P<name>[^/]+)", summary="Get a URL group", response=s.UrlGroup)
async def get_url_group(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    return ApiResponse.json(await service.get_url_group(unquote(match["name"])))


@route("DELETE", r"/v2/topics/(?P<name>[^/]+)", summary="Delete a URL group", response=s.Empty)
async def delete_url_group(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    await service.delete_url_group(unquote(match["name"]))
    return ApiResponse.json({})


# --- schedules -------------------------------------------------------------------------------

# No ':' in an id, so that no URL destination (`https:/…` after a slash-merging proxy) is one.
_SCHEDULE_ID = r"/v2/schedules/(?P<id>[^/:]+)"


# Pause and resume come before create: its destination pattern would match their paths too.
# Both SDKs send PATCH; QStash's OpenAPI documents POST.
@route("PATCH", _SCHEDULE_ID + "/pause", summary="Pause a schedule", response=s.Empty)
@route("POST", _SCHEDULE_ID + "/pause", summary="Pause a schedule", response=s.Empty)
async def pause_schedule(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    await scheduling.pause(service, unquote(match["id"]))
    return ApiResponse.json({})


@route("PATCH", _SCHEDULE_ID + "/resume", summary="Resume a schedule", response=s.Empty)
@route("POST", _SCHEDULE_ID + "/resume", summary="Resume a schedule", response=s.Empty)
async def resume_schedule(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    await scheduling.resume(service, unquote(match["id"]))
    return ApiResponse.json({})


@route(
    "POST",
    r"/v2/schedules/(?P<destination>.+)",
    summary="Create (or replace) a cron schedule publishing to a URL or URL group",
    headers=s.ScheduleHeaders,
    body=openapi.RAW_BODY,
    response=s.ScheduleCreated,
)
async def create_schedule(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    """The destination travels as in publish; the body is each fire's message body."""
    publish = _publish_request(request, match["destination"])
    return ApiResponse.json({"scheduleId": await scheduling.create(service, publish)})


@route("GET", r"/v2/schedules", summary="List schedules", response=list[s.Schedule])
async def list_schedules(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    schedules = await scheduling.list_all(service)
    return ApiResponse.json([_redacted(schedule) for schedule in schedules])


@route("GET", _SCHEDULE_ID, summary="Get a schedule", response=s.Schedule)
async def get_schedule(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    return ApiResponse.json(_redacted(await scheduling.get(service, unquote(match["id"]))))


def _redacted(schedule: dict[str, Any]) -> dict[str, Any]:
    """A schedule with its `Upstash-Redact-Fields` applied, as a message's are."""
    return redact(schedule, schedule.pop("redact", None))


@route("DELETE", _SCHEDULE_ID, summary="Delete a schedule", response=s.Empty)
async def delete_schedule(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    await scheduling.delete(service, unquote(match["id"]))
    return ApiResponse.json({})


# --- keys ------------------------------------------------------------------------------------


@route("GET", r"/v2/keys", summary="Get the signing keys", response=s.SigningKeys)
async def get_keys(service: RelayService, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
    keys = await service.load_keys()  # another process (Lambda container) may have rotated them
    return ApiResponse.json({"current": keys.current, "next": keys.next})


@route(
    "POST",
    r"/v2/keys/rotate",
    summary="Rotate the signing keys: next becomes current, a new next",
    response=s.SigningKeys,
)
async def rotate_keys(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    keys = await service.rotate_keys()
    return ApiResponse.json({"current": keys.current, "next": keys.next})


# --- the API's description (no token: tools load it as they find it) ---------------------------


@route("GET", r"/v2/openapi.json", public=True, summary="This document", response=dict[str, Any])
async def openapi_json(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    """The OpenAPI 3.1 description of this API, generated from the route table."""
    return ApiResponse.json(openapi_document())


# --- probes and metrics (no token) -----------------------------------------------------------


@route("GET", r"/healthz", public=True)
async def healthz(service: RelayService, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
    """The process is up and answering."""
    return ApiResponse.json({"status": "ok"})


@route("GET", r"/readyz", public=True)
async def readyz(service: RelayService, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
    """The store takes a write and gives it back; 503 when it does not."""
    problem = await store_problem(service.backend, service.clock.now_ms())
    if problem is not None:
        return ApiResponse.json({"status": "unavailable", "error": problem}, 503)
    return ApiResponse.json({"status": "ok"})


@route("GET", r"/metrics", public=True)
async def metrics(service: RelayService, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
    """Prometheus text exposition of the relay's counters, histograms and queue gauges."""
    body = await service.metrics.scrape(service.backend, service.clock.now_ms())
    return ApiResponse(200, body, {"Content-Type": METRICS_CONTENT_TYPE})


# The web console's pages share this route table, so every transport serves them; imported last
# because they register through `route` above. Jinja2 is loaded on the first console request.
import relay.console.pages  # noqa: E402
import relay.http.queue_api  # noqa: E402  (queues and flow control)
import relay.http.workflow_api  # noqa: E402  (workflow runs)
import relay.http.workflow_events_api  # noqa: E402, F401  (workflow waits and logs)
