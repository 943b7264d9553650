"""Every minute (EventBridge schedule): fire the cron schedules that are due, and move long
delays and long retry backoffs that came due to the dispatch queue."""

from __future__ import annotations

from typing import Any

from relay.aws_runtime import LambdaRuntime

runtime = LambdaRuntime()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return runtime.run(lambda relay: relay.tick())
