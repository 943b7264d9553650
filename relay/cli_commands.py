"""The remote commands of ``relay``: publish, messages, logs, dlq, url-groups and the signing
keys, each a thin use of `relay.client.Client` against the relay at ``QSTASH_URL``."""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from relay import protocol as p
from relay.cli_output import Output, when
from relay.client import (
    DEFAULT_BASE_URL,
    Client,
    DlqMessage,
    Endpoint,
    Event,
    Message,
    PublishOptions,
    Queue,
    RelayError,
    UrlGroup,
)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
BULK_CHUNK = 100  # ids per call of a bulk operation (the DLQ lists at most 100 a page)


@dataclass(slots=True)
class Remote:
    """What a remote command works with: the client and the output."""

    client: Client
    out: Output


def remote(func: Callable[..., None]) -> Callable[..., None]:
    """Give a command ``--url``, ``--token`` and ``--json``, a `Remote` as first argument, and
    turn the client's errors into a message and an exit code."""

    @click.option(
        "--json", "as_json", is_flag=True, help="Print JSON for scripts instead of tables."
    )
    @click.option(
        "--token",
        envvar="QSTASH_TOKEN",
        show_envvar=True,
        help="The relay's API token.",
    )
    @click.option(
        "--url",
        envvar="QSTASH_URL",
        default=DEFAULT_BASE_URL,
        show_default=True,
        show_envvar=True,
        help="The relay's address.",
    )
    @functools.wraps(func)
    def command(url: str, token: str | None, as_json: bool, **kwargs: Any) -> None:
        out = Output(as_json)
        # One quick retry: a command is run by a person or a script that can run it again.
        with Client(url, token, retries=1) as client:
            try:
                func(Remote(client, out), **kwargs)
            except RelayError as error:
                out.fail(error)

    return command


# --- parameter types ------------------------------------------------------------------------

if TYPE_CHECKING:  # generic from click 8.2 on; subscripted only for the type checker
    _DurationType = click.ParamType[int | str, Any]
    _TimeType = click.ParamType[int, Any]
else:
    _DurationType = _TimeType = click.ParamType


class Duration(_DurationType):
    """``10s``, ``5m``, ``1h30m``, ``7d``, or a number of seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        try:
            p.parse_duration(text)
        except p.ApiError as exc:
            self.fail(exc.message, param, ctx)
        return int(text) if text.isdigit() else text


class Moment(_TimeType):
    """An absolute time: unix seconds, or ISO 8601 (``2026-11-01T12:00:00+01:00``; local time
    when no offset is given). Converts to unix seconds."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if text.isdigit():
            return int(text)
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is neither unix seconds nor an ISO 8601 time", param, ctx)
        return int(moment.astimezone().timestamp())


