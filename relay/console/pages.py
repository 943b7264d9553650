"""The console's routes, in the API's one route table (so ``relay dev``, ``relay serve`` and the
AWS API function all serve them). They take no Bearer token: each checks the session cookie,
and every POST its CSRF token; every read and write goes through ``RelayService``."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from relay import flow_control, queues, scheduling, tokens
from relay.console import session as sessions
from relay.console.templating import SECURITY_HEADERS, render, static_file
from relay.http.api import ApiRequest, ApiResponse, route
from relay.http.render import message_json
from relay.models import DlqQuery, EventQuery, MessageQuery, MessageState
from relay.protocol import ApiError, BadRequest, NotFound
from relay.redaction import Redaction
from relay.service import RelayService
from relay.workflows import logs, runs
from relay.workflows.model import RunLogQuery, RunState

PREFIX = "/console"
PAGE_SIZE = 50
# What a finished action says on the page it returns to (a code in the URL, never free text).
NOTICES = {
    "retried": "Retried {n} DLQ message(s): they are published again with new ids.",
    "deleted": "Deleted {n} DLQ message(s).",
    "cancelled": "Cancelled the message.",
    "rotated": "Rotated the signing keys: the next key is now current; a new next key was made.",
    "added": "Saved the endpoint.",
    "removed": "Removed the endpoint.",
    "dropped": "Deleted the URL group.",
    "schedule-pause": "Paused the schedule.",
    "schedule-resume": "Resumed the schedule: it fires again from now on.",
    "schedule-delete": "Deleted the schedule.",
    "queue-pause": "Paused the queue: its messages wait until it is resumed.",
    "queue-resume": "Resumed the queue.",
    "key-pause": "Paused the flow-control key.",
    "key-resume": "Resumed the flow-control key.",
    "run-cancelled": "Cancelled the workflow run: its waiting steps are cancelled too.",
}


@dataclass(slots=True)
class Context:
    """One console request with its verified session."""

    service: RelayService
    request: ApiRequest
    match: re.Match[str]
    session: sessions.Session
    form: list[tuple[str, str]] = field(default_factory=list)

    def values(self, name: str) -> list[str]:
        """Non-empty values of ``name`` from the query string and the form."""
        return [v.strip() for k, v in [*self.request.params, *self.form] if k == name and v.strip()]

    def value(self, name: str) -> str | None:
        found = self.values(name)
        return found[0] if found else None

    def page(self, template: str, code: int = 200, /, **context: Any) -> ApiResponse:
        """Render ``template`` with what every page needs (the CSRF token, the notice)."""
        notice = NOTICES.get(self.value("done") or "")
        if notice:
            n = self.value("n") or ""
            notice = notice.format(n=int(n) if n.isdigit() else 0)
        return render(
            template,
            code,
            csrf=self.session.csrf,
            path=self.request.path,
            notice=notice,
            **context,
        )


PageHandler = Callable[[Context], Awaitable[ApiResponse]]


def page(method: str, pattern: str) -> Callable[[PageHandler], PageHandler]:
    """Register a console route that needs a session (and, for POST, the CSRF token)."""

    def register(handler: PageHandler) -> PageHandler:
        async def guarded(
            service: RelayService, request: ApiRequest, match: re.Match[str]
        ) -> ApiResponse:
            now = service.clock.now_ms()
            cookie = sessions.read_cookie(request.header("Cookie"))
            session = sessions.verify(service.token, cookie, now)
            if session is None:
                return _to_login(request)
            form = _form(request) if method == "POST" else []
            if method == "POST":
                given = request.header(sessions.CSRF_HEADER) or dict(form).get(sessions.CSRF_FIELD)
                if not sessions.csrf_ok(session, given):
                    return render(
                        "error.html",
                        403,
                        status=403,
                        message="This action lacks its CSRF token: reload the page and try again.",
                        csrf=session.csrf,
                        path=request.path,
                    )
            context = Context(service, request, match, session, form)
            try:
                return await handler(context)
            except ApiError as exc:
                status = exc.status
                return context.page("error.html", status, status=status, message=exc.message)

        # Named apart from the API's handlers (the OpenAPI document uses names as operation ids).
        guarded.__name__ = f"console_{handler.__name__}"
        guarded.__doc__ = handler.__doc__
        route(method, PREFIX + pattern, public=True)(guarded)
        return handler

    return register


def _to_login(request: ApiRequest) -> ApiResponse:
    path, query = request.path, request.query
    if request.header("HX-Request"):
        # An htmx poll would swap the log-in page into a table: have the browser load it, to
        # come back to the page it was on.
        current = urlsplit(request.header("HX-Current-URL") or "")
        path, query = current.path or PREFIX + "/", current.query
    target = PREFIX + "/login"
    if request.method == "GET" and path != PREFIX + "/":
        target += "?" + urlencode({"next": _local(path, query)})
    if request.header("HX-Request"):
        return ApiResponse(401, b"", {"HX-Redirect": target, **SECURITY_HEADERS})
    return redirect(target)


def redirect(location: str, **headers: str) -> ApiResponse:
    return ApiResponse(303, b"", {"Location": location, "Cache-Control": "no-store", **headers})


def _local(path: str, query: str = "") -> str:
    """A console path to return to after logging in; anything else becomes the overview."""
    if not path.startswith(PREFIX) or "//" in path or "\\" in path:
        return PREFIX + "/"
    return path + ("?" + query if query else "")


def _form(request: ApiRequest) -> list[tuple[str, str]]:
    content_type = (request.header("Content-Type") or "").lower()
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return []
    return parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True)


def _secure(request: ApiRequest) -> bool:
    return (request.header("X-Forwarded-Proto") or "").lower() == "https"


# --- log-in ----------------------------------------------------------------------------------


@route("GET", PREFIX + r"/login", public=True)
async def console_login_form(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    target = _local(request.param("next") or PREFIX + "/")
    cookie = sessions.read_cookie(request.header("Cookie"))
    if sessions.verify(service.token, cookie, service.clock.now_ms()) is not None:
        return redirect(target)
    return render("login.html", next=target, error=None)


@route("POST", PREFIX + r"/login", public=True)
async def console_login(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    form = dict(_form(request))
    target = _local(form.get("next") or PREFIX + "/")
    given = form.get("token", "").strip()
    if not tokens.accepts(given, service.token):
        error = "That is not this relay's token." if given else "Enter the relay's token."
        return render("login.html", 401, next=target, error=error)
    value, _ = sessions.issue(service.token, service.clock.now_ms())
    max_age = sessions.LIFETIME_MS // 1000
    cookie = sessions.cookie_header(value, secure=_secure(request), max_age=max_age)
    return redirect(target, **{"Set-Cookie": cookie})


@page("POST", r"/logout")
async def logout(ctx: Context) -> ApiResponse:
    cookie = sessions.cookie_header("", secure=_secure(ctx.request), max_age=0)
    return redirect(PREFIX + "/login", **{"Set-Cookie": cookie})


@page("GET", r"/static/(?P<name>[A-Za-z0-9._-]+)")
async def static(ctx: Context) -> ApiResponse:
    found = static_file(ctx.match["name"])
    if found is None:
        raise ApiError(f"no static file {ctx.match['name']!r}", 404)
    body, content_type = found
    return ApiResponse(
        200,
        body,
        {
            "Content-Type": content_type,
            # The URL carries the content's digest: a new file gets a new URL.
            "Cache-Control": "private, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
        },
    )


# --- overview --------------------------------------------------------------------------------


@route("GET", PREFIX, public=True)
async def console_root(
    service: RelayService, request: ApiRequest, match: re.Match[str]
) -> ApiResponse:
    return redirect(PREFIX + "/")


async def _figures(ctx: Context) -> dict[str, Any]:
    service = ctx.service
    counts = await service.count_messages()
    stats = await service.delivery_stats()
    seconds = [start // 1000 for start in stats.starts]
    throughput = {
        "kind": "throughput",
        "x": seconds,
        "series": [
            {"label": "delivered", "values": stats.delivered, "color": "#2f9e44"},
            {"label": "retried", "values": stats.retried, "color": "#f08c00"},
            {"label": "failed", "values": stats.failed, "color": "#e03131"},
        ],
    }
    latency = {
        "kind": "latency",
        "x": seconds,
        "series": [
            {"label": "p50 (ms)", "values": stats.p50, "color": "#1971c2"},
            {"label": "p95 (ms)", "values": stats.p95, "color": "#9c36b5"},
        ],
    }
    return {
        "counts": [(state, counts.get(state)) for state in MessageState],
        "total": counts.total,
        "counted": counts,
        "stats": stats,
        "throughput": throughput,
        "latency": latency,
    }


@page("GET", r"/")
async def overview(ctx: Context) -> ApiResponse:
    return ctx.page("overview.html", **await _figures(ctx))


@page("GET", r"/figures")
async def figures(ctx: Context) -> ApiResponse:
    return ctx.page("_figures.html", **await _figures(ctx))


# --- messages --------------------------------------------------------------------------------


def _time(value: str | None, name: str, *, end: bool = False) -> int | None:
    """A time filter: ms since the epoch, or a UTC date-time as a browser's datetime-local."""
    if not value:
        return None
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError:
        raise BadRequest(f"invalid {name} {value!r}: give a UTC date and time") from None
    stamp = int(moment.timestamp() * 1000)
    # "to 10:05" includes the whole minute when only minutes were given.
    return stamp + 59_999 if end and len(value) <= 16 else stamp


