"""Cron schedules: the expression and its fire times, the schedule API's use cases, and the
ticker that fires what is due through the normal publish path.

Cron comes from ``cronsim`` (Debian cron's semantics): five fields, UTC unless the expression
starts with ``CRON_TZ=<IANA zone>``; across a DST change in that zone a job at a fixed time that
falls in the skipped hour fires right after the change, and one in the repeated hour fires once.

Resolution: the embedded relay's ticker wakes at the next fire time (and at least every
``schedule_tick_seconds``), so a schedule fires within about a second of its time; on AWS the
scheduler Lambda runs every minute, so a fire there is up to a minute late.

A schedule is two records: ``schedule`` (what the API set; written only by the API) and
``schedule_run`` (what the ticker last did; written only by the ticker), so that neither
overwrites the other's change. A fire is idempotent: the fire time is the first one after the
schedule's anchor (created, updated or resumed, or its last fire), and its messages carry a
dedup key made of the schedule id and that fire time that lives until the next fire time. So two
tickers at once, or a ticker that crashed after storing the messages but before recording the
fire, publish them once. After downtime the first missed fire time is due, it fires once, and
the anchor moves to now: missed fires collapse into one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from relay import protocol as p
from relay import queues, retention
from relay.models import MessageState
from relay.protocol import ApiError, BadRequest, NotFound, PayloadTooLarge
from relay.service import _NOT_FORWARDED, PublishRequest, RelayService
from relay.workflows import recovery, waiters

log = logging.getLogger("relay.scheduling")

SCHEDULE = "schedule"
SCHEDULE_RUN = "schedule_run"
_SCHEDULE_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")
_TZ_PREFIX = "CRON_TZ="
# A schedule is one record (one DynamoDB item of at most 400 KB on AWS), its body base64 in it.
MAX_SCHEDULE_BODY = 200_000
_YEAR_MS = 366 * 86_400_000
# Kept apart from the stored publish headers: they configure the schedule, not its messages.
_SCHEDULE_HEADERS = frozenset({p.H_CRON, p.H_SCHEDULE_ID, p.H_QUEUE_NAME})
_RUN_STATES = {
    MessageState.DELIVERED: "SUCCESS",
    MessageState.FAILED: "FAIL",
    MessageState.CANCELED: "FAIL",
}


# --- cron ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cron:
    """A five-field cron expression, with the zone of its optional ``CRON_TZ=`` prefix."""

    expression: str  # as given (prefix included), what the API shows
    fields: str
    zone: ZoneInfo | None  # None: UTC

    @classmethod
    def parse(cls, text: str) -> Cron:
        """Validate ``text``; BadRequest saying what is wrong."""
        expression = " ".join(text.split())
        fields, zone = expression, None
        if expression.upper().startswith(_TZ_PREFIX):
            name, _, fields = expression[len(_TZ_PREFIX) :].partition(" ")
            try:
                zone = ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                raise BadRequest(
                    f"invalid Upstash-Cron {text!r}: unknown time zone {name!r} "
                    "(use an IANA name like CRON_TZ=America/New_York)"
                ) from None
        if len(fields.split()) != 5:
            raise BadRequest(
                f"invalid Upstash-Cron {text!r}: use five fields (minute hour day-of-month "
                "month day-of-week), optionally after CRON_TZ=<zone>"
            )
        try:
            CronSim(fields, datetime.now(UTC))
        except CronSimError as exc:
            raise BadRequest(f"invalid Upstash-Cron {text!r}: {exc}") from None
        return cls(expression, fields, zone)

    def next_after(self, ms: int) -> int | None:
        """The first fire time strictly after ``ms`` (unix ms), or None if it never fires."""
        start = datetime.fromtimestamp(ms / 1000, tz=self.zone or UTC)
        times = CronSim(self.fields, start)
        # In a repeated (fall-back) hour cronsim works on wall time, which can name an instant
        # before ``start``: step on until it is after.
        for _ in range(3):
            try:
                fire = int(next(times).timestamp() * 1000)
            except StopIteration:  # cronsim gives up after 50 years without a match
                return None
            if fire > ms:
                return fire
        return None


# --- the schedule API ---------------------------------------------------------------------------


async def create(service: RelayService, request: PublishRequest) -> str:
    """Create a schedule, or replace the one named by ``Upstash-Schedule-Id``; every publish
    header is validated now, by the publish rules. Returns the schedule id."""
    headers = {**p.lower_headers(request.query_headers), **p.lower_headers(request.headers)}
    raw_cron = headers.get(p.H_CRON)
    if not raw_cron or not raw_cron.strip():
        raise BadRequest("Upstash-Cron is missing: give a cron expression like '*/5 * * * *'")
    cron = Cron.parse(raw_cron)
    if p.H_NOT_BEFORE in headers:
        raise BadRequest("Upstash-Not-Before does not apply to schedules: use Upstash-Delay")
    schedule_id = headers.get(p.H_SCHEDULE_ID, "").strip() or service.ids.schedule_id()
    _check_id(schedule_id)
    queue_name = headers.get(p.H_QUEUE_NAME, "").strip() or None
    if queue_name is not None:
        queues.check_name(queue_name)
    if len(request.body) > MAX_SCHEDULE_BODY:
        raise PayloadTooLarge(
            f"a schedule's body is at most {MAX_SCHEDULE_BODY} bytes, this one has "
            f"{len(request.body)}"
        )
    now = service.clock.now_ms()
    # The publish rules, once: destination, URL group, body size and every Upstash-* header.
    await service._messages_for(request, now)
    options = service._options(headers, request.headers)
    if cron.next_after(now) is None:
        raise BadRequest(f"invalid Upstash-Cron {raw_cron!r}: it never fires")
    kept = [
        [name, value]
        for name, value in request.headers
        if name.lower() not in _NOT_FORWARDED and name.lower() not in _SCHEDULE_HEADERS
    ]
    view: dict[str, Any] = {
        "method": options.method,
        "retries": options.retries,
        "header": p.header_map(options.forwarded),
    }
    if options.delay_ms:
        view["delay"] = options.delay_ms // 1000
    if p.H_TIMEOUT in headers:
        view["timeout"] = options.timeout
    for key, value in (
        ("callback", options.callback),
        ("failureCallback", options.failure_callback),
        ("retryDelayExpression", options.retry_delay),
        ("label", options.label),
        ("redact", options.redact),  # taken out (and applied) by the HTTP layer
    ):
        if value is not None:
            view[key] = value
    if options.flow_control is not None:
        control = options.flow_control
        view["flowControlKey"] = control.key
        for key, limit in (
            ("parallelism", control.parallelism),
            ("rate", control.rate),
            ("period", control.period),
        ):
            if limit is not None:
                view[key] = limit
    if options.label is not None:
        view["labels"] = options.label.split(",")
    if options.callback:
        view["callbackHeader"] = _forwarded_family(options.callback_headers)
    if options.failure_callback:
        view["failureCallbackHeader"] = _forwarded_family(options.failure_callback_headers)
    # An existing schedule of that id is discarded, its state too, as QStash documents.
    record = {
        "scheduleId": schedule_id,
        "destination": request.destination,
        "cron": cron.expression,
        "createdAt": now,
        "since": now,  # fires are counted from here (and from the last fire)
        "isPaused": False,
        "queueName": queue_name,
        "callerIp": request.caller_ip,
        "headers": kept,
        "queryHeaders": [list(pair) for pair in request.query_headers],
        "body": p.b64(request.body),
        "view": view,
    }
    await service.backend.put_record(SCHEDULE, schedule_id, record)
    await service.backend.delete_record(SCHEDULE_RUN, schedule_id)
    return schedule_id


async def get(service: RelayService, schedule_id: str) -> dict[str, Any]:
    """The Schedule object of ``GET /v2/schedules/{id}``."""
    record = await _record(service, schedule_id)
    run = await service.backend.get_record(SCHEDULE_RUN, schedule_id)
    return await _schedule_json(service, record, run)


async def list_all(service: RelayService) -> list[dict[str, Any]]:
    """Every schedule, oldest first."""
    records = await service.backend.list_records(SCHEDULE)
    runs = {r["scheduleId"]: r for r in await service.backend.list_records(SCHEDULE_RUN)}
    records.sort(key=lambda r: (r["createdAt"], r["scheduleId"]))
    return list(
        await asyncio.gather(
            *(_schedule_json(service, r, runs.get(r["scheduleId"])) for r in records)
        )
    )


async def delete(service: RelayService, schedule_id: str) -> None:
    _check_id(schedule_id)
    if not await service.backend.delete_record(SCHEDULE, schedule_id):
        raise NotFound(f"schedule {schedule_id} not found")
    await service.backend.delete_record(SCHEDULE_RUN, schedule_id)


async def pause(service: RelayService, schedule_id: str) -> None:
    """Stop firing until resumed."""
    record = await _record(service, schedule_id)
    if not record["isPaused"]:
        record["isPaused"] = True
        await service.backend.put_record(SCHEDULE, schedule_id, record)


async def resume(service: RelayService, schedule_id: str) -> None:
    """Fire again from now on; the fire times missed while paused are skipped."""
    record = await _record(service, schedule_id)
    if record["isPaused"]:
        record["isPaused"] = False
        record["since"] = service.clock.now_ms()
        await service.backend.put_record(SCHEDULE, schedule_id, record)


async def _record(service: RelayService, schedule_id: str) -> dict[str, Any]:
    _check_id(schedule_id)
    record = await service.backend.get_record(SCHEDULE, schedule_id)
    if record is None:
        raise NotFound(f"schedule {schedule_id} not found")
    return record


def _check_id(schedule_id: str) -> None:
    if not _SCHEDULE_ID.fullmatch(schedule_id):
        raise BadRequest(
            f"invalid schedule id {schedule_id!r}: use up to 200 letters, digits, '-', '_', '.'"
        )


def _forwarded_family(family: dict[str, str]) -> dict[str, list[str]]:
    """What a (failure) callback forwards: its family's `Upstash-Forward-*`, prefix stripped."""
    prefix = len(p.FORWARD_PREFIX)
    return p.header_map(
        (name[prefix:], value)
        for name, value in family.items()
        if name.lower().startswith(p.FORWARD_PREFIX)
    )


