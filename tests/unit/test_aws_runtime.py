"""relay.aws_runtime: the credentials secret in both of its forms."""

from __future__ import annotations

import json
import string

import pytest

from relay import protocol as p
from relay import webhooks
from relay.aws_runtime import env_lines, parse_credentials

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
