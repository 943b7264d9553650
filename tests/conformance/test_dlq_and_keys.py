"""DLQ retry, bulk cancel and signing-key rotation."""

from __future__ import annotations

import asyncio

from aiohttp import web

from relay.clock import ManualClock
from relay.server import EmbeddedRelay
from relay.service import ROTATION_SETTING
from relay.signing import SignatureError, SigningKeys, verify
from tests.conftest import Api, Receiver


async def test_dlq_retry_republishes_with_a_new_id(
    relay: EmbeddedRelay, api: Api, receiver: Receiver
) -> None:
    receiver.respond("/flaky", lambda r: web.Response(status=500), 200)
    old_id = await api.publish(receiver.url("/flaky"), "x", headers={"Upstash-Retries": "0"})
    await api.wait_state(old_id, "FAILED")
    status, dlq = await api.call("GET", "/v2/dlq")
    [entry] = dlq["messages"]
    status, answer = await api.call("POST", "/v2/dlq/retry", params={"dlqIds": entry["dlqId"]})
    assert status == 200
    [response] = answer["responses"]
    new_id = response["messageId"]
    assert new_id != old_id
    await api.wait_state(new_id, "DELIVERED")
    created = (await api.events(messageId=new_id, state="CREATED"))[0]
    assert created["sourceMessageId"] == old_id and created["dlqId"] == entry["dlqId"]
    assert (await api.call("GET", "/v2/dlq"))[1]["messages"] == []
    assert (await api.call("POST", "/v2/dlq/retry/nope"))[0] == 404


async def test_bulk_cancel_by_ids(clock: ManualClock, api: Api, receiver: Receiver) -> None:
    ids = [
        await api.publish(receiver.url("/c"), "x", headers={"Upstash-Delay": "1h"})
        for _ in range(3)
    ]
    status, answer = await api.call("DELETE", "/v2/messages", json={"messageIds": ids[:2]})
    assert status == 200 and answer == {"cancelled": 2}
    status, answer = await api.call(
        "DELETE", "/v2/messages", params=[("messageIds", ids[0]), ("messageIds", ids[2])]
    )
    assert answer == {"cancelled": 1}
    # neither ids nor filters: every pending message (none is left)
    assert (await api.call("DELETE", "/v2/messages")) == (200, {"cancelled": 0})


async def test_rotation_signs_with_the_new_current_key(
    relay: EmbeddedRelay, api: Api, receiver: Receiver
) -> None:
    status, before = await api.call("GET", "/v2/keys")
    status, after = await api.call("POST", "/v2/keys/rotate")
    assert status == 200
    assert after["current"] == before["next"] and after["next"] not in (
        before["current"],
        before["next"],
    )
    assert (await api.call("GET", "/v2/keys"))[1] == after
    await api.publish(receiver.url("/signed"), "x")
    [got] = await receiver.wait_for(1, "/signed")
    token = got.headers["Upstash-Signature"]
    verify(token, SigningKeys(after["current"], after["next"]), body=b"x", url=got.url)
    # a receiver still holding the old pair accepts it too (the old next is the new current)
    verify(token, SigningKeys(before["current"], before["next"]), body=b"x", url=got.url)
    try:
        verify(token, SigningKeys(before["current"], "sig_other"), body=b"x", url=got.url)
    except SignatureError:
        pass
    else:
        raise AssertionError("the old current key alone must not verify")
    assert await relay.backend.get_setting(ROTATION_SETTING) is not None


async def test_rotations_at_once_each_apply_to_the_one_before(api: Api) -> None:
    """Of rotations made at the same time none is lost: each answer's current is the next of
    the answer before it, and the pair in force is the last one's."""
    before = (await api.call("GET", "/v2/keys"))[1]
    answers = [
        a for _, a in await asyncio.gather(*(api.call("POST", "/v2/keys/rotate") for _ in range(3)))
    ]
    chain = [before]
    while len(chain) <= len(answers):
        [following] = [a for a in answers if a["current"] == chain[-1]["next"]]
        chain.append(following)
    assert (await api.call("GET", "/v2/keys"))[1] == chain[-1]