def _cursor(ctx: Context) -> str | None:
    cursor = ctx.value("cursor")
    if cursor is not None and not cursor.isdigit():
        raise BadRequest(f"invalid cursor {cursor!r}")
    return cursor


def _states(ctx: Context) -> list[MessageState]:
    try:
        return [MessageState(v.upper()) for v in ctx.values("state")]
    except ValueError:
        raise BadRequest(f"invalid state in {ctx.values('state')}") from None


def _message_query(ctx: Context) -> MessageQuery:
    return MessageQuery(
        message_ids=[i for v in ctx.values("id") for i in v.replace(",", " ").split()],
        states=_states(ctx),
        url_contains=ctx.value("url"),
        labels=ctx.values("label"),
        from_time=_time(ctx.value("from"), "from"),
        to_time=_time(ctx.value("to"), "to", end=True),
        cursor=_cursor(ctx),
        count=PAGE_SIZE,
    )


def _filters(ctx: Context, names: tuple[str, ...]) -> dict[str, str]:
    return {name: ctx.value(name) or "" for name in names}


MESSAGE_FILTERS = ("state", "url", "label", "from", "to", "id")


async def _message_rows(ctx: Context) -> dict[str, Any]:
    result = await ctx.service.list_messages(_message_query(ctx))
    filters = _filters(ctx, MESSAGE_FILTERS)
    query = urlencode({k: v for k, v in filters.items() if v})
    return {
        "messages": result.items,
        "next_cursor": result.cursor,
        "filters": filters,
        "query": query,
        "live": ctx.value("cursor") is None,
        "states": list(MessageState),
    }


