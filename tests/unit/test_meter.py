"""infra.meter: DynamoDB request units as on-demand mode bills them, counted on a moto server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from infra.meter import AwsMeter, attribute_size, item_size


def test_item_sizes_follow_the_aws_rules() -> None:
    assert attribute_size({"S": "héllo"}) == 6  # UTF-8 bytes
    assert attribute_size({"N": "12345"}) == 4  # (digits / 2, rounded up) + 1
    assert attribute_size({"B": "AAEC"}) == 3  # base64 on the wire
    assert attribute_size({"B": b"\0\1\2"}) == 3  # bytes once parsed
    assert attribute_size({"L": [{"S": "ab"}, {"BOOL": True}]}) == 3 + (2 + 1) + (1 + 1)
    assert item_size({"pk": {"S": "a"}, "n": {"N": "1"}}) == (2 + 1) + (1 + 2)


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_write_units_count_size_transactions_and_index_writes(endpoint: str) -> None:
    setup = boto3.client("dynamodb", endpoint_url=endpoint)
    setup.create_table(
        TableName="tbl",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "gp")
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-gp",
                "KeySchema": [{"AttributeName": "gp", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    )
    meter = AwsMeter(endpoint).install()
    try:
        db = boto3.session.Session().client("dynamodb", endpoint_url=endpoint)

        def units(call: Any, **kwargs: Any) -> float:
            meter.reset()
            call(TableName="tbl", **kwargs)
            return meter.reset().write_units

        big = {"pk": {"S": "a"}, "body": {"S": "x" * 1500}}  # 2 KB: 2 units
        assert units(db.put_item, Item=big) == 2
        # Indexed: the table write, plus one index write (keys only: under 1 KB).
        assert units(db.put_item, Item={"pk": {"S": "b"}, "gp": {"S": "1"}}) == 2
        # An update costs the larger of the item before and after; the index is untouched.
        assert units(db.update_item, Key={"pk": {"S": "a"}}, UpdateExpression="REMOVE body") == 2
        meter.reset()
        db.transact_write_items(
            TransactItems=[{"Put": {"TableName": "tbl", "Item": {"pk": {"S": "c"}}}}]
        )
        assert meter.reset().write_units == 2  # transactions cost double
        db.get_item(TableName="tbl", Key={"pk": {"S": "c"}})
        usage = meter.reset()
        assert usage.read_units == 0.5  # eventually consistent, under 4 KB
        assert usage.requests["dynamodb.GetItem"] == 1
    finally:
        meter.uninstall()