class Since(_TimeType):
    """A time filter: unix milliseconds, ISO 8601, or a duration meaning that long ago
    (``15m``). Converts to unix milliseconds."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if text.isdigit():
            return int(text)
        try:
            return int(dt.datetime.fromisoformat(text).astimezone().timestamp() * 1000)
        except ValueError:
            pass
        try:
            ago = p.parse_duration(text)
        except p.ApiError:
            self.fail(f"{text!r} is not unix ms, an ISO 8601 time or a duration ago", param, ctx)
        return int((time.time() - ago) * 1000)


DURATION = Duration()
MOMENT = Moment()
SINCE = Since()


def _list_filters(func: F) -> F:
    """The filters `relay logs` and `relay dlq` share (each matches any of its values)."""
    options = [
        click.option("--message-id", "message_ids", multiple=True, help="A message id."),
        click.option("--destination", "destinations", multiple=True, help="A destination URL."),
        click.option("--url-group", "topic_name", help="A URL group (topic) name."),
        click.option("--queue", "queue_name", help="A queue name."),
        click.option("--schedule", "schedule_id", help="A schedule id."),
        click.option("--label", "labels", multiple=True, help="A label."),
        click.option(
            "--from", "from_date", type=SINCE, help="From this time: ISO 8601, unix ms, or 15m ago."
        ),
        click.option("--to", "to_date", type=SINCE, help="Until this time (as --from)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


# CLI option names → the client's filter names (events; the DLQ takes one message_id key).
_EVENT_FILTERS = {"destinations": "url", "labels": "label"}
_DLQ_FILTERS = {**_EVENT_FILTERS, "message_ids": "message_id"}


def _filters(names: dict[str, str], **values: Any) -> dict[str, Any]:
    """Client filter arguments from CLI options, leaving out those not given."""
    return {
        names.get(k, k): (list(v) if isinstance(v, tuple) else v) for k, v in values.items() if v
    }


# --- publish --------------------------------------------------------------------------------


def _delivery_options(func: F) -> F:
    """The options of a message's delivery, shared by `publish` and `schedules create`."""
    options = [
        click.option(
            "-J",
            "--json-body",
            is_flag=True,
            help="BODY is JSON: checked, and sent with Content-Type: application/json.",
        ),
        click.option("--content-type", help="The body's Content-Type (forwarded)."),
        click.option(
            "-X",
            "--method",
            type=click.Choice(sorted(p.METHODS), case_sensitive=False),
            help="HTTP method.",
        ),
        click.option("--delay", type=DURATION, help="Deliver after this long: 10s, 5m, 2h, 7d."),
        click.option("--retries", type=click.IntRange(min=0), help="Retries after a failure."),
        click.option(
            "--retry-delay",
            help="Milliseconds between retries, an expression of `retried`: 1000*retried.",
        ),
        click.option("--callback", help="URL told of each attempt's response."),
        click.option("--failure-callback", help="URL told when the message fails for good."),
        click.option("--timeout", type=DURATION, help="Time limit of one attempt: 30s, 5m."),
        click.option(
            "-H",
            "--header",
            "headers",
            multiple=True,
            metavar="'NAME: VALUE'",
            help="A header forwarded to the destination (repeatable).",
        ),
        click.option("--label", help="A label to find the message by in logs and the DLQ."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _body_and_options(
    body: str | None,
    json_body: bool,
    content_type: str | None,
    headers: tuple[str, ...],
    **rest: Any,
) -> tuple[bytes, dict[str, Any]]:
    """The body to send and the client's options, from `_delivery_options`' values."""
    raw = _read_body(body)
    if json_body:
        try:
            json.loads(raw or b"null")
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="BODY") from None
    options = {
        "content_type": content_type or ("application/json" if json_body else None),
        "headers": _header_pairs(headers),
        **rest,
    }
    return raw, options


@click.command()
@click.argument("destination")
@click.argument("body", required=False)
@_delivery_options
@click.option("--not-before", type=MOMENT, help="Deliver at this time: unix seconds or ISO 8601.")
@click.option("--dedup-id", help="Deduplication id: a repeat within the window is not stored.")
@click.option(
    "--content-dedup", is_flag=True, help="Deduplicate on the body, headers and destination."
)
@remote
def publish(
    r: Remote,
    destination: str,
    body: str | None,
    not_before: int | None,
    dedup_id: str | None,
    content_dedup: bool,
    **delivery: Any,
) -> None:
    """Publish one message to DESTINATION, a URL or a URL group name.

    BODY is the message body; `-` reads it from stdin, `@FILE` from a file. Without BODY the
    message has none.

    \b
      relay publish https://example.com/hook '{"order": 42}' -J --delay 30s
      relay publish orders @order.json -J --retries 5 -H 'X-Tenant: acme'
    """
    raw, options = _body_and_options(body, **delivery)
    publish_options: PublishOptions = {
        "not_before": not_before,
        "deduplication_id": dedup_id,
        "content_based_deduplication": content_dedup,
        **options,  # type: ignore[typeddict-item]
    }
    answer = r.client.publish(destination, raw, **publish_options)
    results = answer if isinstance(answer, list) else [answer]
    if r.out.as_json:
        r.out.json(answer)
        return
    r.out.table(
        ["Message ID", "URL", "Deduplicated"],
        [(x.message_id, x.url or destination, "yes" if x.deduplicated else "") for x in results],
    )


def _read_body(body: str | None) -> bytes:
    if body is None:
        return b""
    if body == "-":
        return sys.stdin.buffer.read()
    if body.startswith("@"):
        try:
            with open(body[1:], "rb") as file:
                return file.read()
        except OSError as exc:
            raise click.BadParameter(str(exc), param_hint="BODY") from None
    return body.encode()


def _header_pairs(headers: Iterable[str]) -> dict[str, str] | None:
    pairs: dict[str, str] = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{header!r} is not 'Name: value'", param_hint="--header")
        pairs[name.strip()] = value.strip()
    return pairs or None


# --- messages -------------------------------------------------------------------------------


@click.group()
def messages() -> None:
    """Look up and cancel messages."""


@messages.command("get")
@click.argument("message_id")
@remote
def messages_get(r: Remote, message_id: str) -> None:
    """Show a message (its state, options, headers and body)."""
    message = r.client.messages.get(message_id)
    if r.out.as_json:
        r.out.json(message)
        return
    r.out.record(_message_fields(message))


def _message_fields(m: Message) -> list[tuple[str, Any]]:
    body = m.body if m.body is not None else m.body_base64 and f"(base64) {m.body_base64}"
    return [
        ("Message ID", m.message_id),
        ("State", m.state),
        ("URL", m.url),
        ("Method", m.method),
        ("URL group", m.topic_name),
        ("Endpoint", m.endpoint_name),
        ("Queue", m.queue_name),
        ("Schedule", m.schedule_id),
        ("Label", m.label),
        ("Created", when(m.created_at)),
        ("Not before", when(m.not_before)),
        ("Retried", None if m.retried is None else f"{m.retried} of {m.max_retries}"),
        ("Retry delay", m.retry_delay_expression),
        ("Callback", m.callback),
        ("Failure callback", m.failure_callback),
        ("Headers", {k: ", ".join(v) for k, v in m.header.items()}),
        ("Body", _excerpt(body)),
    ]


def _excerpt(text: str | None, limit: int = 2000) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"… ({len(text) - limit} more characters)"


@messages.command("cancel")
@click.argument("message_ids", nargs=-1, required=True)
@remote
def messages_cancel(r: Remote, message_ids: tuple[str, ...]) -> None:
    """Cancel messages not yet delivered. One unknown or finished id is an error; of several,
    those still pending are cancelled and counted."""
    if len(message_ids) == 1:
        r.client.messages.cancel(message_ids[0])
        cancelled = 1
    else:
        cancelled = sum(
            _in_chunks(r, "cancelling", list(message_ids), r.client.messages.cancel_many)
        )
    r.out.result(
        {"cancelled": cancelled}, f"cancelled {cancelled} of {len(message_ids)} message(s)"
    )


def _in_chunks(
    r: Remote, description: str, ids: list[str], call: Callable[[list[str]], T]
) -> list[T]:
    """Run a bulk call over ``ids``, BULK_CHUNK at a time, with a progress bar."""
    results = []
    with r.out.progress(description, len(ids)) as advance:
        for start in range(0, len(ids), BULK_CHUNK):
            chunk = ids[start : start + BULK_CHUNK]
            results.append(call(chunk))
            advance(len(chunk))
    return results


# --- logs -----------------------------------------------------------------------------------

_STATES = ["CREATED", "ACTIVE", "RETRY", "ERROR", "DELIVERED", "FAILED", "CANCELED"]


@click.command()
@_list_filters
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([*_STATES, "IN_PROGRESS"], case_sensitive=False),
    help="A state (repeatable).",
)
@click.option(
    "-n", "--count", type=click.IntRange(1, 1000), default=50, show_default=True, help="Events."
)
@click.option("--cursor", help="Continue an earlier listing (the cursor it printed).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they happen.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="Seconds between polls with --follow.",
)
@remote
def logs(
    r: Remote,
    states: tuple[str, ...],
    count: int,
    cursor: str | None,
    follow: bool,
    interval: float,
    **filter_options: Any,
) -> None:
    """List the logs: one event per state a message reached, newest first.

    With --follow, the last --count events oldest first, then new ones as they happen (Ctrl-C
    stops); with --json, one event per line.
    """
    filters = _filters(_EVENT_FILTERS, state=[s.upper() for s in states], **filter_options)
    if not follow:
        page = r.client.events.list(cursor=cursor, count=count, **filters)
        if r.out.as_json:
            r.out.json({"events": page.events, "cursor": page.cursor})
            return
        r.out.table(
            ["Time", "Message ID", "State", "URL", "Status", "Detail"],
            [_event_row(e) for e in page.events],
        )
        if page.cursor:
            r.out.note(f"more: --cursor {page.cursor}")
        return
    if filters.get("to_date") or cursor:
        raise click.UsageError("--follow shows new events: it takes neither --to nor --cursor")
    try:
        for event in _tail(r.client, filters, count, interval):
            r.out.result(event, _event_line(event))
    except KeyboardInterrupt:
        sys.exit(130)  # as the shell reports a command stopped by Ctrl-C


