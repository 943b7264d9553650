"""Cron schedules: create, get, list, replace, delete, pause and resume; fires at the cron time
(in the schedule's CRON_TZ zone) through the publish path, once after downtime and once under
concurrent tickers. The injected clock says when it is; ``scheduling.tick`` is the ticker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from relay import scheduling
from relay.clock import ManualClock
from relay.server import EmbeddedRelay
from tests.conftest import Api, Receiver

MINUTE = 60_000


@pytest.fixture(autouse=True)
def explicit_ticks(request: pytest.FixtureRequest) -> None:
    """The tests tick themselves: the relay's own ticker would race them for each fire (it would
    fire once all the same; the counts the tests assert would vary)."""
    if "relay" in request.fixturenames:
        request.getfixturevalue("relay").ticker.stop()


def at_minute_start(clock: ManualClock, seconds_before: float = 0) -> int:
    """Move the clock to ``seconds_before`` seconds before a whole minute; returns that minute."""
    now = clock.now_ms()
    boundary = now - now % MINUTE + 2 * MINUTE
    clock.advance(boundary - int(seconds_before * 1000) - now)
    return boundary


def set_time(clock: ManualClock, when: datetime) -> None:
    clock.advance(int(when.timestamp() * 1000) - clock.now_ms())


async def create(
    api: Api, destination: str, cron: str, body: str = "", **headers: str
) -> tuple[int, Any]:
    return await api.call(
        "POST",
        "/v2/schedules/" + destination,
        data=body or None,
        headers={"Upstash-Cron": cron, **headers},
    )


async def test_create_get_list_replace_delete(api: Api, receiver: Receiver) -> None:
    status, answer = await create(
        api,
        receiver.url("/s?x=1"),
        "*/5 * * * *",
        '{"n":1}',
        **{
            "Content-Type": "application/json",
            "Upstash-Retries": "2",
            "Upstash-Delay": "10s",
            "Upstash-Timeout": "30s",
            "Upstash-Method": "PUT",
            "Upstash-Forward-X-Trace": "t-1",
            "Upstash-Callback": receiver.url("/cb"),
            "Upstash-Callback-Forward-X-Cb": "c",
            "Upstash-Retry-Delay": "1000 * (1 + retried)",
            "Upstash-Label": "nightly",
            "Upstash-Queue-Name": "jobs",
        },
    )
    assert status == 200, answer
    schedule_id = answer["scheduleId"]
    assert schedule_id.startswith("scd_")
    status, schedule = await api.call("GET", f"/v2/schedules/{schedule_id}")
    assert status == 200
    assert schedule["scheduleId"] == schedule_id
    assert schedule["destination"] == receiver.url("/s?x=1")
    assert schedule["cron"] == "*/5 * * * *"
    assert schedule["method"] == "PUT" and schedule["retries"] == 2
    assert schedule["delay"] == 10 and schedule["timeout"] == 30
    assert schedule["body"] == '{"n":1}'
    assert schedule["header"] == {"Content-Type": ["application/json"], "X-Trace": ["t-1"]}
    assert schedule["callback"] == receiver.url("/cb")
    assert schedule["callbackHeader"] == {"X-Cb": ["c"]}
    assert schedule["retryDelayExpression"] == "1000 * (1 + retried)"
    assert schedule["label"] == "nightly" and schedule["labels"] == ["nightly"]
    assert schedule["queueName"] == "jobs"
    assert schedule["isPaused"] is False
    assert schedule["callerIP"] == schedule["callerIp"] == "127.0.0.1"
    assert schedule["nextScheduleTime"] > schedule["createdAt"]
    assert schedule["nextScheduleTime"] % (5 * MINUTE) == 0
    assert "lastScheduleTime" not in schedule and "Authorization" not in str(schedule)

    status, answer = await create(
        api, "my-group-name-is-not-checked-here", "0 * * * *", **{"Upstash-Schedule-Id": "x"}
    )
    assert status == 404, "a URL-group destination must exist, as for publish"
    status, answer = await create(
        api, receiver.url("/t"), "0 * * * *", "b", **{"Upstash-Schedule-Id": schedule_id}
    )
    assert status == 200 and answer == {"scheduleId": schedule_id}
    status, schedules = await api.call("GET", "/v2/schedules")
    assert [s["scheduleId"] for s in schedules] == [schedule_id]
    [replaced] = schedules
    assert replaced["cron"] == "0 * * * *" and replaced["destination"] == receiver.url("/t")
    assert replaced["retries"] == 3 and "queueName" not in replaced, "settings are replaced"

    assert (await api.call("DELETE", f"/v2/schedules/{schedule_id}"))[0] == 200
    assert (await api.call("DELETE", f"/v2/schedules/{schedule_id}"))[0] == 404
    assert (await api.call("GET", f"/v2/schedules/{schedule_id}"))[0] == 404
    assert (await api.call("GET", "/v2/schedules"))[1] == []


async def test_fires_at_its_time_with_the_schedule_id(
    relay: EmbeddedRelay, api: Api, receiver: Receiver, clock: ManualClock
) -> None:
    boundary = at_minute_start(clock, seconds_before=20)
    _status, answer = await create(
        api,
        receiver.url("/tick"),
        "* * * * *",
        "hello",
        **{"Upstash-Schedule-Id": "every.minute_1", "Upstash-Forward-X-A": "1"},
    )
    schedule_id = answer["scheduleId"]
    assert schedule_id == "every.minute_1"
    assert (await scheduling.tick(relay.service)).fired == 0
    clock.advance(19_999)
    assert (await scheduling.tick(relay.service)).fired == 0, "not before its time"
    clock.advance(1)
    result = await scheduling.tick(relay.service)
    assert result.fired == 1 and result.next_fire == boundary + MINUTE
    [delivery] = await receiver.wait_for(1, "/tick")
    assert delivery.headers["Upstash-Schedule-Id"] == schedule_id
    assert delivery.headers["X-A"] == "1" and delivery.body == b"hello"
    [created] = await api.events(scheduleId=schedule_id, state="CREATED")
    message_id = created["messageId"]
    assert delivery.headers["Upstash-Message-Id"] == message_id
    _, message = await api.call("GET", f"/v2/messages/{message_id}")
    assert message["scheduleId"] == schedule_id
    await api.wait_state(message_id, "DELIVERED")
    _, schedule = await api.call("GET", f"/v2/schedules/{schedule_id}")
    assert schedule["lastScheduleTime"] == boundary
    assert schedule["nextScheduleTime"] == boundary + MINUTE
    assert schedule["lastScheduleStates"] == {message_id: "SUCCESS"}

    clock.advance(MINUTE)
    assert (await scheduling.tick(relay.service)).fired == 1
    await receiver.wait_for(2, "/tick")


async def test_missed_fires_collapse_into_one(
    relay: EmbeddedRelay, api: Api, receiver: Receiver, clock: ManualClock
) -> None:
    at_minute_start(clock, seconds_before=30)
    _, answer = await create(api, receiver.url("/m"), "* * * * *")
    clock.advance(10 * MINUTE)  # the relay was down for ten fire times
    for _ in range(3):
        await scheduling.tick(relay.service)
    await receiver.wait_for(1, "/m")
    assert len(await api.events(scheduleId=answer["scheduleId"], state="CREATED")) == 1
    _, schedule = await api.call("GET", f"/v2/schedules/{answer['scheduleId']}")
    assert schedule["lastScheduleTime"] == clock.now_ms()
    assert clock.now_ms() < schedule["nextScheduleTime"] <= clock.now_ms() + MINUTE


async def test_concurrent_tickers_fire_once(
    relay: EmbeddedRelay, api: Api, receiver: Receiver, clock: ManualClock
) -> None:
    await api.call(
        "POST", "/v2/topics/team/endpoints", json={"endpoints": [{"url": receiver.url("/a")}]}
    )
    at_minute_start(clock, seconds_before=5)
    _, answer = await create(api, receiver.url("/c"), "* * * * *")
    _, to_group = await create(api, "team", "* * * * *")
    clock.advance(5_000)
    results = await asyncio.gather(*(scheduling.tick(relay.service) for _ in range(4)))
    assert sum(r.fired for r in results) >= 2
    await receiver.wait_for(1, "/c")
    [group_delivery] = await receiver.wait_for(1, "/a")
    assert group_delivery.headers["Upstash-Topic-Name"] == "team"
    assert group_delivery.headers["Upstash-Schedule-Id"] == to_group["scheduleId"]
    for schedule_id in (answer["scheduleId"], to_group["scheduleId"]):
        assert len(await api.events(scheduleId=schedule_id, state="CREATED")) == 1
    await asyncio.sleep(0.2)
    assert len(receiver.requests) == 2


async def test_a_fire_repeated_after_a_crash_publishes_once(
    relay: EmbeddedRelay,
    api: Api,
    receiver: Receiver,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    at_minute_start(clock, seconds_before=1)
    _, answer = await create(api, receiver.url("/crash"), "* * * * *")
    backend = relay.service.backend
    put_record = backend.put_record
    crashes = [RuntimeError("the ticker died after storing the messages")]

    async def crash_once(kind: str, key: str, value: dict[str, Any]) -> None:
        if kind == scheduling.SCHEDULE_RUN and crashes:
            raise crashes.pop()
        await put_record(kind, key, value)

    monkeypatch.setattr(backend, "put_record", crash_once)
    clock.advance(1_000)
    assert (await scheduling.tick(relay.service)).fired == 0, "the fire was not recorded"
    clock.advance(5_000)  # the next tick, still before the next fire time
    assert (await scheduling.tick(relay.service)).fired == 1
    [created] = await api.events(scheduleId=answer["scheduleId"], state="CREATED")
    _, schedule = await api.call("GET", f"/v2/schedules/{answer['scheduleId']}")
    assert list(schedule["lastScheduleStates"]) == [created["messageId"]]
    await receiver.wait_for(1, "/crash")
    await asyncio.sleep(0.2)
    assert len(receiver.requests) == 1


async def test_a_schedule_with_a_queue_enqueues_each_fire(
    relay: EmbeddedRelay, api: Api, receiver: Receiver, clock: ManualClock
) -> None:
    at_minute_start(clock, seconds_before=1)
    _, answer = await create(api, receiver.url("/q"), "* * * * *", **{"Upstash-Queue-Name": "jobs"})
    clock.advance(1_000)
    assert (await scheduling.tick(relay.service)).fired == 1
    [delivery] = await receiver.wait_for(1, "/q")
    _, message = await api.call("GET", f"/v2/messages/{delivery.headers['Upstash-Message-Id']}")
    assert message["queueName"] == "jobs" and message["scheduleId"] == answer["scheduleId"]
    status, queue = await api.call("GET", "/v2/queues/jobs")
    assert status == 200 and queue["name"] == "jobs", "made on first use, as by an enqueue"
    status, answer = await create(
        api, receiver.url("/q"), "* * * * *", **{"Upstash-Queue-Name": "bad name"}
    )
    assert status == 400


async def test_cron_tz_fires_in_its_zone(
    relay: EmbeddedRelay, api: Api, receiver: Receiver, clock: ManualClock
) -> None:
    set_time(clock, datetime(2031, 3, 5, 12, 0, tzinfo=UTC))
    _, answer = await create(api, receiver.url("/tz"), "CRON_TZ=Asia/Tokyo 0 9 * * *")
    _, schedule = await api.call("GET", f"/v2/schedules/{answer['scheduleId']}")
    assert schedule["cron"] == "CRON_TZ=Asia/Tokyo 0 9 * * *"
    # 09:00 in Tokyo (UTC+9) is midnight UTC.
    midnight = int(datetime(2031, 3, 6, 0, 0, tzinfo=UTC).timestamp() * 1000)
    assert schedule["nextScheduleTime"] == midnight
    clock.advance(midnight - clock.now_ms() - 1)
    assert (await scheduling.tick(relay.service)).fired == 0
    clock.advance(1)
    assert (await scheduling.tick(relay.service)).fired == 1
    await receiver.wait_for(1, "/tz")


async def test_pause_and_resume(
    relay: EmbeddedRelay, api: Api, receiver: Receiver, clock: ManualClock
) -> None:
    at_minute_start(clock, seconds_before=10)
    _, answer = await create(api, receiver.url("/p"), "* * * * *")
    schedule_id = answer["scheduleId"]
    # Both SDKs pause with PATCH; QStash's OpenAPI says POST.
    assert (await api.call("PATCH", f"/v2/schedules/{schedule_id}/pause"))[0] == 200
    assert (await api.call("POST", f"/v2/schedules/{schedule_id}/pause"))[0] == 200
    _, schedule = await api.call("GET", f"/v2/schedules/{schedule_id}")
    assert schedule["isPaused"] is True and "nextScheduleTime" not in schedule
    clock.advance(MINUTE)
    assert (await scheduling.tick(relay.service)).fired == 0
    assert (await api.call("POST", f"/v2/schedules/{schedule_id}/resume"))[0] == 200
    assert (await api.call("PATCH", f"/v2/schedules/{schedule_id}/resume"))[0] == 200
    _, schedule = await api.call("GET", f"/v2/schedules/{schedule_id}")
    assert schedule["isPaused"] is False
    assert (await scheduling.tick(relay.service)).fired == 0, "fires missed while paused are not"
    clock.advance(schedule["nextScheduleTime"] - clock.now_ms())
    assert (await scheduling.tick(relay.service)).fired == 1
    await receiver.wait_for(1, "/p")
    assert (await api.call("PATCH", "/v2/schedules/unknown/pause"))[0] == 404


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 400),
        ({"Upstash-Cron": ""}, 400),
        ({"Upstash-Cron": "* * * *"}, 400),
        ({"Upstash-Cron": "*/10 * * * * *"}, 400),  # six fields (seconds): not QStash's
        ({"Upstash-Cron": "61 * * * *"}, 400),
        ({"Upstash-Cron": "0 0 31 2 *"}, 400),  # never fires
        ({"Upstash-Cron": "CRON_TZ=Nowhere/Zone * * * * *"}, 400),
        ({"Upstash-Cron": "* * * * *", "Upstash-Schedule-Id": "has space"}, 400),
        ({"Upstash-Cron": "* * * * *", "Upstash-Retries": "many"}, 400),
        ({"Upstash-Cron": "* * * * *", "Upstash-Delay": "soon"}, 400),
        ({"Upstash-Cron": "* * * * *", "Upstash-Not-Before": "1700000000"}, 400),
        ({"Upstash-Cron": "* * * * *", "Upstash-Callback": "ftp://x"}, 400),
        (
            {
                "Upstash-Cron": "* * * * *",
                "Upstash-Callback": "https://example.com/cb",
                "Upstash-Callback-Retries": "x",
            },
            400,
        ),
    ],
)
async def test_bad_schedules_are_refused_and_nothing_is_stored(
    api: Api, receiver: Receiver, headers: dict[str, str], status: int
) -> None:
    got, answer = await api.call("POST", "/v2/schedules/" + receiver.url("/x"), headers=headers)
    assert got == status and answer["error"], answer
    assert (await api.call("GET", "/v2/schedules"))[1] == []


async def test_bad_destination_is_refused(api: Api) -> None:
    status, answer = await create(api, "ftp://example.com/x", "* * * * *")
    assert status == 400
    status, answer = await create(api, "no-such-group", "* * * * *")
    assert status == 404 and "no-such-group" in answer["error"]
    assert (await api.call("GET", "/v2/schedules"))[1] == []


async def test_a_fire_whose_group_is_gone_records_the_error(
    relay: EmbeddedRelay, api: Api, receiver: Receiver, clock: ManualClock
) -> None:
    await api.call(
        "POST", "/v2/topics/g/endpoints", json={"endpoints": [{"url": receiver.url("/g")}]}
    )
    at_minute_start(clock, seconds_before=1)
    _, answer = await create(api, "g", "* * * * *")
    await api.call("DELETE", "/v2/topics/g")
    clock.advance(1_000)
    assert (await scheduling.tick(relay.service)).fired == 1
    _, schedule = await api.call("GET", f"/v2/schedules/{answer['scheduleId']}")
    assert "not found" in schedule["error"] and schedule["lastScheduleStates"] == {}
    assert schedule["nextScheduleTime"] > clock.now_ms()


async def test_the_aws_scheduler_lambda_fires_schedules(
    relay: EmbeddedRelay, api: Api, receiver: Receiver, clock: ManualClock
) -> None:
    from relay.backends.aws import AwsBackend

    if not isinstance(relay.backend, AwsBackend):
        pytest.skip("the scheduler Lambda runs on the AWS backend")
    from relay.aws_runtime import Relay

    at_minute_start(clock, seconds_before=1)
    await create(api, receiver.url("/lambda"), "* * * * *")
    clock.advance(1_000)
    runtime = Relay(relay.backend, relay.service, session=None, boto=None)  # type: ignore[arg-type]
    assert (await runtime.tick())["fired"] == 1
    [delivery] = await receiver.wait_for(1, "/lambda")
    assert delivery.headers["Upstash-Schedule-Id"].startswith("scd_")
