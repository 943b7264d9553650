"""Cancelling a delayed message: it never arrives, and its logs say CANCELED."""

from __future__ import annotations

from relay.clock import ManualClock
from relay.server import EmbeddedRelay
from tests.conftest import Api, Receiver


async def test_cancel_delayed_message(
    relay: EmbeddedRelay, clock: ManualClock, api: Api, receiver: Receiver
) -> None:
    message_id = await api.publish(receiver.url("/never"), "x", headers={"Upstash-Delay": "10s"})
    kept_id = await api.publish(receiver.url("/kept"), "y", headers={"Upstash-Delay": "10s"})
    status, answer = await api.call("DELETE", f"/v2/messages/{message_id}")
    assert status == 200 and answer == {"cancelled": 1}
    clock.advance(10_000)
    relay.worker.notify()
    await receiver.wait_for(1, "/kept")
    assert receiver.at("/never") == []
    assert await api.states(message_id) == ["CREATED", "CANCELED"]
    status, message = await api.call("GET", f"/v2/messages/{message_id}")
    assert message["state"] == "CANCELED"
    await api.wait_state(kept_id, "DELIVERED")


async def test_cancel_twice_or_unknown(api: Api, receiver: Receiver) -> None:
    message_id = await api.publish(receiver.url("/x"), "x", headers={"Upstash-Delay": "1h"})
    assert (await api.call("DELETE", f"/v2/messages/{message_id}"))[0] == 200
    status, answer = await api.call("DELETE", f"/v2/messages/{message_id}")
    assert status == 400 and "CANCELED" in answer["error"]
    status, answer = await api.call("DELETE", "/v2/messages/msg_unknown")
    assert status == 404 and "not found" in answer["error"]