_LOOKBACK_MS = 5_000  # events may be stored a little out of time order: look back this far


def _tail(client: Client, filters: dict[str, Any], count: int, interval: float) -> Iterator[Event]:
    """The last ``count`` events oldest first, then each new one as it appears.

    Polls with ``fromDate`` a little before the newest time seen, and skips what it printed.
    """
    seen: dict[tuple[Any, ...], int] = {}
    newest: int | None = None
    # Fetch more than is shown: the rest of the look-back window counts as seen, so the first
    # poll does not print it as new.
    recent = client.events.list(count=1000, **filters).events
    if recent:
        horizon = recent[0].time - _LOOKBACK_MS
        seen = {_event_key(e): e.time for e in recent[count:] if e.time >= horizon}
    batch = list(reversed(recent[:count]))
    while True:
        for event in batch:
            key = _event_key(event)
            if key in seen:
                continue
            seen[key] = event.time
            newest = event.time if newest is None else max(newest, event.time)
            yield event
        if newest is not None:
            horizon = newest - _LOOKBACK_MS
            seen = {k: t for k, t in seen.items() if t >= horizon}
        time.sleep(interval)
        since = filters.get("from_date")
        if newest is not None:
            since = max(since or 0, newest - _LOOKBACK_MS)
        batch = list(reversed(_all_events(client, {**filters, "from_date": since})))


