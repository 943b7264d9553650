"""Code paths of template.yaml's functions that their IAM policies must allow, on the stack run
locally (the ``stack`` fixture fails at teardown on any call a policy does not allow)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from infra.emulator import LocalAws
from relay import protocol as p
from relay.aws_runtime import Relay
from relay.workflows import runs
from tests.conftest import Receiver
from tests.e2e.test_aws_stack import stack

__all__ = ["stack"]  # the fixture

pytestmark = pytest.mark.slow


async def test_scheduler_ends_a_run_whose_step_bodies_are_in_the_bucket(
    stack: LocalAws, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recovery pass (the scheduler's) ends a run a crash left unreported: runs.ended reads
    the run's step messages, whose bodies over the inline limit are in S3 under body/."""
    run_id, url = "wfr_policies", receiver.url("/workflow")
    headers = {
        "Authorization": f"Bearer {p.DEV_TOKEN}",
        "Content-Type": "application/json",
        "Upstash-Workflow-Init": "true",
        "Upstash-Workflow-RunId": run_id,
        "Upstash-Workflow-Url": url,
        "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
        "Upstash-Delay": "1h",  # still waiting when the run ends: cancelled
    }
    body = json.dumps({"payload": "x" * 20_000})
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.url}/v2/publish/{url}", data=body, headers=headers) as answer,
    ):
        assert answer.status == 201, await answer.text()
        message_id = (await answer.json())["messageId"]

    async def end_the_run(self: Relay) -> dict[str, Any]:
        run = await self.backend.get_run(run_id)
        assert run is not None
        await runs.ended(self.service, run)
        return {}

    monkeypatch.setattr(Relay, "tick", end_the_run)
    await stack.containers["SchedulerFunction"].invoke({})
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {p.DEV_TOKEN}"}) as session,
        session.get(f"{stack.url}/v2/messages/{message_id}") as answer,
    ):
        assert (await answer.json())["state"] == "CANCELED"
    assert stack.denied == []
