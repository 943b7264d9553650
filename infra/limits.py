"""AWS service limits that moto does not enforce, checked on every request a boto3 client makes.

Installed like the meter (a `before-parameter-build` hook in botocore's built-in handlers, so every
session created afterwards has it). A request AWS would reject raises the ``ClientError`` AWS
would answer (``ValidationException`` / ``TooManyEntriesInBatchRequest`` / ...) and is kept in
:data:`violations`, so that a caller swallowing the error still fails the test at its teardown.

Sources: DynamoDB developer guide "Constraints" and "Service quotas" pages and the API reference
(BatchGetItem, BatchWriteItem, TransactWriteItems, Query, Scan); SQS developer guide "Amazon SQS
message quotas" and API reference (SendMessage: body up to 1 MiB since 2025, SendMessageBatch,
ReceiveMessage, ChangeMessageVisibility); S3 user guide "Naming Amazon S3 objects".
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from botocore import handlers
from botocore.exceptions import ClientError

from infra.meter import attribute_size, item_size
from relay.backends.aws import TABLE_SCHEMA

KB = 1024
MIB = 1024 * KB
# DynamoDB
IN_OPERANDS = 100
EXPRESSION_BYTES = 4 * KB
EXPRESSION_OPERATORS = 300  # operators and functions in one expression
EXPRESSION_VALUES_BYTES = 2 * MIB
ITEM_BYTES = 400 * KB
BATCH_GET_KEYS = 100
BATCH_WRITE_REQUESTS = 25
TRANSACT_ACTIONS = 100
TRANSACT_BYTES = 4 * MIB
TOTAL_SEGMENTS = 1_000_000
KEY_BYTES = {"HASH": 2048, "RANGE": 1024}
# SQS
SQS_BATCH_ENTRIES = 10
SQS_MESSAGE_BYTES = MIB  # the body (and attributes) of one message, and of a whole batch
SQS_RANGES = {  # parameter → inclusive range, in a request or in each of its batch entries
    "DelaySeconds": (0, 900),
    "VisibilityTimeout": (0, 43_200),
    "MaxNumberOfMessages": (1, 10),
    "WaitTimeSeconds": (0, 20),
}
# S3
S3_KEY_BYTES = 1024

_EXPRESSIONS = (
    "KeyConditionExpression",
    "FilterExpression",
    "ConditionExpression",
    "UpdateExpression",
    "ProjectionExpression",
)
_CONDITIONS = _EXPRESSIONS[:3]  # the ones made of comparisons, whose operators are counted
_IN_LIST = re.compile(r"\bIN\s*\(([^()]*)\)", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"[:#][A-Za-z0-9_]+")
_KEYWORD = r"\b(?:AND|OR|NOT|IN|BETWEEN)\b"
_OPERATOR = re.compile(rf"{_KEYWORD}|<>|<=|>=|[=<>]|\b(?!{_KEYWORD})\w+\s*\(", re.IGNORECASE)


def _key_limits(schema: Mapping[str, Any]) -> dict[str, int]:
    """Byte limits of each key attribute of the table and its indexes (AWS checks them on
    writes: an item whose index key is too long is rejected)."""
    schemas = [schema["KeySchema"]] + [i["KeySchema"] for i in schema["GlobalSecondaryIndexes"]]
    return {k["AttributeName"]: KEY_BYTES[k["KeyType"]] for s in schemas for k in s}


KEY_LIMITS = _key_limits(TABLE_SCHEMA)

violations: list[str] = []  # every violation since the last clear, as its error message
_lock = threading.Lock()


class _Rejected(Exception):
    """One broken limit: AWS's error code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _require(ok: bool, message: str, code: str = "ValidationException") -> None:
    if not ok:
        raise _Rejected(code, message)


# --- DynamoDB ----------------------------------------------------------------------------------


