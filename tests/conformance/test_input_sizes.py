"""Inputs whose size reaches a storage limit (on AWS: DynamoDB keys of at most 2,048/1,024 bytes,
items of at most 400 KB): ids too long to be stored name nothing (404, not a 500), and what would
not fit is refused with a 400 before anything is stored."""

from __future__ import annotations

from typing import Any

from relay.service import MAX_GROUP_BYTES
from relay.workflows.protocol import MAX_RUN_ID_BYTES
from tests.conftest import Api, Receiver

LONG = "a" * 3000  # over DynamoDB's 2,048-byte partition key


async def test_ids_too_long_for_a_key_are_not_found(api: Api) -> None:
    for method, path in [
        ("GET", f"/v2/messages/{LONG}"),
        ("DELETE", f"/v2/messages/{LONG}"),
        ("GET", f"/v2/dlq/{LONG}"),
        ("DELETE", f"/v2/dlq/{LONG}"),
        ("POST", f"/v2/dlq/retry/{LONG}"),
        ("DELETE", f"/v2/workflows/runs/{LONG}"),
    ]:
        status, answer = await api.call(method, path)
        assert status == 404 and "error" in answer, (method, path, status, answer)
    assert await api.events(messageId=LONG) == []
    status, answer = await api.call("DELETE", "/v2/messages", json={"messageIds": [LONG] * 2})
    assert (status, answer) == (200, {"cancelled": 0})
    status, answer = await api.call("DELETE", "/v2/dlq", json={"dlqIds": [LONG]})
    assert (status, answer) == (200, {"deleted": 0})


async def test_url_group_names_and_sizes_are_bounded(api: Api, receiver: Receiver) -> None:
    def endpoints(count: int, path_bytes: int) -> dict[str, Any]:
        url = receiver.url("/" + "p" * path_bytes)
        return {"endpoints": [{"url": f"{url}{i}"} for i in range(count)]}

    status, answer = await api.call(
        "POST", f"/v2/topics/{'g' * 129}/endpoints", json=endpoints(1, 1)
    )
    assert status == 400 and "url group name" in answer["error"]
    assert (await api.call("POST", f"/v2/topics/{'g' * 128}/endpoints", json=endpoints(1, 1)))[
        0
    ] == 200
    # One request over the limit, then one that would take the group over it: both refused.
    over = MAX_GROUP_BYTES // 1000 + 1
    status, answer = await api.call("POST", "/v2/topics/big/endpoints", json=endpoints(over, 1000))
    assert status == 400 and "url group 'big'" in answer["error"]
    assert (await api.call("GET", "/v2/topics/big"))[0] == 404
    half = endpoints(over // 2, 1000)
    assert (await api.call("POST", "/v2/topics/big/endpoints", json=half))[0] == 200
    more = {"endpoints": [{"url": e["url"] + "x"} for e in half["endpoints"]]}
    assert (await api.call("POST", "/v2/topics/big/endpoints", json=more))[0] == 400
    status, group = await api.call("GET", "/v2/topics/big")
    assert status == 200 and len(group["endpoints"]) == over // 2


async def test_workflow_run_ids_are_bounded(api: Api, receiver: Receiver) -> None:
    for size, expected in [(MAX_RUN_ID_BYTES + 1, 400), (3000, 400)]:
        status, answer = await api.call(
            "POST",
            "/v2/publish/" + receiver.url("/wf"),
            data="x",
            headers={"Upstash-Workflow-RunId": "r" * size, "Upstash-Workflow-Init": "true"},
        )
        assert status == expected and "run id" in answer["error"], answer
