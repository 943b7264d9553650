"""Counting what an AWS bill counts: every request of every boto3 client, SQS requests in 64 KB
chunks, and DynamoDB read and write request units as on-demand mode bills them (item sizes,
transactions at double price, secondary-index writes).

Installed as botocore event hooks (`before-call` / `after-call`) on every botocore session created
while the meter is installed, so it sees the relay's own clients and the emulator's (the SQS
event source's polling is billed too). Item sizes are measured with a separate client that the
meter does not count, from the items as stored before and after each write.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore import handlers

log = logging.getLogger("infra.meter")
_KB = 1024
_SQS_CHUNK = 64 * 1024
_WRITES = {"PutItem", "UpdateItem", "DeleteItem"}


def attribute_size(value: dict[str, Any]) -> int:
    """Bytes of one DynamoDB attribute value in wire form, by AWS's item size rules."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        digits = inner.lstrip("-").replace(".", "").strip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if kind == "B":
        return len(_raw(inner))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(v.encode()) for v in inner)
    if kind == "NS":
        return sum(attribute_size({"N": v}) for v in inner)
    if kind == "BS":
        return sum(len(_raw(v)) for v in inner)
    if kind == "L":
        return 3 + sum(attribute_size(v) + 1 for v in inner)
    if kind == "M":
        return 3 + item_size(inner) + len(inner)
    raise ValueError(f"unknown attribute type {kind}")


def _raw(value: str | bytes) -> bytes:
    """Binary values: base64 on the wire, bytes once botocore parsed them."""
    return value if isinstance(value, bytes) else base64.b64decode(value)


def item_size(item: dict[str, Any] | None) -> int:
    """Bytes of an item (attribute names plus values); 0 for no item."""
    if not item:
        return 0
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


@dataclass
class _Table:
    key: list[str]
    indexes: list[tuple[list[str], str, list[str]]]  # (keys, projection type, included)


@dataclass
class Usage:
    """What the meter counted since the last reset."""

    requests: Counter[str] = field(default_factory=Counter)  # "service.Operation" → calls
    sqs_billed: int = 0  # SQS requests as billed: one per 64 KB chunk of payload
    write_units: float = 0.0  # DynamoDB write request units (table and indexes)
    read_units: float = 0.0  # DynamoDB read request units

    def total(self, service: str) -> int:
        return sum(n for key, n in self.requests.items() if key.startswith(service + "."))