def _expressions(request: Mapping[str, Any]) -> None:
    """A request's expressions and the names and values they use."""
    for name in _EXPRESSIONS:
        text = request.get(name)
        if not isinstance(text, str):
            continue
        _require(len(text.encode()) <= EXPRESSION_BYTES, f"{name} longer than 4 KB")
        for operands in _IN_LIST.findall(text):
            count = operands.count(",") + 1
            _require(count <= IN_OPERANDS, f"{name}: IN with {count} operands (at most 100)")
        if name in _CONDITIONS:
            count = len(_OPERATOR.findall(text))
            _require(count <= EXPRESSION_OPERATORS, f"{name}: {count} operators (at most 300)")
    values = request.get("ExpressionAttributeValues") or {}
    _sets(values)
    used = set(_PLACEHOLDER.findall(" ".join(str(request.get(n, "")) for n in _EXPRESSIONS)))
    for given in ("ExpressionAttributeValues", "ExpressionAttributeNames"):
        unused = set(request.get(given) or {}) - used
        _require(not unused, f"{given} unused in expressions: {sorted(unused)}")
    size = sum(len(k.encode()) + attribute_size(v) for k, v in values.items())
    _require(size <= EXPRESSION_VALUES_BYTES, "ExpressionAttributeValues over 2 MB")


def _keys(attributes: Mapping[str, Any] | None) -> None:
    """Key attribute values (of the table and its indexes): 1 byte up to their limit."""
    for name, value in (attributes or {}).items():
        limit = KEY_LIMITS.get(name)
        if limit is not None and ("S" in value or "B" in value):
            size = attribute_size(value)
            _require(0 < size <= limit, f"key attribute {name} of {size} bytes (1..{limit})")


def _sets(values: Mapping[str, Any] | None) -> None:
    """Sets (SS, NS, BS), also within lists and maps: not empty, no value twice."""
    for value in (values or {}).values():
        ((kind, inner),) = value.items()
        if kind in ("SS", "NS", "BS"):
            _require(0 < len(inner) == len(set(inner)), f"{kind} empty or with duplicates")
        elif kind == "L":
            _sets({str(i): v for i, v in enumerate(inner)})
        elif kind == "M":
            _sets(inner)


def _item(item: Mapping[str, Any]) -> None:
    _keys(item)
    _sets(item)
    _require(item_size(dict(item)) <= ITEM_BYTES, "Item size has exceeded the maximum allowed size")


def _single(request: Mapping[str, Any]) -> None:
    """Any one-table request (and each action of a transaction)."""
    _expressions(request)
    _keys(request.get("Key"))
    if "Item" in request:
        _item(request["Item"])
    if "Limit" in request:
        _require(request["Limit"] >= 1, "Limit must be at least 1")
    if "TotalSegments" in request:
        _require(1 <= request["TotalSegments"] <= TOTAL_SEGMENTS, "TotalSegments out of range")


def _batch_get(request: Mapping[str, Any]) -> None:
    keys = [k for table in request["RequestItems"].values() for k in table["Keys"]]
    _require(len(keys) <= BATCH_GET_KEYS, f"BatchGetItem of {len(keys)} keys (at most 100)")
    for key in keys:
        _keys(key)


def _batch_write(request: Mapping[str, Any]) -> None:
    writes = [w for table in request["RequestItems"].values() for w in table]
    _require(len(writes) <= BATCH_WRITE_REQUESTS, f"BatchWriteItem of {len(writes)} (at most 25)")
    for write in writes:
        if "PutRequest" in write:
            _item(write["PutRequest"]["Item"])
        else:
            _keys(write["DeleteRequest"]["Key"])


def _transact_write(request: Mapping[str, Any]) -> None:
    actions = [a for entry in request["TransactItems"] for a in entry.values()]
    _require(len(actions) <= TRANSACT_ACTIONS, f"{len(actions)} actions (at most 100)")
    size = 0
    for action in actions:
        _single(action)
        size += item_size(action.get("Item") or action.get("Key"))
        size += item_size(action.get("ExpressionAttributeValues"))
    _require(size <= TRANSACT_BYTES, "transaction over 4 MB")


