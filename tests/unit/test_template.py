"""template.yaml agrees with the code that runs on it: the table is relay.backends.aws's schema,
the functions get the environment the runtime reads, and the SQS trigger is set up for relay's
own retries (partial batch responses, a visibility timeout that outlasts the function)."""

from __future__ import annotations

from typing import Any

import pytest

from infra.template import load_template, transform_template
from relay.backends.aws import TABLE_SCHEMA


def _canonical(node: Any) -> Any:
    """Lists of dicts compared as sets: CloudFormation does not care about their order."""
    if isinstance(node, dict):
        return {key: _canonical(value) for key, value in node.items()}
    if isinstance(node, list):
        items = [_canonical(item) for item in node]
        return sorted(items, key=repr)
    return node


def test_table_is_the_backends_schema() -> None:
    table = load_template()["Resources"]["Table"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert _canonical(table["Properties"]) == _canonical(TABLE_SCHEMA)


def test_functions_get_what_the_runtime_reads() -> None:
    transformed = transform_template()
    for function in transformed.functions.values():
        names = set(function.environment)
        assert {
            "RELAY_TABLE",
            "RELAY_QUEUE_URL",
            "RELAY_BUCKET",
            "RELAY_CREDENTIALS_SECRET",
        } <= names
        assert function.code_dir.name == "lambda"
        module = function.handler.split(".")[0]
        assert (function.code_dir / f"{module}.py").is_file()


def test_delivery_trigger_reports_partial_failures_and_outlasts_the_function() -> None:
    transformed = transform_template()
    [trigger] = transformed.sqs_triggers
    assert trigger.report_failures
    assert trigger.batch_size <= 10
    queue = transformed.resources[trigger.queue_arn["Fn::GetAtt"][0]]["Properties"]
    deliver = transformed.functions[trigger.function]
    assert queue["VisibilityTimeout"] >= deliver.timeout
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 3
    max_attempt = int(deliver.environment["RELAY_MAX_TIMEOUT_SECONDS"])
    assert max_attempt < deliver.timeout  # an attempt ends, and is stored, before the function


@pytest.mark.parametrize("public_api", ["HttpApi", "FunctionUrl"])
def test_public_api_choice(public_api: str) -> None:
    transformed = transform_template({"PublicApi": public_api})
    assert transformed.api_function == "ApiFunction"
    kinds = {
        r["Type"]
        for r in transformed.resources.values()
        if transformed.conditions.get(r.get("Condition", ""), True)
    }
    assert ("AWS::ApiGatewayV2::Api" in kinds) == (public_api == "HttpApi")
    assert ("AWS::Lambda::Url" in kinds) == (public_api == "FunctionUrl")
