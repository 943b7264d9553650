"""The README's "Receiving messages" samples run: each defines its guarded handler, and the Lambda
one accepts a signed event."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from relay.receiver import NonRetryable, RetryLater
from relay.signing import generate_keys, sign

README = Path(__file__).parent.parent.parent / "README.md"


def _samples() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Receiving messages") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_there_is_a_sample_per_framework() -> None:
    imports = " ".join(_samples())
    for module in ("receiver import", ".flask", ".starlette import Delivery, verified", ".django"):
        assert module in imports
    assert ".starlette import Delivery, verify_signature" in imports
    assert ".aws_lambda" in imports


def test_the_samples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = generate_keys()
    monkeypatch.setenv("QSTASH_CURRENT_SIGNING_KEY", keys.current)
    monkeypatch.setenv("QSTASH_NEXT_SIGNING_KEY", keys.next)
    shipped: list[Any] = []
    payments_down = [False]
    namespace: dict[str, Any] = {
        "__name__": "readme_samples",
        "ship": shipped.append,
        "payments_are_down": lambda: payments_down[0],
    }
    for sample in _samples():
        exec(compile(sample, str(README), "exec"), namespace)

    body = b'{"order_id": 42, "sku": "kettle"}'
    url = "https://abc.lambda-url.eu-west-1.on.aws/jobs/order"
    event = {
        "version": "2.0",
        "rawPath": "/jobs/order",
        "headers": {"upstash-signature": sign(keys.current, url=url, body=body)},
        "requestContext": {"domainName": "abc.lambda-url.eu-west-1.on.aws"},
        "body": body.decode(),
    }
    assert namespace["handler"](event, None) == {"statusCode": 200, "body": "done"}
    assert shipped == [namespace["OrderPlaced"](order_id=42, sku="kettle")]

    charge, order = namespace["charge"], namespace["OrderPlaced"]
    payments_down[0] = True
    with pytest.raises(RetryLater):
        charge(order(order_id=1, sku="kettle"))
    payments_down[0] = False
    with pytest.raises(NonRetryable):
        charge(order(order_id=1, sku="discontinued"))