# --- SQS ---------------------------------------------------------------------------------------


def _message_bytes(message: Mapping[str, Any]) -> int:
    """A message's size as SQS counts it: its body and its attributes' names, types and values."""
    size = len(str(message.get("MessageBody", "")).encode())
    for name, value in (message.get("MessageAttributes") or {}).items():
        data = value.get("StringValue") or value.get("BinaryValue") or b""
        size += len(name.encode()) + len(value["DataType"].encode())
        size += len(data.encode() if isinstance(data, str) else data)
    return size


def _ranges(request: Mapping[str, Any]) -> None:
    for name, (low, high) in SQS_RANGES.items():
        if name in request:
            _require(low <= int(request[name]) <= high, f"{name} must be {low}..{high}")


def _sqs_single(request: Mapping[str, Any]) -> None:
    _ranges(request)
    if "MessageBody" in request:
        size = _message_bytes(request)
        _require(size <= SQS_MESSAGE_BYTES, f"message of {size} bytes (at most 1 MiB)")


def _sqs_batch(request: Mapping[str, Any]) -> None:
    entries = request["Entries"]
    _require(
        0 < len(entries) <= SQS_BATCH_ENTRIES, "too many entries", "TooManyEntriesInBatchRequest"
    )
    ids = [e["Id"] for e in entries]
    _require(len(set(ids)) == len(ids), "duplicate entry ids", "BatchEntryIdsNotDistinct")
    for entry in entries:
        _sqs_single(entry)
    total = sum(_message_bytes(e) for e in entries if "MessageBody" in e)
    _require(total <= SQS_MESSAGE_BYTES, f"batch of {total} bytes", "BatchRequestTooLong")


# --- S3 ----------------------------------------------------------------------------------------


def _s3_key(request: Mapping[str, Any]) -> None:
    if "Key" in request:
        size = len(str(request["Key"]).encode())
        _require(size <= S3_KEY_BYTES, f"object key of {size} bytes", "KeyTooLongError")


Check = Callable[[Mapping[str, Any]], None]

RULES: dict[str, dict[str, Check]] = {  # service → operation ("*": any other) → check
    "dynamodb": {
        "BatchGetItem": _batch_get,
        "BatchWriteItem": _batch_write,
        "TransactWriteItems": _transact_write,
        "*": _single,
    },
    "sqs": {
        "SendMessageBatch": _sqs_batch,
        "DeleteMessageBatch": _sqs_batch,
        "ChangeMessageVisibilityBatch": _sqs_batch,
        "*": _sqs_single,
    },
    "s3": {"*": _s3_key},
}


def check(service: str, operation: str, params: Mapping[str, Any]) -> None:
    """Raise the ClientError AWS would answer if ``params`` break a limit (and record it)."""
    rules = RULES.get(service)
    if rules is None:
        return
    try:
        rules.get(operation, rules["*"])(params)
    except _Rejected as rejected:
        message = f"{service}.{operation}: {rejected}"
        with _lock:
            violations.append(message)
        error = {"Error": {"Code": rejected.code, "Message": message}}
        raise ClientError(error, operation) from None  # type: ignore[arg-type]


def _on_call(params: Mapping[str, Any], model: Any, **_: Any) -> None:
    """before-parameter-build on every client."""
    check(model.service_model.endpoint_prefix, model.name, params)


_HOOK = ("before-parameter-build", _on_call)


def install() -> None:
    """Check every client of every botocore session created from now on (idempotent)."""
    if _HOOK not in handlers.BUILTIN_HANDLERS:
        handlers.BUILTIN_HANDLERS.append(_HOOK)


def drain() -> Iterator[str]:
    """The violations recorded so far, forgetting them."""
    with _lock:
        found, violations[:] = list(violations), []
    return iter(found)
