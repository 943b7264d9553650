"""The AWS limits checker (infra/limits.py): each rule at its boundary, and on a real client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from botocore.exceptions import ClientError

from infra import limits
from tests.conftest import aws_backend


def _s(size: int) -> dict[str, str]:
    return {"S": "x" * size}


def _rejected(service: str, operation: str, params: Mapping[str, Any]) -> str:
    """The error code of a request the checker refuses (and forgets the violation)."""
    with pytest.raises(ClientError) as raised:
        limits.check(service, operation, params)
    assert len(list(limits.drain())) == 1
    return str(raised.value.response["Error"]["Code"])


def _in(count: int) -> dict[str, Any]:
    names = [f":v{i}" for i in range(count)]
    return {"FilterExpression": f"#a IN ({', '.join(names)})"}


def _keys(count: int) -> dict[str, Any]:
    return {"RequestItems": {"t": {"Keys": [{"pk": _s(1), "sk": _s(1)}] * count}}}


def _writes(count: int) -> dict[str, Any]:
    return {"RequestItems": {"t": [{"DeleteRequest": {"Key": {"pk": _s(1)}}}] * count}}


def _actions(count: int, item: int = 10) -> dict[str, Any]:
    put = {"Put": {"TableName": "t", "Item": {"pk": _s(1), "v": _s(item)}}}
    return {"TransactItems": [put] * count}


def _entries(count: int, body: int = 1, ids: list[str] | None = None) -> dict[str, Any]:
    names = ids or [str(i) for i in range(count)]
    return {"Entries": [{"Id": i, "MessageBody": "x" * body} for i in names]}


# (service, operation, within the limit, over it)
BOUNDARIES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("dynamodb", "Query", _in(100), _in(101)),
    ("dynamodb", "Query", {"FilterExpression": "x" * 4096}, {"FilterExpression": "x" * 4097}),
    (
        "dynamodb",
        "Scan",
        {"FilterExpression": " OR ".join(["a = :v"] * 150)},  # 299 operators
        {"FilterExpression": " OR ".join(["a = :v"] * 151)},
    ),
    (
        "dynamodb",
        "Query",
        {"FilterExpression": "a = :v", "ExpressionAttributeValues": {":v": _s(2 * limits.MIB - 2)}},
        {"FilterExpression": "a = :v", "ExpressionAttributeValues": {":v": _s(2 * limits.MIB)}},
    ),
    (
        "dynamodb",
        "Query",
        {"FilterExpression": "#a = :v1", "ExpressionAttributeValues": {":v1": _s(1)}},
        {"FilterExpression": "#a = :v10", "ExpressionAttributeValues": {":v1": _s(1)}},
    ),
    ("dynamodb", "Query", {"Limit": 1}, {"Limit": 0}),
    ("dynamodb", "Scan", {"TotalSegments": 1_000_000}, {"TotalSegments": 1_000_001}),
    ("dynamodb", "BatchGetItem", _keys(100), _keys(101)),
    ("dynamodb", "BatchWriteItem", _writes(25), _writes(26)),
    ("dynamodb", "TransactWriteItems", _actions(100), _actions(101)),
    ("dynamodb", "TransactWriteItems", _actions(10, 399_000), _actions(11, 399_000)),
    (
        "dynamodb",
        "PutItem",
        {"Item": {"pk": _s(1), "v": _s(400 * 1024 - 4)}},
        {"Item": {"pk": _s(1), "v": _s(400 * 1024 - 3)}},
    ),
    (
        "dynamodb",
        "PutItem",
        {"Item": {"pk": _s(1), "lb": {"SS": ["a", "b"]}}},
        {"Item": {"pk": _s(1), "lb": {"SS": ["a", "a"]}}},
    ),
    (
        "dynamodb",
        "UpdateItem",
        {
            "UpdateExpression": "SET a = :v",
            "ExpressionAttributeValues": {":v": {"L": [{"NS": ["1"]}]}},
        },
        {
            "UpdateExpression": "SET a = :v",
            "ExpressionAttributeValues": {":v": {"L": [{"NS": []}]}},
        },
    ),
    ("dynamodb", "GetItem", {"Key": {"pk": _s(2048)}}, {"Key": {"pk": _s(2049)}}),
    ("dynamodb", "PutItem", {"Item": {"gs": _s(1024)}}, {"Item": {"gs": _s(1025)}}),
    ("sqs", "SendMessageBatch", _entries(10), _entries(11)),
    ("sqs", "DeleteMessageBatch", _entries(2), _entries(2, ids=["a", "a"])),
    ("sqs", "SendMessageBatch", _entries(2, 512 * 1024), _entries(2, 512 * 1024 + 1)),
    (
        "sqs",
        "SendMessage",
        {"MessageBody": "x" * limits.MIB},
        {"MessageBody": "x" * (limits.MIB + 1)},
    ),
    ("sqs", "SendMessage", {"DelaySeconds": 900}, {"DelaySeconds": 901}),
    (
        "sqs",
        "ChangeMessageVisibility",
        {"VisibilityTimeout": 43_200},
        {"VisibilityTimeout": 43_201},
    ),
    ("sqs", "ReceiveMessage", {"MaxNumberOfMessages": 10}, {"MaxNumberOfMessages": 11}),
    ("sqs", "ReceiveMessage", {"WaitTimeSeconds": 20}, {"WaitTimeSeconds": 21}),
    ("s3", "PutObject", {"Key": "k" * 1024}, {"Key": "k" * 1025}),
]


@pytest.mark.parametrize(("service", "operation", "within", "over"), BOUNDARIES)
def test_each_limit_at_its_boundary(
    service: str, operation: str, within: dict[str, Any], over: dict[str, Any]
) -> None:
    limits.check(service, operation, within)
    assert _rejected(service, operation, over)


def test_a_real_client_refuses_what_aws_would() -> None:
    """Installed (by tests/conftest.py), the check runs on the clients of the moto backend."""
    with aws_backend() as aws:
        with pytest.raises(ClientError, match="BatchGetItem of 101 keys"):
            aws._db.batch_get_item(RequestItems=_keys(101)["RequestItems"])
        assert list(limits.drain()) == [
            "dynamodb.BatchGetItem: BatchGetItem of 101 keys (at most 100)"
        ]
