"""infra/policies.py: template.yaml's function policies judged as IAM would, and calls turned into
what IAM checks for them."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from infra.policies import Access, Policies, PolicyWatch, accesses, resource_matches
from infra.template import transform_template

TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/relay-Table-X"
BUCKET = "arn:aws:s3:::relay-bodybucket-x"
QUEUE = "arn:aws:sqs:us-east-1:123456789012:relay-DispatchQueue-X"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:relay-Credentials-AbCdEf"
# What the local stack resolves each intrinsic of the template's policies to.
PHYSICAL = {
    "Table": TABLE,
    "BodyBucket": BUCKET,
    "DispatchQueue": QUEUE,
    "Credentials": SECRET,
}


def _resolve(node: Any) -> Any:
    """The template's intrinsics (GetAtt X.Arn, Sub "${X.Arn}/…", Ref X) with PHYSICAL's ARNs."""
    if isinstance(node, dict) and "Fn::GetAtt" in node:
        return PHYSICAL[node["Fn::GetAtt"][0]]
    if isinstance(node, dict) and "Ref" in node:
        return PHYSICAL[node["Ref"]]
    if isinstance(node, dict) and "Fn::Sub" in node:
        text = node["Fn::Sub"]
        for name, arn in PHYSICAL.items():
            text = text.replace(f"${{{name}.Arn}}", arn)
        return text
    if isinstance(node, dict):
        return {key: _resolve(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve(item) for item in node]
    return node


@pytest.fixture(scope="module")
def policies() -> Policies:
    functions = transform_template().functions
    return Policies.of_stack(
        {name: _resolve(f.statements) for name, f in functions.items()},
        {name: f.managed_policies for name, f in functions.items()},
    )


def test_allowed(policies: Policies) -> None:
    assert policies.allows("ApiFunction", "dynamodb:PutItem", TABLE)
    assert policies.allows("DeliverFunction", "s3:GetObject", f"{BUCKET}/body/msg_1")
    assert policies.allows("SchedulerFunction", "secretsmanager:GetSecretValue", SECRET)


def test_actions_are_case_insensitive(policies: Policies) -> None:
    assert policies.allows("ApiFunction", "DynamoDB:putitem", TABLE)


def test_denied_by_action(policies: Policies) -> None:
    assert not policies.allows("SchedulerFunction", "dynamodb:Scan", TABLE)
    assert not policies.allows("DeliverFunction", "s3:DeleteObject", f"{BUCKET}/body/msg_1")
    assert not policies.allows("ApiFunction", "sqs:DeleteMessage", QUEUE)


def test_denied_by_resource(policies: Policies) -> None:
    """The scheduler reads run/ and body/ objects only; a key outside (a DLQ entry's response
    under response/, the bucket itself, another bucket) is refused."""
    assert policies.allows("SchedulerFunction", "s3:GetObject", f"{BUCKET}/run/wfr_1/msg_1")
    assert policies.allows("SchedulerFunction", "s3:GetObject", f"{BUCKET}/body/msg_1")
    assert not policies.allows("SchedulerFunction", "s3:GetObject", f"{BUCKET}/response/dlq_1")
    assert not policies.allows("SchedulerFunction", "s3:GetObject", BUCKET)
    assert not policies.allows("SchedulerFunction", "s3:GetObject", f"{BUCKET}x/run/wfr_1/m")
    assert not policies.allows("ApiFunction", "dynamodb:GetItem", TABLE + "2")


def test_index_and_table_are_distinct_resources(policies: Policies) -> None:
    """Query is granted on the table and its indexes; Scan on the table only."""
    index = f"{TABLE}/index/by-time"
    assert policies.allows("ApiFunction", "dynamodb:Query", index)
    assert policies.allows("ApiFunction", "dynamodb:Scan", TABLE)
    assert not policies.allows("ApiFunction", "dynamodb:Scan", index)


def test_managed_policies_sam_attaches(policies: Policies) -> None:
    """The SQS event source's role (AWSLambdaSQSQueueExecutionRole) may delete any queue's
    records; the API function's (basic execution only) may not."""
    assert policies.allows("DeliverFunction", "sqs:DeleteMessage", QUEUE)
    assert policies.allows("ApiFunction", "logs:PutLogEvents", "arn:aws:logs:us-east-1:1:x")
    assert not policies.allows("ApiFunction", "sqs:ReceiveMessage", QUEUE)


