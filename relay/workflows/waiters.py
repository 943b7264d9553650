"""waitForEvent and notify (reference F5): a run's step waits on an event id until a notify brings
the event's data or its timeout comes; either way relay writes the Wait step's result entry into
the run by publishing it to the workflow URL, as the SDK would publish any step.

State is two kinds of records: a *waiter* (one waiting step of one run) and an *early event* (a
run-scoped notify that came before its wait: the look-back). Exactly one of notify and timeout
wins a waiter: whoever deletes its record (an atomic delete on both backends) writes the result;
each contender stores its result as an intent first (relay.workflows.outbox), so a crash after
the claim leaves it for the recovery pass.
A run-scoped notify and a wait that start together each look for the other after storing their
own record, and the early event, too, is taken by deleting it, so the pair meets exactly once.
Deadlines are stored, so a timeout survives a restart. Waiters are found by event id (their key
starts with it), and otherwise through their indexes (relay.workflows.waiter_index): ``expire``
reads the deadlines due, a run's end (``drop_run``) the run's own waiters, never every waiter.
The embedded ticker runs ``expire`` and sleeps until the next deadline; on AWS the scheduler's
tick and the deadlines' wake-ups run it.
"""

from __future__ import annotations

import base64
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from relay import protocol as p
from relay.protocol import BadRequest
from relay.service import _NOT_FORWARDED, RelayService
from relay.workflows import outbox, waiter_index
from relay.workflows import protocol as wp
from relay.workflows.model import RunEnded, WorkflowRun

log = logging.getLogger("relay.workflows.waiters")

WAITER = "workflow_waiter"
EARLY_EVENT = "workflow_early_event"
DEFAULT_TIMEOUT = "7d"
_INTENT = "wait\0"  # outbox keys: wait, contender (timeout or notify-<id>), waiter key
_TIMEOUT = f"{_INTENT}timeout\0"
_EARLY = f"{_INTENT}early-"


