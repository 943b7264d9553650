"""The HTTP API, once: a transport-neutral request, the route table, and the handlers that turn
requests into service calls. ``app.py`` (aiohttp) and the Lambda adapter only translate."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from relay import protocol as p
from relay.destinations import repair_scheme
from relay.http.render import dlq_json, event_json, message_json
from relay.models import DlqQuery, EventQuery, MessageState
from relay.protocol import ApiError, BadRequest, NotFound, Unauthorized
from relay.service import PublishRequest, RelayService

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


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ROUTES.append((method, re.compile(pattern + r"\Z"), handler))
        return handler

    return register


async def handle(service: RelayService, request: ApiRequest) -> ApiResponse:
    """Authenticate, route and run one request; every error becomes QStash-shaped JSON."""
    try:
        _authenticate(service, request)
        matched = _match(request)
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
    if not hmac.compare_digest(given.encode(), service.token.encode()):
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


@route("POST", r"/v2/publish/(?P<destination>.+)")
async def publish(service: RelayService, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
    status, answer = await service.publish(_publish_request(request, match["destination"]))
    return ApiResponse.json(answer, status)


@route("POST", r"/v2/batch")
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
    if item.get("queue"):
        raise BadRequest(f"batch item {index}: queues are not supported yet")
    return PublishRequest(
        destination=repair_scheme(item["destination"]),
        headers=list(headers.items()),
        body=(body or "").encode(),
        caller_ip=remote,
    )


# --- messages --------------------------------------------------------------------------------


@route("GET", r"/v2/messages/(?P<id>[^/]+)")
async def get_message(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    return ApiResponse.json(message_json(await service.get_message(unquote(match["id"]))))


@route("DELETE", r"/v2/messages")
async def cancel_many(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    ids = request.param_list("messageIds") + _json_list(request, "messageIds")
    if not ids:
        raise BadRequest(
            "give the messages to cancel as messageIds (cancel by filter is not supported yet)"
        )
    return ApiResponse.json({"cancelled": await service.cancel_many(ids)})


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


@route("DELETE", r"/v2/messages/(?P<id>[^/]+)")
async def cancel_message(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    return ApiResponse.json({"cancelled": await service.cancel(unquote(match["id"]))})


# --- logs ------------------------------------------------------------------------------------


def _count(request: ApiRequest, default: int, maximum: int) -> int:
    raw = request.param("count")
    if raw is None or raw == "":
        return default
    return min(p.parse_int(raw, what="count", minimum=1), maximum)


def _time(request: ApiRequest, name: str) -> int | None:
    raw = request.param(name)
    return None if raw in (None, "") else p.parse_int(raw, what=name)


def _cursor(request: ApiRequest) -> str | None:
    raw = request.param("cursor")
    if raw in (None, ""):
        return None
    if not raw.isdigit():
        raise BadRequest(f"invalid cursor {raw!r}")
    return raw


def _states(request: ApiRequest) -> list[MessageState]:
    states: list[MessageState] = []
    for value in request.param_list("state"):
        if value.upper() == "IN_PROGRESS":
            states += [MessageState.ACTIVE, MessageState.RETRY, MessageState.ERROR]
            continue
        try:
            states.append(MessageState(value.upper().replace("CANCELLED", "CANCELED")))
        except ValueError:
            raise BadRequest(f"invalid state {value!r}") from None
    return states


def _event_query(request: ApiRequest) -> EventQuery:
    return EventQuery(
        message_ids=request.param_list("messageId") + request.param_list("messageIds"),
        states=_states(request),
        urls=request.param_list("url"),
        topic_names=request.param_list("topicName"),
        queue_names=request.param_list("queueName"),
        schedule_ids=request.param_list("scheduleId"),
        labels=request.param_list("label"),
        from_time=_time(request, "fromDate"),
        to_time=_time(request, "toDate"),
        cursor=_cursor(request),
        count=_count(request, 1000, 1000),
    )


@route("GET", r"/v2/events")
async def list_events(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    page = await service.list_events(_event_query(request))
    return ApiResponse.json(_page(page.cursor, "events", [event_json(e) for e in page.items]))


@route("GET", r"/v2/logs")
async def list_logs(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    page = await service.list_events(_event_query(request))
    return ApiResponse.json(_page(page.cursor, "logs", [event_json(e) for e in page.items]))


def _page(cursor: str | None, key: str, items: list[Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {key: items}
    if cursor:
        answer["cursor"] = cursor
    return answer


# --- DLQ -------------------------------------------------------------------------------------


@route("GET", r"/v2/dlq")
async def list_dlq(service: RelayService, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
    statuses = []
    for value in request.param_list("responseStatus"):
        statuses.append(p.parse_int(value, what="responseStatus"))
    query = DlqQuery(
        dlq_ids=request.param_list("dlqIds"),
        message_ids=request.param_list("messageId"),
        urls=request.param_list("url"),
        topic_names=request.param_list("topicName"),
        queue_names=request.param_list("queueName"),
        schedule_ids=request.param_list("scheduleId"),
        labels=request.param_list("label"),
        response_statuses=statuses,
        from_time=_time(request, "fromDate"),
        to_time=_time(request, "toDate"),
        cursor=_cursor(request),
        count=_count(request, 100, 100),
    )
    page = await service.list_dlq(query)
    return ApiResponse.json(_page(page.cursor, "messages", [dlq_json(e) for e in page.items]))


@route("GET", r"/v2/dlq/(?P<id>[^/]+)")
async def get_dlq(service: RelayService, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
    return ApiResponse.json(dlq_json(await service.get_dlq(unquote(match["id"]))))


@route("DELETE", r"/v2/dlq/(?P<id>[^/]+)")
async def delete_dlq(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    dlq_id = unquote(match["id"])
    if not await service.delete_dlq([dlq_id]):
        raise NotFound(f"dlq message {dlq_id} not found")
    return ApiResponse.json({"deleted": 1})


@route("DELETE", r"/v2/dlq")
async def delete_dlq_many(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    ids = request.param_list("dlqIds") + _json_list(request, "dlqIds")
    if not ids:
        raise BadRequest("give the DLQ ids to delete as dlqIds")
    return ApiResponse.json({"deleted": await service.delete_dlq(ids)})


@route("POST", r"/v2/dlq/retry")
async def retry_dlq_many(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    ids = request.param_list("dlqIds") + _json_list(request, "dlqIds")
    if not ids:
        raise BadRequest("give the DLQ entries to retry as dlqIds")
    new_ids = await service.retry_dlq(ids)
    return ApiResponse.json({"responses": [{"messageId": m} for m in new_ids]})


@route("POST", r"/v2/dlq/retry/(?P<id>[^/]+)")
async def retry_dlq(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    [new_id] = await service.retry_dlq([unquote(match["id"])])
    return ApiResponse.json({"messageId": new_id}, 201)


# --- URL groups ------------------------------------------------------------------------------


@route("POST", r"/v2/topics/(?P<name>[^/]+)/endpoints")
async def upsert_endpoints(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    await service.upsert_endpoints(unquote(match["name"]), _endpoints(request))
    return ApiResponse.json({})


@route("DELETE", r"/v2/topics/(?P<name>[^/]+)/endpoints")
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


@route("GET", r"/v2/topics")
async def list_url_groups(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    return ApiResponse.json(await service.list_url_groups())


@route("GET", r"/v2/topics/(?P<name>[^/]+)")
async def get_url_group(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    return ApiResponse.json(await service.get_url_group(unquote(match["name"])))


@route("DELETE", r"/v2/topics/(?P<name>[^/]+)")
async def delete_url_group(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    await service.delete_url_group(unquote(match["name"]))
    return ApiResponse.json({})


# --- keys ------------------------------------------------------------------------------------


@route("GET", r"/v2/keys")
async def get_keys(service: RelayService, request: ApiRequest, match: re.Match[str]) -> ApiResponse:
    return ApiResponse.json({"current": service.keys.current, "next": service.keys.next})


@route("POST", r"/v2/keys/rotate")
async def rotate_keys(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    keys = await service.rotate_keys()
    return ApiResponse.json({"current": keys.current, "next": keys.next})