def _all_events(client: Client, filters: dict[str, Any]) -> list[Event]:
    """Every event matching ``filters``, newest first, across pages."""
    events: list[Event] = []
    cursor = None
    clean = {k: v for k, v in filters.items() if v is not None}
    while True:
        page = client.events.list(cursor=cursor, count=1000, **clean)
        events += page.events
        cursor = page.cursor
        if not cursor:
            return events


def _event_key(e: Event) -> tuple[Any, ...]:
    return (e.time, e.message_id, e.state, e.response_status, e.error, e.url)


def _event_detail(e: Event) -> str:
    if e.error:
        return e.error
    if e.next_delivery_time:
        return f"next attempt {when(e.next_delivery_time)}"
    if e.dlq_id:
        return f"DLQ {e.dlq_id}"
    return ""


def _event_row(e: Event) -> tuple[Any, ...]:
    return (when(e.time), e.message_id, e.state, e.url, e.response_status, _event_detail(e))


def _event_line(e: Event) -> str:
    status = "" if e.response_status is None else str(e.response_status)
    detail = _event_detail(e)
    return f"{when(e.time)}  {e.message_id:<32}  {e.state:<10} {status:>4}  {e.url}" + (
        f"  {detail}" if detail else ""
    )


# --- DLQ ------------------------------------------------------------------------------------


@click.group()
def dlq() -> None:
    """List, retry and delete messages in the dead-letter queue."""


def _dlq_filters(func: F) -> F:
    func = click.option(
        "--status", "response_status", type=int, help="The destination's last HTTP status."
    )(func)
    return _list_filters(func)


@dlq.command("list")
@_dlq_filters
@click.option(
    "-n", "--count", type=click.IntRange(1, 100), default=50, show_default=True, help="Entries."
)
@click.option("--cursor", help="Continue an earlier listing (the cursor it printed).")
@remote
def dlq_list(r: Remote, count: int, cursor: str | None, **filter_options: Any) -> None:
    """List DLQ entries, newest first."""
    page = r.client.dlq.list(cursor=cursor, count=count, **_filters(_DLQ_FILTERS, **filter_options))
    if r.out.as_json:
        r.out.json({"messages": page.messages, "cursor": page.cursor})
        return
    r.out.table(
        ["DLQ ID", "Message ID", "URL", "Status", "Failed at", "Error"],
        [_dlq_row(m) for m in page.messages],
    )
    if page.cursor:
        r.out.note(f"more: --cursor {page.cursor}")


def _dlq_row(m: DlqMessage) -> tuple[Any, ...]:
    error = m.error or _excerpt(m.response_body, 60)
    return (m.dlq_id, m.message_id, m.url, m.response_status or "", when(m.failed_at), error)