@page("GET", r"/messages")
async def messages(ctx: Context) -> ApiResponse:
    return ctx.page("messages.html", **await _message_rows(ctx))


@page("GET", r"/messages/rows")
async def message_rows(ctx: Context) -> ApiResponse:
    return ctx.page("_message_rows.html", **await _message_rows(ctx))


async def _timeline(ctx: Context, message_id: str) -> dict[str, Any]:
    message = await ctx.service.get_message(message_id)
    page = await ctx.service.list_events(EventQuery(message_ids=[message_id], count=1000))
    events = list(reversed(page.items))
    attempts = sum(1 for e in events if e.state == MessageState.ACTIVE)
    return {"message": message, "events": events, "attempts": attempts}


@page("GET", r"/messages/(?P<id>[^/]+)")
async def message(ctx: Context) -> ApiResponse:
    data = await _timeline(ctx, unquote(ctx.match["id"]))
    message = data["message"]
    # What the API shows, redaction included (relay.redaction is the one place of that rule).
    shown = message_json(message)
    headers = [(name, value) for name, values in shown["header"].items() for value in values]
    if Redaction.of(message.redact).body:
        text, binary = str(shown["body"]), False
    else:
        try:
            text, binary = message.body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, binary = message.body.hex(" ", 1), True
    return ctx.page("message.html", body_text=text, body_binary=binary, headers=headers, **data)


@page("GET", r"/messages/(?P<id>[^/]+)/timeline")
async def message_timeline(ctx: Context) -> ApiResponse:
    return ctx.page("_timeline.html", **await _timeline(ctx, unquote(ctx.match["id"])))