def _anchor(record: dict[str, Any], run: dict[str, Any] | None) -> int:
    """Fire times after this are due: the schedule's (re)start or its last fire."""
    return max(int(record["since"]), int((run or {}).get("lastScheduleTime", 0)))


async def _schedule_json(
    service: RelayService, record: dict[str, Any], run: dict[str, Any] | None
) -> dict[str, Any]:
    body = base64.b64decode(record["body"])
    data: dict[str, Any] = {
        "scheduleId": record["scheduleId"],
        "destination": record["destination"],
        "cron": record["cron"],
        "createdAt": record["createdAt"],
        "isPaused": record["isPaused"],
        **record["view"],
    }
    try:
        data["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        data["bodyBase64"] = p.b64(body)
    for key, value in (
        ("queueName", record.get("queueName")),
        ("callerIP", record.get("callerIp")),
        ("callerIp", record.get("callerIp")),
    ):
        if value is not None:
            data[key] = value
    if not record["isPaused"]:
        following = Cron.parse(record["cron"]).next_after(_anchor(record, run))
        if following is not None:
            data["nextScheduleTime"] = following
    if run is not None:
        data["lastScheduleTime"] = run["lastScheduleTime"]
        if run.get("error"):
            data["error"] = run["error"]
        data["lastScheduleStates"] = await _run_states(service, run.get("messageIds") or [])
    return data


async def _run_states(service: RelayService, message_ids: list[str]) -> dict[str, str]:
    """The last fire's messages: IN_PROGRESS, SUCCESS or FAIL each (gone ones left out)."""
    messages = await asyncio.gather(*(service.backend.get_message(m) for m in message_ids))
    return {m.id: _RUN_STATES.get(m.state, "IN_PROGRESS") for m in messages if m is not None}


# --- the ticker ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    """What one tick did: how many schedules fired, and the next fire time after it (ms)."""

    fired: int
    next_fire: int | None


async def tick(service: RelayService, now: int | None = None) -> Tick:
    """Fire every schedule that is due at ``now`` (default: the service's clock), once each."""
    now = service.clock.now_ms() if now is None else now
    backend = service.backend
    records = await backend.list_records(SCHEDULE)
    runs = {r["scheduleId"]: r for r in await backend.list_records(SCHEDULE_RUN)}
    fired, next_fire = 0, None
    for record in records:
        if record["isPaused"]:
            continue
        cron = Cron.parse(record["cron"])
        due = cron.next_after(_anchor(record, runs.get(record["scheduleId"])))
        if due is not None and due <= now:
            try:
                await _fire(service, record, cron, due, now)
                fired += 1
            except Exception:
                # Not recorded as fired: the next tick tries the same fire time again.
                log.exception("schedule %s: firing failed", record["scheduleId"])
                continue
            due = cron.next_after(now)
        if due is not None and (next_fire is None or due < next_fire):
            next_fire = due
    # Workflow waits time out on the same tick; the ticker wakes at the next deadline too (on
    # AWS their SQS wake-ups do, and this pass sends those that came within SQS's reach).
    # Workflow results a crash interrupted are finished on the same tick (relay.workflows.recovery).
    for deadline in (await waiters.expire(service, now), await recovery.recover(service, now)):
        if deadline is not None and (next_fire is None or deadline < next_fire):
            next_fire = deadline
    await retention.purge_due(service, now)
    return Tick(fired, next_fire)


async def _fire(
    service: RelayService, record: dict[str, Any], cron: Cron, due: int, now: int
) -> None:
    """Publish the schedule's messages for fire time ``due`` and record the fire."""
    schedule_id = record["scheduleId"]
    request = PublishRequest(
        destination=record["destination"],
        headers=[(str(k), str(v)) for k, v in record["headers"]],
        body=base64.b64decode(record["body"]),
        caller_ip=record.get("callerIp"),
        query_headers=[(str(k), str(v)) for k, v in record["queryHeaders"]],
        queue=record.get("queueName"),  # each fire is enqueued there, as QStash's are
    )
    run: dict[str, Any] = {"scheduleId": schedule_id, "lastScheduleTime": now, "fireTime": due}
    try:
        messages = await service._messages_for(request, now)
    except ApiError as exc:
        # The destination is gone or no longer valid (a deleted URL group): the fire is
        # recorded with its error, and the schedule tries again at its next fire time.
        run.update(messageIds=[], error=exc.message)
    else:
        for message in messages:
            message.schedule_id = schedule_id
            message.dedup_key = _fire_key(schedule_id, due, message.url)
        # The key lives until the next fire time: a fire repeated before then (a concurrent
        # ticker, a crash before the run record) is a duplicate; after it, it is the next fire.
        following = cron.next_after(now)
        window = (following - now) if following is not None else _YEAR_MS
        accepted = await service.accept_messages(messages, dedup_window_ms=max(window, 1000))
        run["messageIds"] = [a.message_id for a in accepted]
    await service.backend.put_record(SCHEDULE_RUN, schedule_id, run)


def _fire_key(schedule_id: str, due: int, url: str) -> str:
    return hashlib.sha256(f"schedule\0{schedule_id}\0{due}\0{url}".encode()).hexdigest()


class ScheduleTicker:
    """The embedded relay's ticker task: fires due schedules, sleeping until the next fire time
    or ``interval`` seconds, whichever comes first."""

    def __init__(self, service: RelayService, *, interval: float) -> None:
        self.service = service
        self.interval = interval
        self._wake = asyncio.Event()
        self._stopping = False

    def notify(self) -> None:
        """Look again now (a schedule changed, or the clock moved in a test)."""
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            timeout = self.interval
            try:
                result = await tick(self.service)
            except Exception:
                log.exception("the schedule ticker failed; trying again shortly")
            else:
                if result.next_fire is not None:
                    wait = (result.next_fire - self.service.clock.now_ms()) / 1000
                    timeout = min(timeout, max(0.01, wait))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