@dlq.command("get")
@click.argument("dlq_id")
@remote
def dlq_get(r: Remote, dlq_id: str) -> None:
    """Show one DLQ entry: the message and the last response it got."""
    entry = r.client.dlq.get(dlq_id)
    if r.out.as_json:
        r.out.json(entry)
        return
    r.out.record(
        [
            ("DLQ ID", entry.dlq_id),
            *_message_fields(entry),
            ("Failed at", when(entry.failed_at)),
            ("Response status", entry.response_status or None),
            ("Error", entry.error),
            ("Response", _excerpt(entry.response_body)),
        ]
    )


def _bulk_ids(
    r: Remote, ids: tuple[str, ...], everything: bool, filters: dict[str, Any]
) -> list[str]:
    """The DLQ ids a bulk command acts on: those given, or with --all every matching entry."""
    if ids and (everything or filters):
        raise click.UsageError("give DLQ ids, or --all (with filters), not both")
    if ids:
        return list(ids)
    if not everything:
        raise click.UsageError("give DLQ ids, or --all (with filters) for every matching entry")
    found: list[str] = []
    cursor = None
    while True:
        page = r.client.dlq.list(cursor=cursor, count=100, **filters)
        found += [m.dlq_id for m in page.messages]
        cursor = page.cursor
        if not cursor:
            return found


@dlq.command("retry")
@click.argument("dlq_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every entry matching the filters.")
@_dlq_filters
@remote
def dlq_retry(r: Remote, dlq_ids: tuple[str, ...], everything: bool, **filter_options: Any) -> None:
    """Publish DLQ entries again (as new messages) and take them out of the DLQ."""
    ids = _bulk_ids(r, dlq_ids, everything, _filters(_DLQ_FILTERS, **filter_options))
    new_ids = [m for chunk in _in_chunks(r, "retrying", ids, r.client.dlq.retry) for m in chunk]
    if r.out.as_json:
        r.out.json({"responses": [{"messageId": m} for m in new_ids]})
        return
    r.out.table(["DLQ ID", "New message ID"], list(zip(ids, new_ids, strict=False)))
    r.out.note(f"retried {len(new_ids)} DLQ entr{'y' if len(new_ids) == 1 else 'ies'}")


@dlq.command("delete")
@click.argument("dlq_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every entry matching the filters.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before deleting with --all.")
@_dlq_filters
@remote
def dlq_delete(
    r: Remote, dlq_ids: tuple[str, ...], everything: bool, yes: bool, **filter_options: Any
) -> None:
    """Delete DLQ entries. One unknown id is an error; of several, those found are counted."""
    ids = _bulk_ids(r, dlq_ids, everything, _filters(_DLQ_FILTERS, **filter_options))
    if everything and ids and not yes:
        click.confirm(f"Delete {len(ids)} DLQ entries?", abort=True, err=True)
    if len(ids) == 1 and not everything:
        r.client.dlq.delete(ids[0])
        deleted = 1
    else:
        deleted = sum(_in_chunks(r, "deleting", ids, r.client.dlq.delete_many))
    r.out.result(
        {"deleted": deleted}, f"deleted {deleted} DLQ entr{'y' if deleted == 1 else 'ies'}"
    )


# --- URL groups -----------------------------------------------------------------------------


@click.group("url-groups")
def url_groups() -> None:
    """Manage URL groups: a publish to a group's name goes to each of its endpoints."""


@url_groups.command("list")
@remote
def url_groups_list(r: Remote) -> None:
    """List every URL group with its endpoints."""
    groups = r.client.url_groups.list()
    if r.out.as_json:
        r.out.json(groups)
        return
    r.out.table(
        ["Name", "Endpoints", "Updated"],
        [(g.name, len(g.endpoints), when(g.updated_at)) for g in groups],
    )


@url_groups.command("get")
@click.argument("name")
@remote
def url_groups_get(r: Remote, name: str) -> None:
    """Show a URL group's endpoints."""
    group = r.client.url_groups.get(name)
    if r.out.as_json:
        r.out.json(group)
        return
    _group_table(r, group)


def _group_table(r: Remote, group: UrlGroup) -> None:
    r.out.table(
        ["Endpoint name", "URL"],
        [(e.name, e.url) for e in group.endpoints],
        title=group.name,
    )