@page("POST", r"/messages/(?P<id>[^/]+)/cancel")
async def cancel_message(ctx: Context) -> ApiResponse:
    message_id = unquote(ctx.match["id"])
    await ctx.service.cancel(message_id)
    return redirect(f"{PREFIX}/messages/{quote(message_id)}?done=cancelled")


# --- DLQ -------------------------------------------------------------------------------------

DLQ_FILTERS = ("url", "label", "status", "message", "from", "to")


@page("GET", r"/dlq")
async def dlq(ctx: Context) -> ApiResponse:
    statuses = ctx.values("status")
    if not all(s.isdigit() for s in statuses):
        raise BadRequest(f"invalid response status in {statuses}")
    query = DlqQuery(
        urls=ctx.values("url"),
        labels=ctx.values("label"),
        response_statuses=[int(s) for s in statuses],
        message_ids=ctx.values("message"),
        from_time=_time(ctx.value("from"), "from"),
        to_time=_time(ctx.value("to"), "to", end=True),
        cursor=_cursor(ctx),
        count=PAGE_SIZE,
    )
    result = await ctx.service.list_dlq(query)
    filters = _filters(ctx, DLQ_FILTERS)
    return ctx.page(
        "dlq.html",
        entries=result.items,
        next_cursor=result.cursor,
        filters=filters,
        query=urlencode({k: v for k, v in filters.items() if v}),
    )


def _dlq_ids(ctx: Context) -> list[str]:
    """The entry of a row's own button, else the ticked ones."""
    ids = ctx.values("one") or ctx.values("dlqId")
    if not ids:
        raise BadRequest("tick at least one DLQ message first")
    return ids


@page("POST", r"/dlq/retry")
async def dlq_retry(ctx: Context) -> ApiResponse:
    new_ids = await ctx.service.retry_dlq(_dlq_ids(ctx))
    return redirect(f"{PREFIX}/dlq?done=retried&n={len(new_ids)}")


@page("POST", r"/dlq/delete")
async def dlq_delete(ctx: Context) -> ApiResponse:
    deleted = await ctx.service.delete_dlq(_dlq_ids(ctx))
    return redirect(f"{PREFIX}/dlq?done=deleted&n={deleted}")


# --- URL groups ------------------------------------------------------------------------------


@page("GET", r"/url-groups")
async def url_groups(ctx: Context) -> ApiResponse:
    return ctx.page("url_groups.html", groups=await ctx.service.list_url_groups())


def _required(ctx: Context, name: str) -> str:
    value = ctx.value(name)
    if value is None:
        raise BadRequest(f"{name} is missing")
    return value


@page("POST", r"/url-groups/add")
async def url_group_add(ctx: Context) -> ApiResponse:
    endpoint = {"url": _required(ctx, "url")}
    if name := ctx.value("name"):
        endpoint["name"] = name
    await ctx.service.upsert_endpoints(_required(ctx, "group"), [endpoint])
    return redirect(f"{PREFIX}/url-groups?done=added")


@page("POST", r"/url-groups/remove")
async def url_group_remove(ctx: Context) -> ApiResponse:
    endpoint = {"url": _required(ctx, "url")}
    await ctx.service.remove_endpoints(_required(ctx, "group"), [endpoint])
    return redirect(f"{PREFIX}/url-groups?done=removed")


@page("POST", r"/url-groups/delete")
async def url_group_delete(ctx: Context) -> ApiResponse:
    await ctx.service.delete_url_group(_required(ctx, "group"))
    return redirect(f"{PREFIX}/url-groups?done=dropped")


# --- signing keys ----------------------------------------------------------------------------


@page("GET", r"/keys")
async def keys(ctx: Context) -> ApiResponse:
    keys = await ctx.service.load_keys()
    return ctx.page("keys.html", keys=keys, confirm=ctx.value("confirm") == "rotate")


@page("POST", r"/keys/rotate")
async def rotate_keys(ctx: Context) -> ApiResponse:
    if ctx.value("confirm") != "rotate":
        raise BadRequest("confirm the rotation first")
    await ctx.service.rotate_keys()
    return redirect(f"{PREFIX}/keys?done=rotated")


# --- schedules, queues, flow control -------------------------------------------------------


