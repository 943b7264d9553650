"""relay.scheduling.Cron: five fields, CRON_TZ zones, and the DST behaviour cronsim documents
(Debian cron's): a fixed-time job in the skipped hour fires right after the change, one in the
repeated hour fires once; jobs that run at least hourly keep their wall-clock rhythm."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from relay.protocol import BadRequest
from relay.scheduling import Cron

NEW_YORK = ZoneInfo("America/New_York")


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def local(fire: int | None) -> str:
    assert fire is not None
    return datetime.fromtimestamp(fire / 1000, NEW_YORK).isoformat()


def test_next_fire_is_strictly_after() -> None:
    cron = Cron.parse("*/15 * * * *")
    start = ms(datetime(2031, 1, 1, 10, 0, tzinfo=UTC))
    assert cron.next_after(start) == start + 15 * 60_000
    assert cron.next_after(start - 1) == start
    assert cron.zone is None


def test_cron_tz_prefix_and_spacing_are_kept() -> None:
    cron = Cron.parse("  CRON_TZ=Asia/Tokyo   0 9 * * MON ")
    assert cron.expression == "CRON_TZ=Asia/Tokyo 0 9 * * MON"
    assert cron.zone == ZoneInfo("Asia/Tokyo")
    # Monday 2031-01-06, 09:00 in Tokyo = 00:00 UTC.
    assert cron.next_after(ms(datetime(2031, 1, 1, tzinfo=UTC))) == ms(
        datetime(2031, 1, 6, 0, 0, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "five fields"),
        ("0 */2 * * * *", "five fields"),
        ("60 * * * *", "Bad minute"),
        ("* 24 * * *", "Bad hour"),
        ("* * * 13 *", "Bad month"),
        ("CRON_TZ=Mars/Base * * * * *", "unknown time zone"),
        ("CRON_TZ=../etc/passwd * * * * *", "unknown time zone"),
        ("CRON_TZ=UTC", "five fields"),
    ],
)
def test_invalid_expressions_say_why(expression: str, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        Cron.parse(expression)
    assert message in caught.value.message


def test_spring_forward_runs_a_skipped_fixed_time_job_right_after_the_change() -> None:
    # 2031-03-09: New York's clocks jump from 02:00 EST to 03:00 EDT; 02:30 does not exist.
    cron = Cron.parse("CRON_TZ=America/New_York 30 2 * * *")
    fire = cron.next_after(ms(datetime(2031, 3, 8, 12, tzinfo=UTC)))
    assert local(fire) == "2031-03-09T03:00:00-04:00"
    assert local(cron.next_after(fire)) == "2031-03-10T02:30:00-04:00"  # type: ignore[arg-type]


def test_fall_back_runs_a_fixed_time_job_in_the_repeated_hour_once() -> None:
    # 2031-11-02: 01:00-02:00 happens twice (EDT, then EST).
    cron = Cron.parse("CRON_TZ=America/New_York 30 1 * * *")
    fire = cron.next_after(ms(datetime(2031, 11, 1, 12, tzinfo=UTC)))
    assert local(fire) == "2031-11-02T01:30:00-04:00"
    assert local(cron.next_after(fire)) == "2031-11-03T01:30:00-05:00"  # type: ignore[arg-type]
    # Anchored inside the second 01:xx, the next fire is still after it, the next day.
    inside = ms(datetime(2031, 11, 2, 6, 10, tzinfo=UTC))  # 01:10 EST
    assert local(cron.next_after(inside)) == "2031-11-03T01:30:00-05:00"


def test_hourly_jobs_run_in_both_repeated_hours() -> None:
    cron = Cron.parse("CRON_TZ=America/New_York 30 * * * *")
    fire = cron.next_after(ms(datetime(2031, 11, 2, 4, 40, tzinfo=UTC)))
    assert local(fire) == "2031-11-02T01:30:00-04:00"
    assert local(cron.next_after(fire)) == "2031-11-02T01:30:00-05:00"  # type: ignore[arg-type]