@url_groups.command("add")
@click.argument("name")
@click.argument("urls", nargs=-1)
@click.option(
    "--named",
    "named",
    multiple=True,
    type=(str, str),
    metavar="ENDPOINT_NAME URL",
    help="An endpoint with a name (repeatable).",
)
@remote
def url_groups_add(
    r: Remote, name: str, urls: tuple[str, ...], named: tuple[tuple[str, str], ...]
) -> None:
    """Add endpoints (URLS) to the group NAME, which is made if missing."""
    endpoints = [Endpoint(url) for url in urls] + [Endpoint(url, n) for n, url in named]
    if not endpoints:
        raise click.UsageError("give at least one endpoint URL (or --named NAME URL)")
    r.client.url_groups.upsert_endpoints(name, endpoints)
    group = r.client.url_groups.get(name)
    if r.out.as_json:
        r.out.json(group)
    else:
        _group_table(r, group)


@url_groups.command("remove")
@click.argument("name")
@click.argument("urls", nargs=-1)
@click.option("--endpoint-name", "names", multiple=True, help="Remove the endpoint of this name.")
@remote
def url_groups_remove(r: Remote, name: str, urls: tuple[str, ...], names: tuple[str, ...]) -> None:
    """Remove endpoints from the group NAME by URL (or by --endpoint-name); a group left empty
    is deleted."""
    if not urls and not names:
        raise click.UsageError("give the endpoint URLs (or --endpoint-name) to remove")
    r.client.url_groups.remove_endpoints(name, urls=urls, names=names)
    r.out.result(
        {"removed": len(urls) + len(names)},
        f"removed {len(urls) + len(names)} endpoint(s) from {name}",
    )


@url_groups.command("delete")
@click.argument("name")
@remote
def url_groups_delete(r: Remote, name: str) -> None:
    """Delete a URL group."""
    r.client.url_groups.delete(name)
    r.out.result({"deleted": name}, f"deleted URL group {name}")


# --- queues -------------------------------------------------------------------------------------


@click.group("queues")
def queues() -> None:
    """Manage queues: FIFO delivery, ``parallelism`` messages at a time."""


def _queue_table(r: Remote, rows: list[Queue]) -> None:
    r.out.table(
        ["Name", "Parallelism", "Paused", "Lag", "Updated"],
        [(q.name, q.parallelism, q.paused, q.lag, when(q.updated_at)) for q in rows],
    )


@queues.command("list")
@remote
def queues_list(r: Remote) -> None:
    """List every queue with its parallelism, state and lag."""
    rows = r.client.queues.list()
    if r.out.as_json:
        r.out.json(rows)
    else:
        _queue_table(r, rows)


@queues.command("get")
@click.argument("name")
@remote
def queues_get(r: Remote, name: str) -> None:
    """Show one queue."""
    queues_get_show(r, name)


@queues.command("upsert")
@click.argument("name")
@click.option("--parallelism", type=click.IntRange(min=1), default=None)
@click.option("--paused/--running", default=None, help="Create or leave it paused.")
@remote
def queues_upsert(r: Remote, name: str, parallelism: int | None, paused: bool | None) -> None:
    """Create or update the queue NAME."""
    r.client.queues.upsert(name, parallelism=parallelism, paused=paused)
    queues_get_show(r, name)


def queues_get_show(r: Remote, name: str) -> None:
    queue = r.client.queues.get(name)
    if r.out.as_json:
        r.out.json(queue)
    else:
        _queue_table(r, [queue])


@queues.command("pause")
@click.argument("name")
@remote
def queues_pause(r: Remote, name: str) -> None:
    """Pause a queue: it keeps accepting, delivers nothing until resumed."""
    r.client.queues.pause(name)
    queues_get_show(r, name)


@queues.command("resume")
@click.argument("name")
@remote
def queues_resume(r: Remote, name: str) -> None:
    """Resume a paused queue."""
    r.client.queues.resume(name)
    queues_get_show(r, name)


@queues.command("delete")
@click.argument("name")
@remote
def queues_delete(r: Remote, name: str) -> None:
    """Delete a queue's settings (messages already in it are still delivered)."""
    r.client.queues.delete(name)
    r.out.result({"deleted": name}, f"deleted queue {name}")


# --- signing keys (remote) ------------------------------------------------------------------


@click.command("get")
@remote
def keys_get(r: Remote) -> None:
    """Print the signing keys of the relay at QSTASH_URL (what receivers verify with)."""
    keys = r.client.keys.get()
    if r.out.as_json:
        r.out.json({"current": keys.current, "next": keys.next})
        return
    r.out.line(f"QSTASH_CURRENT_SIGNING_KEY={keys.current}")
    r.out.line(f"QSTASH_NEXT_SIGNING_KEY={keys.next}")


