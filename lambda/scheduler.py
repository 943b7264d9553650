"""Every minute (EventBridge schedule): fire the cron schedules that are due, move long delays
and long retry backoffs that came due to the dispatch queue, answer workflow wait timeouts that
are due (their SQS wake-ups normally did) and send the wake-ups of those that came within SQS's
15 minutes, and finish workflow results a crash interrupted."""

from __future__ import annotations

from typing import Any

from relay.aws_runtime import LambdaRuntime

runtime = LambdaRuntime()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return runtime.run(lambda relay: relay.tick())
