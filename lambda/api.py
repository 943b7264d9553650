"""API Gateway HTTP API (payload 2.0) or Lambda function URL → relay's route table."""

from __future__ import annotations

from typing import Any

from relay.aws_runtime import LambdaRuntime

runtime = LambdaRuntime()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return runtime.run(lambda relay: relay.api(event))