def _in_zone(ms: int | None, cron: str) -> str:
    """A fire time in the zone of the schedule's ``CRON_TZ=`` (UTC without one)."""
    if ms is None:
        return "—"
    try:
        zone = scheduling.Cron.parse(cron).zone
    except ApiError:
        zone = None
    moment = datetime.fromtimestamp(ms / 1000, zone or UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S ") + (str(zone) if zone else "UTC")


@page("GET", r"/schedules")
async def schedules(ctx: Context) -> ApiResponse:
    found = await scheduling.list_all(ctx.service)
    for schedule in found:
        schedule["nextLocal"] = _in_zone(schedule.get("nextScheduleTime"), schedule["cron"])
    return ctx.page("schedules.html", schedules=found)


@page("POST", r"/schedules/(?P<action>pause|resume|delete)")
async def schedule_action(ctx: Context) -> ApiResponse:
    schedule_id = _required(ctx, "schedule")
    actions = {"pause": scheduling.pause, "resume": scheduling.resume, "delete": scheduling.delete}
    await actions[ctx.match["action"]](ctx.service, schedule_id)
    return redirect(f"{PREFIX}/schedules?done=schedule-{ctx.match['action']}")


@page("GET", r"/queues")
async def queue_list(ctx: Context) -> ApiResponse:
    return ctx.page("queues.html", queues=await queues.list_all(ctx.service))


@page("POST", r"/queues/(?P<action>pause|resume)")
async def queue_action(ctx: Context) -> ApiResponse:
    name = _required(ctx, "queue")
    await queues.set_paused(ctx.service, name, ctx.match["action"] == "pause")
    return redirect(f"{PREFIX}/queues?done=queue-{ctx.match['action']}")


@page("GET", r"/flow-control")
async def flow_keys(ctx: Context) -> ApiResponse:
    search = ctx.value("search")
    found = await flow_control.list_info(ctx.service, search)
    return ctx.page("flow_control.html", keys=found, search=search or "")


@page("POST", r"/flow-control/(?P<action>pause|resume)")
async def flow_key_action(ctx: Context) -> ApiResponse:
    key = _required(ctx, "key")
    await flow_control.change(ctx.service, key, paused=ctx.match["action"] == "pause")
    return redirect(f"{PREFIX}/flow-control?done=key-{ctx.match['action']}")


# --- workflow runs ---------------------------------------------------------------------------

RUN_FILTERS = ("state", "url")


@page("GET", r"/workflows")
async def workflow_runs(ctx: Context) -> ApiResponse:
    state = ctx.value("state")
    if state is not None and state not in RunState.__members__:
        raise BadRequest(f"invalid run state {state!r}")
    query = RunLogQuery(url=ctx.value("url"), state=state, count=PAGE_SIZE)
    if cursor := ctx.value("cursor"):
        query.before = logs.parse_cursor(cursor)
    # The list shows only the runs' own fields: their steps are read on a run's page.
    found = await ctx.service.backend.list_runs(query)
    filters = _filters(ctx, RUN_FILTERS)
    return ctx.page(
        "workflows.html",
        runs=found,
        next_cursor=logs.next_cursor(found, query),
        filters=filters,
        query=urlencode({k: v for k, v in filters.items() if v}),
        states=list(RunState),
    )


@page("GET", r"/workflows/(?P<id>[^/]+)")
async def workflow_run(ctx: Context) -> ApiResponse:
    run_id = unquote(ctx.match["id"])
    found = await logs.list_logs(ctx.service, RunLogQuery(run_id=run_id, count=1))
    if not found["runs"]:
        raise NotFound(f"workflow run {run_id} not found")
    run = found["runs"][0]
    return ctx.page(
        "workflow.html",
        run=run,
        active=not RunState(run["workflowState"]).ended,
        confirm=ctx.value("confirm") == "cancel",
    )


@page("POST", r"/workflows/(?P<id>[^/]+)/cancel")
async def cancel_workflow_run(ctx: Context) -> ApiResponse:
    run_id = unquote(ctx.match["id"])
    if ctx.value("confirm") != "cancel":
        raise BadRequest("confirm the cancel first")
    await runs.end(ctx.service, run_id, cancel=True, response=None)
    return redirect(f"{PREFIX}/workflows/{quote(run_id)}?done=run-cancelled")


# Registered last: any other console path is a page that does not exist (after the log-in).
@page("GET", r"/.*")
async def not_found(ctx: Context) -> ApiResponse:
    raise ApiError(f"no console page at {ctx.request.path}", 404)