def test_an_unknown_function_may_do_nothing(policies: Policies) -> None:
    assert not policies.allows("Other", "dynamodb:GetItem", TABLE)


def test_deny_wins_and_conditions_are_refused() -> None:
    statements = [
        {"Effect": "Allow", "Action": "s3:*", "Resource": f"{BUCKET}/*"},
        {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": f"{BUCKET}/run/*"},
    ]
    policies = Policies({"F": statements})
    assert policies.allows("F", "s3:DeleteObject", f"{BUCKET}/body/a")
    assert not policies.allows("F", "s3:DeleteObject", f"{BUCKET}/run/a")
    with pytest.raises(ValueError, match="Condition"):
        Policies({"F": [{**statements[0], "Condition": {}}]})


def test_wildcards_stay_within_arn_segments() -> None:
    assert resource_matches("arn:aws:dynamodb:*:*:table/T", TABLE.replace("relay-Table-X", "T"))
    assert resource_matches(f"{BUCKET}/*", f"{BUCKET}/a/b:c")
    assert not resource_matches("arn:aws:*", TABLE)  # a wildcard does not cross ':'
    assert resource_matches("*", TABLE)


@pytest.mark.parametrize(
    ("service", "operation", "params", "expected"),
    [
        ("dynamodb", "Query", {"TableName": "T", "IndexName": "log"}, [("Query", "T/index/log")]),
        ("dynamodb", "Scan", {"TableName": "T"}, [("Scan", "T")]),
        (
            "dynamodb",
            "TransactWriteItems",
            {
                "TransactItems": [
                    {"Put": {"TableName": "T"}},
                    {"ConditionCheck": {"TableName": "U"}},
                ]
            },
            [("PutItem", "T"), ("ConditionCheckItem", "U")],
        ),
        ("dynamodb", "BatchGetItem", {"RequestItems": {"T": {}}}, [("BatchGetItem", "T")]),
    ],
)
def test_dynamodb_calls(
    service: str, operation: str, params: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/"
    assert accesses(service, operation, params, "us-east-1") == [
        Access(f"dynamodb:{action}", table + resource) for action, resource in expected
    ]


def test_sqs_s3_and_secret_calls() -> None:
    url = "http://127.0.0.1:5000/123456789012/relay-DispatchQueue-X"
    assert accesses("sqs", "SendMessageBatch", {"QueueUrl": url}, "us-east-1") == [
        Access("sqs:SendMessage", QUEUE)
    ]
    s3 = {"Bucket": "relay-bodybucket-x", "Delete": {"Objects": [{"Key": "a"}, {"Key": "b"}]}}
    assert accesses("s3", "DeleteObjects", s3, "us-east-1") == [
        Access("s3:DeleteObject", f"{BUCKET}/a"),
        Access("s3:DeleteObject", f"{BUCKET}/b"),
    ]
    assert accesses("s3", "HeadObject", {"Bucket": "relay-bodybucket-x", "Key": "k"}, "x") == [
        Access("s3:GetObject", f"{BUCKET}/k")
    ]
    assert accesses("secretsmanager", "GetSecretValue", {"SecretId": SECRET}, "us-east-1") == [
        Access("secretsmanager:GetSecretValue", SECRET)
    ]
    assert accesses("cloudwatch", "PutMetricData", {"Namespace": "n"}, "us-east-1") == [
        Access("cloudwatch:PutMetricData", "*")
    ]


def test_watch_checks_the_clients_a_function_made_only() -> None:
    """A client made while a function acts is checked on every call, from any thread; one made
    outside (the emulator's, a test's) never is."""
    watch = PolicyWatch(Policies({"F": [{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}]}))
    session = boto3.session.Session(
        region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    with watch.acting_as("F"):
        theirs = session.client("dynamodb", endpoint_url="http://127.0.0.1:9")
    ours = session.client("dynamodb", endpoint_url="http://127.0.0.1:9")
    for client in (theirs, ours):
        client.meta.events.register("before-send", lambda **_: _Answer())  # no network
        client.describe_table(TableName="T")
    assert [str(d).split(":", 1)[0] for d in watch.denied] == ["F"]
    assert watch.denied[0].action == "dynamodb:DescribeTable"
    assert watch.denied[0].resource.endswith(":table/T")


class _Answer:
    """A canned HTTP answer (what before-send may return instead of sending)."""

    status_code = 200
    headers: dict[str, str] = {}
    content = b'{"Table": {"TableName": "T"}}'
    raw = None

    @property
    def text(self) -> str:
        return self.content.decode()
