"""Queues and flow control on DynamoDB + SQS: a message that must wait gets no SQS copy until it
is admitted; relay.admission decides, conditional DynamoDB writes keep the state.

Ordering choice. A queue's order could come from SQS FIFO message groups (one group per queue)
or from a lease on the queue's head kept in DynamoDB. FIFO groups were ruled out: a group lets
one message through at a time (no parallelism N), cannot be paused, cannot hold the next message
while the current one waits out a retry backoff of up to a day (FIFO queues have no per-message
delay, and the head would have to stay in flight for a day) or while its callback runs, and
cannot combine with flow control. So relay keeps one standard queue and gates *dispatch*: only
messages a queue has admitted get a copy in SQS, and a slot of the queue is released only in
the same DynamoDB transaction that stores the message's final outcome. A Lambda that crashes
mid-delivery leaves the message admitted and its copy in SQS: the copy comes back after the
visibility timeout, the message is attempted again, and the next message stays blocked until
then — the order holds. A crash between freeing a slot and admitting the next message leaves the
gate marked for attention (written in the same transaction), and the ticker admits it.

Items (beside aws.py's), each gate in its own partition so that its lists are read
consistently, in order:

===================  ============  =====================  =====================================
item                 pk            sk                     also
===================  ============  =====================  =====================================
queue gate           G#Q#<name>    G                      n (enqueue counter), s:<slot> (holders
                                                          of each slot in use), v (version)
queue line entry     G#Q#<name>    L#<seq:020d>           mid: waits for a slot, in order
key gate             G#K#<key>     G                      cfg (relay.flow_control.FlowKey JSON),
                                                          f:<message id> (a call under way: until
                                                          when its slot is held, ms), v
key wait entry       G#K#<key>     W#<due:013d><order>    mid: waits for a call slot and a token
===================  ============  =====================  =====================================

A parked message's item names its entry (``wl``). A gate that may have work sits in the sparse
index ``by-time`` under ``gp`` = A, ``gs`` = when to look; every writer that frees capacity or
parks a message sets it first (or in the same transaction), the ticker (:meth:`Gates.attend`)
reads it, and an admission pass clears it. Every write to a gate item bumps ``v``; an admission
pass writes on the version it read, so concurrent passes cannot both take the last slot.

A call slot of a key is held from admission until the attempt's outcome is stored, and only
until ``f:<id>``'s time: lease() extends it to the lease's end (plus a minute), so a slot whose
Lambda died is reclaimed once its lease has expired; a message that finds its slot reclaimed
goes back to the wait list.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from botocore.exceptions import ClientError

from relay import admission, queues
from relay.admission import Waiting
from relay.flow_control import FlowControl, FlowKey, FlowKeyUsage
from relay.models import Message, MessageState, Settlement

if TYPE_CHECKING:
    from relay.backends.aws import AwsBackend

log = logging.getLogger("relay.aws")
Item = dict[str, Any]

ATTENTION = "A"
FLOW_KEY = "flow_key"  # the records' kind: the keys, for listing
_ATTEMPTS = 6  # admission passes lost to concurrent writers before the ticker takes over
_BATCH = 20  # messages admitted per transaction (each up to 4 items; at most 100)
_SLOT_MARGIN = 60_000  # ms a key's call slot outlives the lease it was extended to
_ZERO, _ONE = {"N": "0"}, {"N": "1"}
_BUMP = "v = if_not_exists(v, :zero) + :one"


@dataclass(slots=True)
class Place:
    """Where a parked message waits: ``ref`` (kept on its item) and the entry to write."""

    ref: str
    entry: Item


@dataclass(slots=True)
class Settling:
    """What a settlement adds to its transaction for the gates, and which gates to look at."""

    park: Place | None = None  # a keyed message's retry waits in its key's wait list
    items: list[Item] = field(default_factory=list)
    touched: list[str] = field(default_factory=list)


def queue_pk(name: str) -> str:
    return f"G#Q#{name}"


def key_pk(key: str) -> str:
    return f"G#K#{key}"


class Gates:
    """The gate state of one AwsBackend (it lends its clients and helpers)."""

    def __init__(self, backend: AwsBackend) -> None:
        self._b = backend

    # --- parking -------------------------------------------------------------------------------

    async def places(
        self, messages: Sequence[Message], now: int, *, configure: bool = True
    ) -> dict[str, Place]:
        """Where each of ``messages`` that must wait is parked: an enqueued message in its
        queue's line (numbered in enqueue order), a keyed one in its key's wait list. Their
        gates are marked for attention first; ``configure`` applies the messages' flow-control
        values to their keys."""
        lines: dict[str, list[Message]] = {}
        keyed: dict[str, list[Message]] = {}  # every message with a key: its limits apply
        for m in messages:
            if m.queue_name is not None:
                lines.setdefault(m.queue_name, []).append(m)
            if m.flow_control_key is not None:
                keyed.setdefault(m.flow_control_key, []).append(m)
        found: dict[str, Place] = {}
        for name, group in lines.items():
            first = await self._number(name, len(group), now)
            for i, m in enumerate(group):
                found[m.id] = self._entry(queue_pk(name), f"L#{first + i:020d}", m.id)
        for key, group in keyed.items():
            if configure:
                await self._configure(key, group, now)
            else:
                await self._call_update(self._attention_update(key_pk(key), now))
            for m in group:
                if m.id not in found:  # one in a queue waits for its queue first
                    found[m.id] = self.wait_entry(key, m.not_before, m.id)
        return found

    def parked_puts(self, put: Item, place: Place) -> list[Item]:
        """A parked message's Put (made conditional, so that it is written in one transaction
        with its entry) and its entry's."""
        put["Put"]["Item"]["wl"] = {"S": place.ref}
        put["Put"]["ConditionExpression"] = "attribute_not_exists(pk)"
        return [put, place.entry]

    def wait_entry(self, key: str, due: int, message_id: str) -> Place:
        order = f"{due:013d}{time.time_ns():019d}{secrets.randbelow(10_000):04d}"
        return self._entry(key_pk(key), "W#" + order, message_id)

    def _entry(self, pk: str, sk: str, message_id: str) -> Place:
        item = {"pk": {"S": pk}, "sk": {"S": sk}, "mid": {"S": message_id}}
        return Place(f"{pk}\n{sk}", {"Put": {"TableName": self._b.table, "Item": item}})

    async def _number(self, name: str, count: int, now: int) -> int:
        """Reserve ``count`` places at the end of a queue's line; the first one's number."""
        answer = await self._b._call(
            self._b._db.update_item,
            TableName=self._b.table,
            Key=_key(queue_pk(name), "G"),
            UpdateExpression=f"ADD n :count SET {_BUMP}, gp = :a, gs = :now",
            ExpressionAttributeValues={
                ":count": {"N": str(count)},
                ":zero": _ZERO,
                ":one": _ONE,
                ":a": {"S": ATTENTION},
                ":now": _time(now),
            },
            ReturnValues="UPDATED_NEW",
        )
        return int(answer["Attributes"]["n"]["N"]) - count + 1

    async def _configure(self, key: str, messages: Sequence[Message], now: int) -> None:
        """The key's limits become the latest message's (where not pinned); marks attention.
        Most publishes repeat the limits: then only the mark is written, unconditionally, so
        that many concurrent publishes to one key never fail on its version."""
        given = [_flow_control(m) for m in messages]
        gate = await self._b._get(key_pk(key), "G") or {}
        state = _flow_key(key, gate)
        if "cfg" in gate and _configured(state, given) == state:
            await self._call_update(self._attention_update(key_pk(key), now))
            return
        await self.change_key(key, lambda state: _configured(state, given), now, admit=False)

    # --- settling and cancelling --------------------------------------------------------------

    def settling(self, message: Message, settlement: Settlement, now: int) -> Settling:
        """A finished message frees its queue slot (kept by its callbacks, if any); an attempt
        frees its key's call slot, and a keyed retry waits in the key's wait list again."""
        result = Settling()
        slot = queues.slot_of(message)
        final = settlement.state.final
        if slot is not None:
            holders = sum(1 for f in settlement.follow_ups if queues.slot_of(f) == slot)
            change = holders - (1 if final else 0)
            if change or final:
                result.items.append(self._slot_update(slot, change, now))
                result.touched.append(queue_pk(slot[0]))
        key = message.flow_control_key
        if key is not None:
            result.items.append(self._release_update(key, message.id, now))
            result.touched.append(key_pk(key))
            if settlement.state == MessageState.RETRY:
                due = now if settlement.next_due is None else settlement.next_due
                result.park = self.wait_entry(key, due, message.id)
                result.items.append(result.park.entry)
        return result

    def cancelling(self, item: Item, message: Message, now: int) -> Settling:
        """A cancelled message leaves its line or wait list and frees what it held."""
        result = Settling()
        ref = item.get("wl", {}).get("S")
        if ref is not None:
            pk, sk = ref.split("\n", 1)
            result.items.append({"Delete": {"TableName": self._b.table, "Key": _key(pk, sk)}})
        slot = queues.slot_of(message)
        in_line = ref is not None and ref.startswith("G#Q#")
        if slot is not None and not in_line:
            result.items.append(self._slot_update(slot, -1, now))
            result.touched.append(queue_pk(slot[0]))
        if message.flow_control_key is not None:
            result.items.append(self._release_update(message.flow_control_key, message.id, now))
            result.touched.append(key_pk(message.flow_control_key))
        return result

    def _slot_update(self, slot: tuple[str, str], change: int, now: int) -> Item:
        names = {"#s": "s:" + slot[1]}
        values = {":zero": _ZERO, ":one": _ONE, ":change": {"N": str(change)}}
        expression = f"SET #s = if_not_exists(#s, :zero) + :change, {_BUMP}"
        if change < 0:  # a slot may be free: look
            expression += ", gp = :a, gs = :now"
            values.update({":a": {"S": ATTENTION}, ":now": _time(now)})
        return {
            "Update": {
                "TableName": self._b.table,
                "Key": _key(queue_pk(slot[0]), "G"),
                "UpdateExpression": expression,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def _release_update(self, key: str, message_id: str, now: int) -> Item:
        update = self._attention_update(key_pk(key), now)
        update["Update"]["UpdateExpression"] += " REMOVE #f"
        update["Update"]["ExpressionAttributeNames"] = {"#f": "f:" + message_id}
        return update

    def _attention_update(self, pk: str, now: int) -> Item:
        return {
            "Update": {
                "TableName": self._b.table,
                "Key": _key(pk, "G"),
                "UpdateExpression": f"SET {_BUMP}, gp = :a, gs = :now",
                "ExpressionAttributeValues": {
                    ":zero": _ZERO,
                    ":one": _ONE,
                    ":a": {"S": ATTENTION},
                    ":now": _time(now),
                },
            }
        }

    async def _call_update(self, update: Item) -> None:
        await self._b._call(self._b._db.update_item, **update["Update"])

    # --- leasing ---------------------------------------------------------------------------------

    async def hold(self, message: Message, token: str, gen: int, until: int, now: int) -> bool:
        """Extend a keyed message's call slot to its lease's end. False if the slot was
        reclaimed meanwhile (its earlier lease expired long ago): the message then goes back to
        its key's wait list, and the lease must be dropped."""
        key = message.flow_control_key
        assert key is not None
        try:
            await self._b._call(
                self._b._db.update_item,
                TableName=self._b.table,
                Key=_key(key_pk(key), "G"),
                UpdateExpression=f"SET #f = :until, {_BUMP}",
                ConditionExpression="attribute_exists(#f)",
                ExpressionAttributeNames={"#f": "f:" + message.id},
                ExpressionAttributeValues={
                    ":until": {"N": str(until + _SLOT_MARGIN)},
                    ":zero": _ZERO,
                    ":one": _ONE,
                },
            )
            return True
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
        place = self.wait_entry(key, now, message.id)
        state = MessageState.RETRY if message.retried else MessageState.CREATED
        try:
            await self._b._transact(
                [
                    {
                        "Update": {
                            "TableName": self._b.table,
                            "Key": _key(f"M#{message.id}", "M"),
                            "UpdateExpression": "SET st = :st, gen = :next, wl = :wl REMOVE lt, lu",
                            "ConditionExpression": "lt = :token AND gen = :gen",
                            "ExpressionAttributeValues": {
                                ":st": {"S": str(state)},
                                ":next": {"N": str(gen + 1)},
                                ":wl": {"S": place.ref},
                                ":token": {"S": token},
                                ":gen": {"N": str(gen)},
                            },
                        }
                    },
                    place.entry,
                    self._attention_update(key_pk(key), now),
                ]
            )
        except ClientError as exc:
            if _code(exc) != "TransactionCanceledException":
                raise
        await self.admit([key_pk(key)], now)
        return False

    # --- admitting -------------------------------------------------------------------------------

    async def admit(self, gates: Iterable[str], now: int) -> None:
        """Admission passes for ``gates`` (their pks); a gate lost to concurrent writers keeps
        its attention mark for the ticker. Never raises: the mark makes up for a failure."""
        for pk in dict.fromkeys(gates):
            try:
                for _ in range(_ATTEMPTS):
                    if await self._pass(pk, now):
                        break
            except Exception:
                log.exception("admission for %s failed; the ticker looks again", pk)

    async def attend(self, now: int) -> int:
        """The ticker: an admission pass for every gate marked for attention by ``now``."""
        marked: list[str] = []
        async for items in self._b._pages(
            self._b._db.query,
            TableName=self._b.table,
            IndexName="by-time",
            KeyConditionExpression="gp = :a AND gs <= :now",
            ExpressionAttributeValues={":a": {"S": ATTENTION}, ":now": _time(now)},
        ):
            marked += [item["pk"]["S"] for item in items]
        await self.admit(marked, now)
        return len(marked)

    async def next_attention(self) -> int | None:
        """When the earliest attention mark is due (ms)."""
        answer = await self._b._call(
            self._b._db.query,
            TableName=self._b.table,
            IndexName="by-time",
            KeyConditionExpression="gp = :a",
            ExpressionAttributeValues={":a": {"S": ATTENTION}},
            Limit=1,
        )
        return min((int(i["gs"]["S"]) for i in answer.get("Items", [])), default=None)

    async def _pass(self, pk: str, now: int) -> bool:
        """One admission pass; False when it lost a race and must be run again."""
        try:
            if pk.startswith("G#Q#"):
                again = await self._queue_pass(pk[4:], now)
            else:
                again = await self._key_pass(pk[4:], now)
        except ClientError as exc:
            if _code(exc) in ("ConditionalCheckFailedException", "TransactionCanceledException"):
                return False
            raise
        return not again

    async def _queue_pass(self, name: str, now: int) -> bool:
        """Admit the head(s) of a queue's line; True if more may be admitted right away."""
        b = self._b
        pk = queue_pk(name)
        gate = await b._get(pk, "G") or {}
        line = queues.gate(await b.get_record(queues.QUEUE, name))
        slots = {a: int(v["N"]) for a, v in gate.items() if a.startswith("s:")}
        line.held = sum(1 for count in slots.values() if count > 0)
        free = 0 if line.paused else min(line.parallelism - line.held, _BATCH)
        entries = await self._entries(pk, "L#", "L#~", free) if free > 0 else []
        parked = await self._parked(entries)
        waiting = [
            Waiting(item["pk"]["S"][2:], _record(item)["not_before"], name)
            for item in parked.values()
        ]
        result = admission.admit(waiting, {name: line}, {}, now)
        admitted = [parked[_mid_key(mid)] for mid in result.queued]
        items: list[Item] = []
        copies: list[tuple[str, int, int]] = []
        touched: list[str] = []
        for item in admitted:
            message_id, gen = item["pk"]["S"][2:], int(item["gen"]["N"])
            ref = item["wl"]["S"]
            items.append(_delete_entry(b.table, ref))
            key = _record(item).get("flow_control_key")
            if key is None:
                copies.append((message_id, gen + 1, now))
                items.append(_unpark(b.table, message_id, ref, gen))
            else:  # it has its slot; now it waits for its key
                place = self.wait_entry(key, now, message_id)
                items += [_repark(b.table, message_id, ref, gen, place), place.entry]
                if key_pk(key) not in touched:
                    items.append(self._attention_update(key_pk(key), now))
                    touched.append(key_pk(key))
        names: dict[str, str] = {}
        values: Item = {":zero": _ZERO, ":one": _ONE}
        sets = [_BUMP]
        for i, message_id in enumerate(result.queued):
            names[f"#n{i}"] = "s:" + message_id
            sets.append(f"#n{i} = :one")
        removes = [a for a, count in slots.items() if count <= 0]
        for i, attr in enumerate(removes):
            names[f"#r{i}"] = attr
        more = len(result.queued) == _BATCH
        items.append(
            self._gate_write(
                pk,
                gate,
                sets,
                [f"#r{i}" for i in range(len(removes))],
                names,
                values,
                None if more else result.wake_at,
                now,
                more,
            )
        )
        await b._send(copies, now)
        await b._transact(items)
        await self._wake_at(pk, gate, None if more else result.wake_at, now)
        if touched:
            await self.admit(touched, now)
        return more

    async def _key_pass(self, key: str, now: int) -> bool:
        """Start what a key's limits allow from its wait list; True if more may start now."""
        b = self._b
        pk = key_pk(key)
        gate = await b._get(pk, "G") or {}
        state = _flow_key(key, gate)
        flights = {a: int(v["N"]) for a, v in gate.items() if a.startswith("f:")}
        live = [until for until in flights.values() if until > now]
        limits = state.gate(len(live))
        free = _BATCH
        if limits.parallelism is not None:
            free = min(free, limits.parallelism - limits.running)
        blocked = limits.paused or free <= 0
        entries = [] if blocked else await self._entries(pk, "W#", f"W#{now:013d}~", free)
        parked = await self._parked(entries)
        waiting = [
            Waiting(item["pk"]["S"][2:], int(item["wl"]["S"].split("\n")[1][2:15]), None, key)
            for item in parked.values()
        ]
        result = admission.admit(waiting, {}, {key: limits}, now)
        wake = result.wake_at
        if blocked and not limits.paused and live:
            wake = _earliest(wake, min(live))  # a slot whose lease expired is reclaimed then
        later = [] if limits.paused else await self._entries(pk, f"W#{now:013d}~", "W#~", 1)
        if later:  # a retry's backoff ends, or a delay
            wake = _earliest(wake, int(later[0]["sk"]["S"][2:15]))
        items: list[Item] = []
        copies: list[tuple[str, int, int]] = []
        names: dict[str, str] = {}
        values: Item = {
            ":zero": _ZERO,
            ":one": _ONE,
            ":cfg": {"S": orjson.dumps(state.with_window(limits).to_record()).decode()},
        }
        if result.started:  # AWS refuses an expression value that no expression uses
            values[":held"] = {"N": str(now + b.record_visibility + _SLOT_MARGIN)}
        sets = [_BUMP, "cfg = :cfg"]
        for i, message_id in enumerate(result.started):
            item = parked[_mid_key(message_id)]
            gen, ref = int(item["gen"]["N"]), item["wl"]["S"]
            items += [_delete_entry(b.table, ref), _unpark(b.table, message_id, ref, gen)]
            copies.append((message_id, gen + 1, now))
            names[f"#n{i}"] = "f:" + message_id
            sets.append(f"#n{i} = :held")
        expired = [a for a, until in flights.items() if until <= now]
        for i, attr in enumerate(expired):
            names[f"#r{i}"] = attr
        more = len(result.started) == _BATCH
        items.append(
            self._gate_write(
                pk,
                gate,
                sets,
                [f"#r{i}" for i in range(len(expired))],
                names,
                values,
                None if more else wake,
                now,
                more,
            )
        )
        await b._send(copies, now)
        await b._transact(items)
        await self._wake_at(pk, gate, None if more else wake, now)
        return more

    def _gate_write(
        self,
        pk: str,
        gate: Item,
        sets: list[str],
        removes: list[str],
        names: dict[str, str],
        values: Item,
        wake: int | None,
        now: int,
        more: bool,
    ) -> Item:
        """The pass's write of its gate, on the version it read, with the next attention mark
        (none when nothing is left to do until something else changes)."""
        if more or wake is not None:
            sets.append("gp = :a, gs = :wake")
            values.update({":a": {"S": ATTENTION}, ":wake": _time(now if more else wake or now)})
        else:
            removes = [*removes, "gp", "gs"]
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        if "v" in gate:
            condition = "v = :v"
            values[":v"] = gate["v"]
        else:
            condition = "attribute_not_exists(v)"
        update: Item = {
            "TableName": self._b.table,
            "Key": _key(pk, "G"),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if names:
            update["ExpressionAttributeNames"] = names
        return {"Update": update}

    async def _entries(self, pk: str, low: str, high: str, limit: int) -> list[Item]:
        """A gate's entries with ``low`` <= sk <= ``high``, in order, read consistently."""
        if limit <= 0:
            return []
        answer = await self._b._call(
            self._b._db.query,
            TableName=self._b.table,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :low AND :high",
            ExpressionAttributeValues={
                ":pk": {"S": pk},
                ":low": {"S": low},
                ":high": {"S": high},
            },
            ConsistentRead=True,
            Limit=limit,
        )
        return list(answer.get("Items", []))

    async def _parked(self, entries: list[Item]) -> dict[str, Item]:
        """The message items of ``entries``, in their order, by message pk. An entry whose
        message does not name it back (never stored, or a crash mid-write) is deleted."""
        if not entries:
            return {}
        b = self._b
        items = await b._batch_get(
            [(f"M#{e['mid']['S']}", "M") for e in entries], consistent=True, order=True
        )
        by_pk = {item["pk"]["S"]: item for item in items}
        found: dict[str, Item] = {}
        for entry in entries:
            ref = f"{entry['pk']['S']}\n{entry['sk']['S']}"
            item = by_pk.get(f"M#{entry['mid']['S']}")
            if item is not None and item.get("wl", {}).get("S") == ref:
                found[item["pk"]["S"]] = item
            else:
                await b._call(b._db.delete_item, **_delete_entry(b.table, ref)["Delete"])
        return found

    async def _wake_at(self, pk: str, gate: Item, wake: int | None, now: int) -> None:
        """Have the gate looked at again at ``wake``: a worker polling this backend promotes
        (and so attends) then; and SQS, as a timer, hands a delivery function a wake-up record
        then (within ``max_sqs_delay``; later ones are the ticker's). A rate window of a second
        is thus not left to the ticker's minute. A wake already marked was already sent."""
        if wake is None:
            return
        self._b._next_wait = min(self._b._next_wait, wake)
        marked = gate.get("gs", {}).get("S")
        if wake > now and wake - now <= self._b.max_sqs_delay * 1000 and marked != f"{wake:013d}":
            await self._b._send_raw(_json({"gate": pk, "t": wake}), wake, now)

    async def on_timer(self, timer: dict[str, Any], now: int) -> int | None:
        """A wake-up record came back from SQS: the gate's admission pass, or (if this host's
        clock is behind the one that set it) the seconds to hide the record for."""
        pk, wake = str(timer["gate"]), int(timer["t"])
        if wake > now:
            return max(1, -(-(wake - now) // 1000))
        await self.admit([pk], now)
        return None

    # --- the management API --------------------------------------------------------------------

    async def queue_lags(self, names: Sequence[str]) -> dict[str, int]:
        """Messages in each queue's line, plus its slots in use."""

        async def lag(name: str) -> int:
            gate = await self._b._get(queue_pk(name), "G") or {}
            held = sum(1 for a, v in gate.items() if a.startswith("s:") and int(v["N"]) > 0)
            return held + await self._count(queue_pk(name), "L#", "L#~")

        counts = await asyncio.gather(*(lag(name) for name in names))
        return dict(zip(names, counts, strict=True))

    async def flow_keys(self, now: int, keys: Sequence[str] | None) -> list[FlowKeyUsage]:
        if keys is None:
            keys = [r["key"] for r in await self._b.list_records(FLOW_KEY)]
        items = await self._b._batch_get([(key_pk(k), "G") for k in keys], consistent=True)
        usages = []
        for item in sorted(items, key=lambda i: str(i["pk"]["S"])):
            key = item["pk"]["S"][4:]
            running = sum(1 for a, v in item.items() if a.startswith("f:") and int(v["N"]) > now)
            waiting = await self._count(key_pk(key), "W#", f"W#{now:013d}~")
            usages.append(FlowKeyUsage(_flow_key(key, item), running, waiting))
        return usages

    async def change_key(
        self, key: str, change: Callable[[FlowKey], FlowKey], now: int, *, admit: bool = True
    ) -> FlowKey:
        """Read-modify-write of a key's settings on its version; marks it for attention."""
        b = self._b
        for _ in range(_ATTEMPTS * 2):
            gate = await b._get(key_pk(key), "G") or {}
            state = change(_flow_key(key, gate))
            values: Item = {
                ":cfg": {"S": orjson.dumps(state.to_record()).decode()},
                ":zero": _ZERO,
                ":one": _ONE,
                ":a": {"S": ATTENTION},
                ":now": _time(now),
            }
            if "v" in gate:
                condition, values[":v"] = "v = :v", gate["v"]
            else:
                condition = "attribute_not_exists(v)"
            try:
                await b._call(
                    b._db.update_item,
                    TableName=b.table,
                    Key=_key(key_pk(key), "G"),
                    UpdateExpression=f"SET cfg = :cfg, {_BUMP}, gp = :a, gs = :now",
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                )
            except ClientError as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise
                continue
            if "cfg" not in gate:
                await b.put_record(FLOW_KEY, key, {"key": key})
            if admit:
                await self.admit([key_pk(key)], now)
            return state
        raise RuntimeError(f"flow-control key {key!r} kept changing under concurrent writers")

    async def _count(self, pk: str, low: str, high: str) -> int:
        answers = self._b._answers(
            self._b._db.query,
            TableName=self._b.table,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :low AND :high",
            ExpressionAttributeValues={":pk": {"S": pk}, ":low": {"S": low}, ":high": {"S": high}},
            Select="COUNT",
            ConsistentRead=True,
        )
        return sum([int(answer.get("Count", 0)) async for answer in answers])


# --- helpers ------------------------------------------------------------------------------------


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _key(pk: str, sk: str) -> Item:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _time(ms: int) -> Item:
    return {"S": f"{ms:013d}"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _mid_key(message_id: str) -> str:
    return f"M#{message_id}"


def _record(item: Item) -> dict[str, Any]:
    return dict(orjson.loads(item["rec"]["S"]))


def _earliest(a: int | None, b: int) -> int:
    return b if a is None else min(a, b)


def _flow_key(key: str, gate: Item) -> FlowKey:
    if "cfg" not in gate:
        return FlowKey(key)
    return FlowKey.from_record(orjson.loads(gate["cfg"]["S"]))


def _flow_control(message: Message) -> FlowControl:
    assert message.flow_control_key is not None
    return FlowControl(
        message.flow_control_key, message.flow_parallelism, message.flow_rate, message.flow_period
    )


def _configured(state: FlowKey, given: Sequence[FlowControl]) -> FlowKey:
    for one in given:
        state = state.configured(one)
    return state


def _delete_entry(table: str, ref: str) -> Item:
    pk, sk = ref.split("\n", 1)
    return {"Delete": {"TableName": table, "Key": _key(pk, sk)}}


def _unpark(table: str, message_id: str, ref: str, gen: int) -> Item:
    """The message leaves its wait list with a new generation: its copy is on its way."""
    return {
        "Update": {
            "TableName": table,
            "Key": _key(f"M#{message_id}", "M"),
            "UpdateExpression": "SET gen = :next REMOVE wl",
            "ConditionExpression": "wl = :wl AND gen = :gen",
            "ExpressionAttributeValues": {
                ":next": {"N": str(gen + 1)},
                ":wl": {"S": ref},
                ":gen": {"N": str(gen)},
            },
        }
    }


def _repark(table: str, message_id: str, ref: str, gen: int, place: Place) -> Item:
    return {
        "Update": {
            "TableName": table,
            "Key": _key(f"M#{message_id}", "M"),
            "UpdateExpression": "SET wl = :to",
            "ConditionExpression": "wl = :wl AND gen = :gen",
            "ExpressionAttributeValues": {
                ":to": {"S": place.ref},
                ":wl": {"S": ref},
                ":gen": {"N": str(gen)},
            },
        }
    }
