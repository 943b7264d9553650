"""What the console reads, on both backends: the message list and its filters, counts by state,
and the outcome figures behind the throughput and latency charts."""

from __future__ import annotations

from aiohttp import web

from relay.clock import ManualClock
from relay.models import MessageQuery, MessageState
from relay.server import EmbeddedRelay
from tests.conftest import Api, Receiver


async def _publish_mix(api: Api, receiver: Receiver) -> dict[str, str]:
    """One delivered, one failed, one delayed (waiting), published in that order."""
    receiver.respond("/fail", lambda r: web.Response(status=500, text="boom"))
    ok = await api.publish(receiver.url("/ok"), "a", headers={"Upstash-Label": "green"})
    await api.wait_state(ok, "DELIVERED")
    failed = await api.publish(
        receiver.url("/fail"), "b", headers={"Upstash-Retries": "0", "Upstash-Label": "red"}
    )
    await api.wait_state(failed, "FAILED")
    later = await api.publish(receiver.url("/later"), "c", headers={"Upstash-Delay": "1h"})
    return {"ok": ok, "failed": failed, "later": later}


async def test_message_list_newest_first_with_filters(
    relay: EmbeddedRelay, api: Api, receiver: Receiver, clock: ManualClock
) -> None:
    ids = await _publish_mix(api, receiver)
    service = relay.service
    page = await service.list_messages(MessageQuery())
    assert [m.id for m in page.items] == [ids["later"], ids["failed"], ids["ok"]]
    assert page.cursor is None
    assert all(m.body == b"" for m in page.items)  # a list carries no bodies
    states = {m.id: m.state for m in page.items}
    assert states[ids["ok"]] == MessageState.DELIVERED
    assert states[ids["failed"]] == MessageState.FAILED
    assert states[ids["later"]] == MessageState.CREATED

    async def listed(**filters: object) -> list[str]:
        return [m.id for m in (await service.list_messages(MessageQuery(**filters))).items]  # type: ignore[arg-type]

    assert await listed(states=[MessageState.FAILED]) == [ids["failed"]]
    assert await listed(states=[MessageState.FAILED, MessageState.DELIVERED]) == [
        ids["failed"],
        ids["ok"],
    ]
    assert await listed(url_contains="/lat") == [ids["later"]]
    assert await listed(labels=["green"]) == [ids["ok"]]
    # (the manual clock gave all three the same creation time: their order is not defined here)
    assert sorted(await listed(message_ids=[ids["ok"], ids["later"]])) == sorted(
        [ids["later"], ids["ok"]]
    )
    assert await listed(message_ids=[ids["ok"]], states=[MessageState.FAILED]) == []
    now = clock.now_ms()
    assert await listed(from_time=now + 1) == []
    assert len(await listed(from_time=now - 1000, to_time=now)) == 3


async def test_message_list_pages_with_a_cursor(relay: EmbeddedRelay, api: Api) -> None:
    ids = [
        await api.publish("http://127.0.0.1:9/x", str(i), headers={"Upstash-Delay": "1h"})
        for i in range(5)
    ]
    service = relay.service
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        page = await service.list_messages(MessageQuery(count=2, cursor=cursor))
        seen += [m.id for m in page.items]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == list(reversed(ids)) and cursor is None


async def test_counts_and_outcomes(
    relay: EmbeddedRelay, api: Api, receiver: Receiver, clock: ManualClock
) -> None:
    before = clock.now_ms()
    await _publish_mix(api, receiver)
    service = relay.service
    counts = await service.count_messages()
    assert counts.get(MessageState.DELIVERED) == 1
    assert counts.get(MessageState.FAILED) == 1
    assert counts.get(MessageState.CREATED) == 1

    outcomes = await relay.backend.list_outcomes(before, 100)
    assert sorted(state for _, state, _ in outcomes) == [
        MessageState.DELIVERED,
        MessageState.FAILED,
    ]
    assert all(isinstance(duration, int) for _, _, duration in outcomes)
    assert await relay.backend.list_outcomes(clock.now_ms() + 1, 100) == []

    stats = await service.delivery_stats()
    assert len(stats.starts) == 60 and stats.starts[-1] <= clock.now_ms()
    assert stats.totals == {"delivered": 1, "retried": 0, "failed": 1}
    assert stats.latency_p50 is not None and stats.latency_p50 == stats.latency_p95
