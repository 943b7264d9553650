"""The official `qstash` SDK's URL groups, DLQ and signing keys on template.yaml's stack run
locally (infra/): lambda/api.py answers, lambda/deliver.py delivers to a real receiver, and
`qstash.Receiver` judges the signatures. The same scenarios run against `relay dev` in
tests/e2e/test_qstash_sdk.py."""

from __future__ import annotations

import pytest
from qstash import AsyncQStash

from infra.emulator import LocalAws
from relay import protocol as p
from tests.conftest import Receiver
from tests.e2e import sdk_scenarios
from tests.e2e.test_aws_stack import stack

__all__ = ["stack"]  # the fixture
pytestmark = pytest.mark.slow


def _client(stack: LocalAws) -> AsyncQStash:
    return AsyncQStash(p.DEV_TOKEN, base_url=stack.url)


async def test_official_sdk_url_group(stack: LocalAws, receiver: Receiver) -> None:
    await sdk_scenarios.url_group_fan_out(_client(stack), receiver)


async def test_official_sdk_dlq_list_get_retry_delete(stack: LocalAws, receiver: Receiver) -> None:
    await sdk_scenarios.dlq_get_retry_delete(
        _client(stack), receiver, base_url=stack.url, token=p.DEV_TOKEN
    )


async def test_rotation_reaches_a_running_delivery_container_and_survives_cold_starts(
    stack: LocalAws, receiver: Receiver
) -> None:
    client = _client(stack)
    deliver = stack.containers["DeliverFunction"]
    # The delivery container signed a message before the rotation (so it had started with the
    # secret's keys); the API container rotated; the next delivery is signed with the new key.
    before, after = await sdk_scenarios.rotation_then_delivery(client, receiver)
    assert deliver.invocations.results, "the delivery container did not run before the rotation"
    assert before.current == p.DEV_CURRENT_SIGNING_KEY  # the secret's keys, rotated
    for container in stack.containers.values():
        await container.cold_start()
    assert await client.signing_key.get() == after
    await sdk_scenarios.signed_with(
        client, receiver, after, retired=before.current, path="/after-cold-start"
    )
    assert stack.token_and_keys()[1:] == (before.current, before.next)  # the secret is unchanged
