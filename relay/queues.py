"""Queues: ``POST /v2/enqueue/{queue}/{destination}`` puts a message at the end of a named FIFO
queue; a queue delivers ``parallelism`` messages at a time, each holding its slot until it is
DELIVERED or FAILED (retries and callbacks included). The rule that lets messages through is
relay.admission; a queue's settings are a configuration record, and what its messages hold is
counted by the backend.

Order is enqueue order: a delayed message at the head holds back the ones behind it until it is
due. Enqueueing to a queue that does not exist creates it with parallelism 1. A paused queue
accepts messages and starts none; one already started finishes (its retries too). Deleting a
queue removes its settings; messages already in it are still delivered, one at a time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from relay.admission import QueueGate
from relay.models import Message
from relay.protocol import BadRequest, NotFound

if TYPE_CHECKING:
    from relay.service import RelayService

QUEUE = "queue"  # the records' kind
MAX_PARALLELISM = 1000
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise BadRequest(f"invalid queue name {name!r}: 1 to 128 letters, digits, '-', '_' and '.'")


def slot_of(message: Message) -> tuple[str, str] | None:
    """The queue slot ``message`` holds once started, as (queue, slot): an enqueued message's
    own, or for a callback of a queued message its source's (None: no queue)."""
    if message.queue_name is not None:
        return message.queue_name, message.id
    if message.slot_queue is not None and message.slot is not None:
        return message.slot_queue, message.slot
    return None


def inherit_slot(follow_up: Message, source: Message) -> None:
    """A callback of a queued message keeps the queue's next message waiting until it is done."""
    slot = slot_of(source)
    if slot is not None:
        follow_up.slot_queue, follow_up.slot = slot


def gate(record: dict[str, Any] | None, held: int = 0) -> QueueGate:
    """A queue's gate from its record (a missing one: parallelism 1, running)."""
    if record is None:
        return QueueGate(held=held)
    return QueueGate(int(record["parallelism"]), bool(record["paused"]), held)


def queue_json(record: dict[str, Any], lag: int) -> dict[str, Any]:
    """A Queue as the SDKs read it; ``lag``: messages enqueued and not yet finished."""
    return {
        "name": record["name"],
        "parallelism": record["parallelism"],
        "createdAt": record["createdAt"],
        "updatedAt": record["updatedAt"],
        "lag": lag,
        "paused": record["paused"],
    }


async def ensure(service: RelayService, name: str) -> None:
    """Create ``name`` with parallelism 1 if it does not exist (an enqueue's first use)."""
    check_name(name)
    if await service.backend.get_record(QUEUE, name) is None:
        now = service.clock.now_ms()
        await service.backend.put_record(
            QUEUE,
            name,
            {"name": name, "parallelism": 1, "paused": False, "createdAt": now, "updatedAt": now},
        )


async def upsert(
    service: RelayService, name: str, *, parallelism: int | None = None, paused: bool | None = None
) -> None:
    """Create or update a queue; what is not given keeps its value (defaults 1, running)."""
    check_name(name)
    if parallelism is not None and not 1 <= parallelism <= MAX_PARALLELISM:
        raise BadRequest(f"invalid parallelism {parallelism}: must be 1 to {MAX_PARALLELISM}")
    now = service.clock.now_ms()
    record = await service.backend.get_record(QUEUE, name) or {
        "name": name,
        "parallelism": 1,
        "paused": False,
        "createdAt": now,
    }
    if parallelism is not None:
        record["parallelism"] = parallelism
    if paused is not None:
        record["paused"] = paused
    record["updatedAt"] = now
    await service.backend.put_record(QUEUE, name, record)
    await service.backend.admit_waiting(now, queue=name)
    service.notify_listeners()


async def get(service: RelayService, name: str) -> dict[str, Any]:
    check_name(name)
    record = await service.backend.get_record(QUEUE, name)
    if record is None:
        raise NotFound(f"queue {name!r} not found")
    lags = await service.backend.queue_lags([name])
    return queue_json(record, lags.get(name, 0))


async def list_all(service: RelayService) -> list[dict[str, Any]]:
    records = await service.backend.list_records(QUEUE)
    lags = await service.backend.queue_lags([r["name"] for r in records])
    return [queue_json(r, lags.get(r["name"], 0)) for r in records]


async def delete(service: RelayService, name: str) -> None:
    check_name(name)
    if not await service.backend.delete_record(QUEUE, name):
        raise NotFound(f"queue {name!r} not found")
    # Its messages go on at the default parallelism of 1.
    await service.backend.admit_waiting(service.clock.now_ms(), queue=name)
    service.notify_listeners()


async def set_paused(service: RelayService, name: str, paused: bool) -> None:
    check_name(name)
    if await service.backend.get_record(QUEUE, name) is None:
        raise NotFound(f"queue {name!r} not found")
    await upsert(service, name, paused=paused)
