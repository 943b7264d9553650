"""relay.aws_runtime: the credentials secret in both of its forms, and `relay aws-env`."""

from __future__ import annotations

import asyncio
import json
import string

import boto3
import pytest

from relay import protocol as p
from relay import webhooks
from relay.aws_runtime import env_lines, parse_credentials, stack_env_lines
from relay.config import Settings
from relay.service import RelayService
from tests.conftest import aws_backend

GENERATED = (string.ascii_letters + string.digits) * 3  # 186 letters and digits; 128 are used


def test_generated_secret_is_split_into_token_keys_and_webhook_secret() -> None:
    token, keys = parse_credentials(GENERATED[:128] + "\n")
    assert token == GENERATED[:40]
    assert keys.current == "sig_" + GENERATED[40:68]
    assert keys.next == "sig_" + GENERATED[68:96]
    assert keys.webhook_secret is not None
    assert webhooks.check_secret(keys.webhook_secret) == keys.webhook_secret


def test_json_secret_sets_them_explicitly() -> None:
    secret = json.dumps(
        {
            "token": p.DEV_TOKEN,
            "currentSigningKey": p.DEV_CURRENT_SIGNING_KEY,
            "nextSigningKey": p.DEV_NEXT_SIGNING_KEY,
        }
    )
    token, keys = parse_credentials(secret)
    assert (token, keys.current, keys.next) == (
        p.DEV_TOKEN,
        p.DEV_CURRENT_SIGNING_KEY,
        p.DEV_NEXT_SIGNING_KEY,
    )
    assert keys.webhook_secret is None
    assert env_lines("https://x.example", token, keys) == [
        "QSTASH_URL=https://x.example",
        f"QSTASH_TOKEN={p.DEV_TOKEN}",
        f"QSTASH_CURRENT_SIGNING_KEY={p.DEV_CURRENT_SIGNING_KEY}",
        f"QSTASH_NEXT_SIGNING_KEY={p.DEV_NEXT_SIGNING_KEY}",
    ]


@pytest.mark.parametrize("bad", ["short", "x" * 127, "!" * 128])
def test_anything_else_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_credentials(bad)


def test_aws_env_prints_the_keys_in_force_after_a_rotation() -> None:
    """`relay aws-env` reads the token from the secret and applies the stored rotation."""
    secret = json.dumps(
        {
            "token": p.DEV_TOKEN,
            "currentSigningKey": p.DEV_CURRENT_SIGNING_KEY,
            "nextSigningKey": p.DEV_NEXT_SIGNING_KEY,
        }
    )
    with aws_backend() as backend:
        secrets = boto3.client("secretsmanager")
        arn = secrets.create_secret(Name="relay-credentials", SecretString=secret)["ARN"]
        outputs = {
            "ApiUrl": "https://x.example",
            "CredentialsSecret": arn,
            "TableName": backend.table,
            "DispatchQueueUrl": backend.queue_url,
        }
        template = {
            "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
            "Outputs": {name: {"Value": value} for name, value in outputs.items()},
        }
        boto3.client("cloudformation").create_stack(
            StackName="relay", TemplateBody=json.dumps(template)
        )
        _, initial = parse_credentials(secret)
        service = RelayService(backend, Settings(), keys=initial, token=p.DEV_TOKEN)
        rotated = asyncio.run(service.rotate_keys())
        lines = stack_env_lines("relay", "us-east-1")
    assert lines == env_lines("https://x.example", p.DEV_TOKEN, rotated)
    assert rotated.current == p.DEV_NEXT_SIGNING_KEY