@dataclass(frozen=True, slots=True)
class Waiter:
    """One waiting step: where its result goes (``url`` on notify, ``timeout_url`` at the
    deadline) with which publish headers, and the step it answers."""

    event_id: str
    run_id: str
    url: str
    headers: dict[str, list[str]]
    timeout_url: str
    timeout_headers: dict[str, list[str]]
    timeout: str
    deadline: int  # ms
    step: dict[str, Any]
    created_at: int  # ms
    run_created_at: int  # ms

    @property
    def key(self) -> str:
        return waiter_key(self.event_id, self.run_id, self.step.get("stepId"))

    def to_record(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "runId": self.run_id,
            "url": self.url,
            "headers": self.headers,
            "timeoutUrl": self.timeout_url,
            "timeoutHeaders": self.timeout_headers,
            "timeout": self.timeout,
            "deadline": self.deadline,
            "step": self.step,
            "createdAt": self.created_at,
            "runCreatedAt": self.run_created_at,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Waiter:
        return cls(
            event_id=record["eventId"],
            run_id=record["runId"],
            url=record["url"],
            headers=record["headers"],
            timeout_url=record["timeoutUrl"],
            timeout_headers=record["timeoutHeaders"],
            timeout=record["timeout"],
            deadline=record["deadline"],
            step=record["step"],
            created_at=record["createdAt"],
            run_created_at=record["runCreatedAt"],
        )

    def to_json(self) -> dict[str, Any]:
        """The Waiter object of ``GET /v2/waiters`` and notify answers (deadline: unix seconds,
        as QStash's API reference says)."""
        return {
            "url": self.url,
            "deadline": self.deadline // 1000,
            "headers": self.headers,
            "timeoutUrl": self.timeout_url,
            "timeoutHeaders": self.timeout_headers,
        }


def waiter_key(event_id: str, run_id: str, step_id: Any) -> str:
    # The event id first: a notify lists the waiters of one event id.
    return f"{event_id}\0{run_id}\0{step_id}"


def _early_key(run_id: str, event_id: str) -> str:
    return f"{run_id}\0{event_id}"


# --- the use cases ------------------------------------------------------------------------------


async def wait(
    service: RelayService, event_id: str, headers: list[tuple[str, str]], body: bytes
) -> Waiter:
    """``POST /v2/wait/{eventId}``: register the waiting step (or answer it at once with a
    run-scoped event that came first)."""
    request = _json_object(body)
    step = request.get("step")
    url = request.get("url")
    if not isinstance(step, dict) or not isinstance(url, str) or not url:
        raise BadRequest("wait body needs 'url' and 'step'")
    own = _request_headers(headers)
    run_id = _first(own, wp.H_RUN_ID) or _first(request.get("timeoutHeaders") or {}, wp.H_RUN_ID)
    if not run_id:
        raise BadRequest("wait needs the Upstash-Workflow-RunId header")
    run = await _going_on(service, run_id)
    if run is None:
        raise RunEnded(f"workflow run {run_id} is unknown or over")
    timeout = str(request.get("timeout") or DEFAULT_TIMEOUT)
    now = service.clock.now_ms()
    waiter = Waiter(
        event_id=event_id,
        run_id=run_id,
        url=url,
        headers=own,
        timeout_url=str(request.get("timeoutUrl") or url),
        timeout_headers=_header_lists(request.get("timeoutHeaders")) or own,
        timeout=timeout,
        deadline=now + int(p.parse_duration(timeout, what="timeout") * 1000),
        step=step,
        created_at=now,
        run_created_at=run.created_at,
    )
    await waiter_index.index(service, waiter)  # first: a crash before the waiter leaves stale ones
    await service.backend.put_record(WAITER, waiter.key, waiter.to_record())
    early = await _peek_early(service, run_id, event_id)
    if early is None or await _answer(service, waiter, early, early=True) is False:
        await waiter_index.arm(service, waiter.deadline, now)
    return waiter


async def notify(
    service: RelayService, event_id: str, data: bytes, run_id: str | None = None
) -> list[dict[str, Any]]:
    """``POST /v2/notify[/{runId}]/{eventId}``: wake the waiters of ``event_id`` (of that run
    only, when given) with ``data``; a run-scoped event nobody waits for yet is kept for the
    run's next wait on it. The answer lists the waiters woken."""
    answer = [await _wake(service, w, data) for w in await waiters_of(service, event_id, run_id)]
    woken = [a for a in answer if a is not None]
    if run_id is not None and not woken and await _going_on(service, run_id) is not None:
        await _store_early(service, run_id, event_id, data)
        # A wait that registered meanwhile did not see the event: meet it here.
        for waiter in await waiters_of(service, event_id, run_id):
            early = await _peek_early(service, run_id, event_id)
            if early is None:
                break  # the wait took it
            if (found := await _wake(service, waiter, early, early=True)) is not None:
                woken.append(found)
                break
    return woken


async def waiters_of(
    service: RelayService, event_id: str, run_id: str | None = None
) -> list[Waiter]:
    """The steps waiting on ``event_id`` (of ``run_id`` only, when given), oldest first: the
    records whose key starts with the event id (waiter_key), not every waiter."""
    prefix = f"{event_id}\0" if run_id is None else f"{event_id}\0{run_id}\0"
    records = await service.backend.list_records(WAITER, prefix)
    found = [Waiter.from_record(r) for r in records]
    return sorted(found, key=lambda w: w.created_at)


async def expire(service: RelayService, now: int) -> int | None:
    """Answer every waiter whose deadline passed with its timeout, and arm the wake-ups of the
    deadlines that came within the backend's reach; the next deadline (ms), for a ticker that
    sleeps until then. The ticker's pass and the wake-up's (the delivery runtime's) alike.
    Reads the deadline index, not the waiters: the entries due, those entering reach, one more
    (and, by one of the processes, the sweep: a bounded part of it a pass, until it is done,
    then again an hour later)."""
    await _sweep(service, now)
    for entry in await waiter_index.due(service, now):
        await _expire_entry(service, entry, now)
    await waiter_index.arm_entering(service, now)
    return await waiter_index.next_deadline(service, now)


async def drop_run(service: RelayService, run_id: str) -> None:
    """Forget the waiters and early events of a run that ended: those of this run only, found
    by key prefix (the run index; early events are keyed by run), not every one stored."""
    db = service.backend
    for entry in await waiter_index.of_run(service, run_id):
        await db.delete_record(WAITER, entry["key"])
        await waiter_index.unindex(service, run_id, int(entry["deadline"]), str(entry["key"]))
    for record in await db.list_records(EARLY_EVENT, f"{run_id}\0"):
        await db.delete_record(EARLY_EVENT, _early_key(run_id, record["eventId"]))


async def _sweep(service: RelayService, now: int) -> None:
    """Go on with the sweep of the waiters if due (``waiter_index.sweep``): it reads them in
    key order, a page at a time."""

    async def after(key: str, limit: int) -> list[Waiter]:
        start = f"{key}\0" if key else None  # the first key after ``key``
        records = await service.backend.list_records(WAITER, start=start, limit=limit)
        return [Waiter.from_record(r) for r in records]

    if found := await waiter_index.sweep(service, now, after):
        log.info("indexed %d workflow waiters stored without index entries", found)


async def _expire_entry(service: RelayService, entry: dict[str, Any], now: int) -> None:
    """Time out the waiter of a due index entry, or drop the entry if it is stale: its waiter
    was answered (by a claimer that crashed before dropping it), stored again with another
    deadline (that one has its own entry), or never stored (its wait crashed between the two
    puts; an entry younger than ``outbox.GRACE`` may be a wait storing it now, and is kept)."""
    key, deadline = str(entry["key"]), int(entry["deadline"])
    record = await service.backend.get_record(WAITER, key)
    if record is None:
        if int(entry["createdAt"]) + outbox.GRACE <= now:
            await waiter_index.unindex(service, str(entry["runId"]), deadline, key)
        return
    waiter = Waiter.from_record(record)
    if waiter.deadline != deadline or await _answer(service, waiter, None) is False:
        await waiter_index.unindex(service, waiter.run_id, deadline, key)


# --- claiming and answering ---------------------------------------------------------------------


async def _wake(
    service: RelayService, waiter: Waiter, data: bytes, *, early: bool = False
) -> dict[str, Any] | None:
    """Answer ``waiter`` with ``data`` if it is still waiting; its notify answer element."""
    message_id = await _answer(service, waiter, data, early=early)
    if message_id is False:
        return None  # the timeout or another notify won
    return {
        "waiter": waiter.to_json(),
        "messageId": message_id,
        "workflowRunId": waiter.run_id,
        "workflowCreatedAt": waiter.run_created_at,
    }


async def _going_on(service: RelayService, run_id: str) -> WorkflowRun | None:
    run = await service.backend.get_run(run_id)
    return None if run is None or run.state.ended else run


async def _claim(service: RelayService, waiter: Waiter) -> bool:
    """Win the waiter (delete it), then drop its index entry (a crash between leaves the entry
    stale: ``expire`` drops it when due)."""
    if not await service.backend.delete_record(WAITER, waiter.key):
        return False
    await waiter_index.unindex(service, waiter.run_id, waiter.deadline, waiter.key)
    return True


def _intent(waiter: Waiter, data: bytes | None, now: int, *, early: bool) -> outbox.Intent:
    """The Wait step's result entry: the event's data (base64), or the timeout. The step keeps
    the SDK's own fields; beyond those and the result (all the SDK reads): what the logs show.
    Each contender stores its own intent (the key names it) before claiming the waiter."""
    entry = {
        **waiter.step,
        "waitEventId": waiter.event_id,
        "timeout": waiter.timeout,
        "waitTimeoutDeadline": waiter.deadline,
    }
    if data is None:
        entry["waitTimeout"] = True
        url, headers, contender = waiter.timeout_url, waiter.timeout_headers, "timeout"
    else:
        entry.update(out=p.b64(data), waitTimeout=False)
        kind = "early" if early else "notify"
        url, headers, contender = waiter.url, waiter.headers, f"{kind}-{uuid.uuid4().hex}"
    return outbox.Intent(
        key=f"{_INTENT}{contender}\0{waiter.key}",
        run_id=waiter.run_id,
        destination=url,
        headers=[(name, value) for name, values in headers.items() for value in values[:1]],
        body=p.compact_json(entry),
        match={"stepId": waiter.step.get("stepId"), "waitEventId": waiter.event_id},
        created_at=now,
    )


async def _answer(
    service: RelayService, waiter: Waiter, data: bytes | None, *, early: bool = False
) -> str | bool | None:
    """Store the intent, (``early``: take the run's early event,) claim the waiter, publish:
    the result's message id (None: refused); False when another contender won the waiter
    (an early event is kept for the run's next wait) or took the early event."""
    intent = _intent(waiter, data, service.clock.now_ms(), early=early)
    await outbox.record(service, intent)
    early_key = _early_key(waiter.run_id, waiter.event_id)
    if early and not await service.backend.delete_record(EARLY_EVENT, early_key):
        await outbox.discard(service, intent.key)
        return False
    if not await _claim(service, waiter):
        if early and data is not None:
            await _store_early(service, waiter.run_id, waiter.event_id, data)
        await outbox.discard(service, intent.key)
        return False
    return await outbox.deliver(service, intent)


async def recover(service: RelayService, stale: list[outbox.Intent], now: int) -> None:
    """Finish the answers a crash interrupted (``stale`` intents): a waiter still stored is
    claimed now on its intent's behalf; one claimed already gets its result unless the run
    holds it. If several contenders left intents, an event wins over the timeout. A pass
    finishes a waiter only if it claims the chosen intent (``outbox.claim``): of passes that
    overlap, one does."""
    contenders: dict[str, list[outbox.Intent]] = {}
    for intent in stale:
        if intent.key.startswith(_INTENT):
            _, key = intent.key[len(_INTENT) :].split("\0", 1)
            contenders.setdefault(key, []).append(intent)
    for key, intents in contenders.items():
        chosen, *others = sorted(intents, key=lambda i: (i.key.startswith(_TIMEOUT), i.created_at))
        if not (claim := await outbox.claim(service, chosen.key, now)):
            continue  # another pass is finishing it
        for other in others:
            await outbox.discard(service, other.key)
        db = service.backend
        stored = await db.get_record(WAITER, key)
        if stored is None or await db.delete_record(WAITER, key):
            if stored is not None:
                await waiter_index.unindex(service, chosen.run_id, stored["deadline"], key)
            if chosen.key.startswith(_EARLY):  # its early event: taken now if it was not yet
                event_id = key.split("\0", 1)[0]
                await db.delete_record(EARLY_EVENT, _early_key(chosen.run_id, event_id))
            await outbox.deliver(service, chosen, claim=claim)
        else:  # another contender claimed it just now, with its own intent
            await outbox.release(service, chosen, claim)


async def _store_early(service: RelayService, run_id: str, event_id: str, data: bytes) -> None:
    record = {"runId": run_id, "eventId": event_id, "data": p.b64(data)}
    await service.backend.put_record(EARLY_EVENT, _early_key(run_id, event_id), record)


async def _peek_early(service: RelayService, run_id: str, event_id: str) -> bytes | None:
    """The run's early event for ``event_id``, if one is kept (``_answer`` takes it)."""
    record = await service.backend.get_record(EARLY_EVENT, _early_key(run_id, event_id))
    return None if record is None else base64.b64decode(record["data"])


# --- parsing ------------------------------------------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        raise BadRequest("body must be JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def _request_headers(headers: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The wait request's own headers, as the publish headers of its result (credentials and
    hop-by-hop headers left out)."""
    kept = [(k, v) for k, v in headers if k.lower() not in _NOT_FORWARDED]
    return p.header_map(kept)


def _header_lists(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        return {}
    return {str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in value.items()}


def _first(headers: dict[str, Any], name: str) -> str | None:
    for key, values in headers.items():
        if key.lower() == name:
            value = values[0] if isinstance(values, list) and values else values
            return str(value) if value else None
    return None


def webhook_event(
    method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes
) -> bytes:
    """A webhook call as the event data of ``waitForWebhook``: the JSON from which the SDK
    rebuilds the ``Request`` (body base64)."""
    lowered = p.lower_headers(headers)
    event = {
        "proto": lowered.get("x-forwarded-proto", "http"),
        "host": lowered.get("host", ""),
        "url": path + (f"?{query}" if query else ""),
        "method": method,
        "header": p.header_map(headers),
        "body": p.b64(body),
    }
    return p.compact_json(event)
