"""Result entries relay writes into a run (a Wait step's event or timeout, an Invoke step's
child result), made crash-safe: the *intent* (the publish, and how to recognise its entry among
the run's) is stored before the claim that decides it, published, then cleared. A crash in
between leaves the intent stored; ``deliver`` from the recovery pass publishes it again unless
the run already holds its entry (the check that makes a repeat harmless: run entries are
appended before any dedup check, so a dedup id would not do). Works on both backends with the
record store alone.

The recovery pass takes only intents older than ``GRACE`` ms, so it does not race the request
that stored one and is still publishing it; and passes that overlap do not race each other: a
pass re-publishes an intent only after it ``claim``s it (a conditional setting, held ``GRACE``),
and ``release``s it after: nothing of either is left behind, whenever the pass dies.
"""

from __future__ import annotations

import base64
import logging
import uuid
from dataclasses import dataclass, replace
from typing import Any

import orjson

from relay import protocol as p
from relay.protocol import ApiError
from relay.service import PublishRequest, RelayService

log = logging.getLogger("relay.workflows.outbox")

OUTBOX = "workflow_outbox"
CLAIM = "workflow_outbox_claim"  # settings: <CLAIM>\0<intent key> = "<owner> <until ms>"
GRACE = 60_000  # ms an intent is left to the request that stored it


@dataclass(frozen=True, slots=True)
class Intent:
    """One result entry to publish into run ``run_id``; the run holds it once an entry's JSON
    has every field of ``match``."""

    key: str
    run_id: str
    destination: str
    headers: list[tuple[str, str]]
    body: bytes
    match: dict[str, Any]
    created_at: int  # ms
    done: bool = False  # released by a recovery pass: only its clearing is left

    def to_record(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "runId": self.run_id,
            "destination": self.destination,
            "headers": self.headers,
            "body": p.b64(self.body),
            "match": self.match,
            "createdAt": self.created_at,
            "done": self.done,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Intent:
        return cls(
            key=record["key"],
            run_id=record["runId"],
            destination=record["destination"],
            headers=[(str(k), str(v)) for k, v in record["headers"]],
            body=base64.b64decode(record["body"]),
            match=record["match"],
            created_at=record["createdAt"],
            done=bool(record.get("done", False)),
        )


async def record(service: RelayService, intent: Intent) -> None:
    """Store ``intent`` durably (before the claim that decides it)."""
    await service.backend.put_record(OUTBOX, intent.key, intent.to_record())


async def discard(service: RelayService, key: str) -> None:
    await service.backend.delete_record(OUTBOX, key)


async def release(service: RelayService, intent: Intent, claim: str) -> None:
    """Clear ``intent`` (published, or lost to another contender) for the pass that claimed it,
    and delete its ``claim`` unless another pass took it over: marked done first, then the
    claim deleted, then cleared, so a crash leaves a done intent, which the next pass to claim
    it clears, and never a claim."""
    await record(service, replace(intent, done=True))
    await _unclaim(service, intent.key, claim)


async def deliver(service: RelayService, intent: Intent, *, claim: str | None = None) -> str | None:
    """Publish ``intent``, then clear it; the result message's id (None when the run refused
    it: it ended meanwhile, and that is fine). ``claim`` (the recovery pass's on it): unless
    the run holds its entry already, then ``release`` it; the waiter's winner need not look."""
    message_id = await _published(service, intent) if claim is not None else None
    if message_id is None:
        request = PublishRequest(intent.destination, intent.headers, intent.body)
        try:
            _, answer = await service.publish(request)
        except ApiError as exc:
            log.info("run %s: result %r refused: %s", intent.run_id, intent.key, exc)
            answer = None
        found = answer.get("messageId") if isinstance(answer, dict) else None
        message_id = str(found) if found else None
    if claim is None:
        await discard(service, intent.key)
    else:
        await release(service, intent, claim)
    return message_id


async def claim(service: RelayService, key: str, now: int) -> str | None:
    """Take intent ``key`` for one recovery pass: of passes that try at once, one gets its
    claim (for ``deliver`` or ``release``), the others None. A claim is held for ``GRACE`` ms;
    past that (its pass crashed) a pass takes it over with a compare-and-set on the expired
    claim, so two takeovers cannot both win either. None too when the intent was released
    since the pass listed it: then it finishes clearing it, if that is left."""
    name, mine = _claim_name(key), f"{uuid.uuid4().hex} {now + GRACE}"
    held = await service.backend.put_setting(name, mine, if_absent=True)
    while held != mine:
        if held and int(held.split()[1]) > now:
            return None  # another pass holds it
        # Expired: replace it; deleted meanwhile (""): take it if still absent.
        held = await service.backend.put_setting(
            name, mine, if_absent=not held, replacing=held or None
        )
    current = await service.backend.get_record(OUTBOX, key)
    if current is not None and not current.get("done"):
        return mine
    await _unclaim(service, key, mine)
    return None


async def stored(service: RelayService) -> list[Intent]:
    """Every intent stored, for the recovery pass."""
    return [Intent.from_record(r) for r in await service.backend.list_records(OUTBOX)]


def stale(intents: list[Intent], now: int) -> list[Intent]:
    """Those stored more than ``GRACE`` ago: left by a crash."""
    return [i for i in intents if i.created_at + GRACE <= now]


def _claim_name(key: str) -> str:
    return f"{CLAIM}\0{key}"


async def _unclaim(service: RelayService, key: str, claim: str) -> None:
    """Delete ``claim`` on intent ``key`` (unless another pass took it over), then clear it."""
    await service.backend.delete_setting(_claim_name(key), if_value=claim)
    await discard(service, key)


async def _published(service: RelayService, intent: Intent) -> str | None:
    """The id of the run's entry ``intent`` made, if the run holds one."""
    for entry in await service.backend.run_entries(intent.run_id):
        try:
            body = orjson.loads(entry.body)
        except orjson.JSONDecodeError:
            continue
        if isinstance(body, dict) and all(body.get(k) == v for k, v in intent.match.items()):
            return entry.message_id
    return None