class AwsMeter:
    """Counts the AWS requests made by boto3 clients created while it is installed."""

    def __init__(self, endpoint_url: str | None = None) -> None:
        # Created before the hooks exist: the meter's own look-ups are never counted.
        self._probe = boto3.session.Session().client("dynamodb", endpoint_url=endpoint_url)
        self._tables: dict[str, _Table] = {}
        self._lock = threading.Lock()
        self.usage = Usage()
        self.active = True  # paused, the hooks cost nothing (for timing runs)
        self._specs = [("before-call", self._before), ("after-call", self._after)]

    def install(self) -> AwsMeter:
        handlers.BUILTIN_HANDLERS.extend(self._specs)
        return self

    def uninstall(self) -> None:
        for spec in self._specs:
            if spec in handlers.BUILTIN_HANDLERS:
                handlers.BUILTIN_HANDLERS.remove(spec)

    def reset(self) -> Usage:
        """Start counting afresh; returns what was counted so far."""
        with self._lock:
            usage, self.usage = self.usage, Usage()
        return usage

    # --- hooks ---------------------------------------------------------------------------------

    def _before(self, **kwargs: Any) -> None:
        if not self.active:
            return
        try:
            self._count_before(**kwargs)
        except Exception:  # a meter must never fail the call it watches
            log.exception("AWS meter: before-call")

    def _after(self, **kwargs: Any) -> None:
        if not self.active:
            return
        try:
            self._count_after(**kwargs)
        except Exception:
            log.exception("AWS meter: after-call")

    def _count_before(
        self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        service = model.service_model.endpoint_prefix
        with self._lock:
            self.usage.requests[f"{service}.{model.name}"] += 1
        if service == "dynamodb" and model.name in (
            _WRITES | {"BatchWriteItem", "TransactWriteItems"}
        ):
            body = json.loads(params.get("body") or b"{}")
            context["relay_meter_writes"] = [
                (table, key, transactional, self._get(table, key))
                for table, key, transactional in self._written_keys(model.name, body)
            ]
        elif service == "dynamodb":
            context["relay_meter_request"] = params.get("body") or b"{}"
        elif service == "sqs" and model.name in ("SendMessage", "SendMessageBatch"):
            self._add_sqs(len(params.get("body") or b""))

    def _count_after(
        self, model: Any, http_response: Any, context: dict[str, Any], **_: Any
    ) -> None:
        service = model.service_model.endpoint_prefix
        if service == "sqs" and model.name not in ("SendMessage", "SendMessageBatch"):
            self._add_sqs(len(http_response.content or b""))
            return
        if service != "dynamodb":
            return
        written = context.pop("relay_meter_writes", None)
        if written is not None:
            units = 0.0
            for table, key, transactional, old in written:
                new = self._get(table, key)
                units += self._write_units(table, old, new, transactional)
            with self._lock:
                self.usage.write_units += units
            return
        body = json.loads(http_response.content or b"{}")
        request = json.loads(context.get("relay_meter_request", b"{}") or b"{}")
        units = _read_units(model.name, body, request)
        with self._lock:
            self.usage.read_units += units

    def _add_sqs(self, payload: int) -> None:
        with self._lock:
            self.usage.sqs_billed += max(1, math.ceil(payload / _SQS_CHUNK))

    # --- DynamoDB sizes ------------------------------------------------------------------------

    def _table(self, name: str) -> _Table:
        if name not in self._tables:
            desc = self._probe.describe_table(TableName=name)["Table"]
            indexes = [
                (
                    [k["AttributeName"] for k in gsi["KeySchema"]],
                    gsi["Projection"]["ProjectionType"],
                    gsi["Projection"].get("NonKeyAttributes", []),
                )
                for gsi in desc.get("GlobalSecondaryIndexes", [])
                + desc.get("LocalSecondaryIndexes", [])
            ]
            key = [k["AttributeName"] for k in desc["KeySchema"]]
            self._tables[name] = _Table(key=key, indexes=indexes)
        return self._tables[name]

    def _get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self._probe.get_item(
            TableName=table, Key=key, ConsistentRead=True
        ).get("Item")
        return item

    def _written_keys(
        self, operation: str, body: dict[str, Any]
    ) -> list[tuple[str, dict[str, Any], bool]]:
        """(table, key, transactional) of each item a write request touches."""
        found: list[tuple[str, dict[str, Any], bool]] = []
        if operation in _WRITES:
            table = body["TableName"]
            found.append((table, self._key(table, body.get("Key") or body["Item"]), False))
        elif operation == "BatchWriteItem":
            for table, requests in body["RequestItems"].items():
                for request in requests:
                    item = (request.get("PutRequest") or {}).get("Item") or request[
                        "DeleteRequest"
                    ]["Key"]
                    found.append((table, self._key(table, item), False))
        else:  # TransactWriteItems
            for entry in body["TransactItems"]:
                ((_, action),) = entry.items()
                table = action["TableName"]
                found.append((table, self._key(table, action.get("Key") or action["Item"]), True))
        return found

    def _key(self, table: str, item: dict[str, Any]) -> dict[str, Any]:
        return {name: item[name] for name in self._table(table).key}

    def _write_units(
        self,
        table: str,
        old: dict[str, Any] | None,
        new: dict[str, Any] | None,
        transactional: bool,
    ) -> float:
        """A write costs one unit per KB of the larger of the item before and after (two in a
        transaction), plus the writes it causes in each secondary index."""
        size = max(item_size(old), item_size(new))
        units = float(max(1, math.ceil(size / _KB)) * (2 if transactional else 1))
        spec = self._table(table)
        for keys, projection, included in spec.indexes:
            before = _projected(old, keys, spec.key, projection, included)
            after = _projected(new, keys, spec.key, projection, included)
            if before == after:
                continue
            same_key = before and after and all(before[k] == after[k] for k in keys)
            for image in [after] if same_key else [before, after]:
                if image:
                    units += max(1, math.ceil(item_size(image) / _KB))
        return units


def _projected(
    item: dict[str, Any] | None,
    keys: list[str],
    table_key: list[str],
    projection: str,
    included: list[str],
) -> dict[str, Any] | None:
    """The item as an index stores it, or None when the index does not hold it."""
    if not item or not all(k in item for k in keys):
        return None
    if projection == "ALL":
        return item
    names = set(keys) | set(table_key) | (set(included) if projection == "INCLUDE" else set())
    return {k: v for k, v in item.items() if k in names}


def _read_units(operation: str, body: dict[str, Any], request: dict[str, Any]) -> float:
    """Read units of a read answer: per 4 KB, half for eventually consistent reads."""
    factor = 1.0 if request.get("ConsistentRead") else 0.5
    if operation == "GetItem":
        return factor * max(1, math.ceil(item_size(body.get("Item")) / (4 * _KB)))
    if operation in ("Query", "Scan"):
        total = sum(item_size(item) for item in body.get("Items", []))
        return factor * max(1, math.ceil(total / (4 * _KB)))
    if operation == "BatchGetItem":
        return sum(
            factor * max(1, math.ceil(item_size(item) / (4 * _KB)))
            for items in body.get("Responses", {}).values()
            for item in items
        )
    if operation == "TransactGetItems":
        return sum(
            2 * max(1, math.ceil(item_size(r.get("Item")) / (4 * _KB)))
            for r in body.get("Responses", [])
        )
    return 0.0