@click.command("rotate")
@click.option("-y", "--yes", is_flag=True, help="Do not ask first.")
@remote
def keys_rotate(r: Remote, yes: bool) -> None:
    """Rotate the signing keys of the relay at QSTASH_URL: the next key becomes current and a
    new next key is made. Receivers must then be given the new pair."""
    if not yes:
        click.confirm("Rotate the signing keys?", abort=True, err=True)
    keys = r.client.keys.rotate()
    if r.out.as_json:
        r.out.json({"current": keys.current, "next": keys.next})
        return
    r.out.line(f"QSTASH_CURRENT_SIGNING_KEY={keys.current}")
    r.out.line(f"QSTASH_NEXT_SIGNING_KEY={keys.next}")


# --- schedules ------------------------------------------------------------------------------


@click.group()
def schedules() -> None:
    """Manage cron schedules: each fire publishes a message."""


@schedules.command("list")
@remote
def schedules_list(r: Remote) -> None:
    """List every schedule with its next and last fire times."""
    found = r.client.schedules.list()
    if r.out.as_json:
        r.out.json(found)
        return
    r.out.table(
        ["Schedule ID", "Cron", "Destination", "Next fire", "Last fire", "Paused"],
        [
            (
                s.schedule_id,
                s.cron,
                s.destination,
                when(s.next_schedule_time),
                when(s.last_schedule_time),
                "yes" if s.paused else "",
            )
            for s in found
        ],
    )


@schedules.command("get")
@click.argument("schedule_id")
@remote
def schedules_get(r: Remote, schedule_id: str) -> None:
    """Show one schedule."""
    s = r.client.schedules.get(schedule_id)
    if r.out.as_json:
        r.out.json(s)
        return
    r.out.record(
        [
            ("Schedule ID", s.schedule_id),
            ("Cron", s.cron),
            ("Destination", s.destination),
            ("Method", s.method),
            ("Paused", "yes" if s.paused else "no"),
            ("Next fire", when(s.next_schedule_time)),
            ("Last fire", when(s.last_schedule_time)),
            ("Last messages", s.last_schedule_states),
            ("Queue", s.queue_name),
            ("Label", s.label),
            ("Retries", s.retries),
            ("Callback", s.callback),
            ("Failure callback", s.failure_callback),
            ("Headers", {k: ", ".join(v) for k, v in s.header.items()}),
            ("Body", _excerpt(s.body)),
            ("Error", s.error),
        ]
    )


@schedules.command("create")
@click.argument("destination")
@click.argument("cron")
@click.argument("body", required=False)
@_delivery_options
@click.option("--schedule-id", help="Create or replace the schedule of this id.")
@click.option("--queue", help="Publish each fire's message to this queue.")
@remote
def schedules_create(
    r: Remote,
    destination: str,
    cron: str,
    body: str | None,
    schedule_id: str | None,
    queue: str | None,
    **delivery: Any,
) -> None:
    """Publish to DESTINATION (a URL or URL group) on CRON: five fields, UTC unless prefixed
    with `CRON_TZ=<zone> `. BODY as for `relay publish`.

    \b
      relay schedules create https://example.com/report '0 9 * * 1-5' -J '{"kind": "daily"}'
    """
    raw, options = _body_and_options(body, **delivery)
    created = r.client.schedules.create(
        destination, cron, raw, schedule_id=schedule_id, queue=queue, **options
    )
    r.out.result({"scheduleId": created}, created)


def _schedule_action(name: str, verb: str, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("schedule_id")
    @remote
    def action(r: Remote, schedule_id: str) -> None:
        getattr(r.client.schedules, name)(schedule_id)
        r.out.result({"scheduleId": schedule_id, verb: True}, f"{verb} schedule {schedule_id}")

    return action


for _name, _verb, _help in (
    ("pause", "paused", "Stop a schedule firing until it is resumed."),
    ("resume", "resumed", "Fire a paused schedule again (missed fire times are skipped)."),
    ("delete", "deleted", "Delete a schedule."),
):
    schedules.add_command(_schedule_action(_name, _verb, _help))


COMMANDS: Sequence[click.Command] = (publish, messages, logs, dlq, url_groups, schedules, queues)
KEY_COMMANDS: Sequence[click.Command] = (keys_get, keys_rotate)
__all__ = ["COMMANDS", "KEY_COMMANDS", "Remote", "remote"]
