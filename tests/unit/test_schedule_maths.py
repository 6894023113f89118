"""Schedule maths: cron, interval and RRULE occurrences as UTC instants, across daylight-saving
changes, month ends and leap days, and the validation errors a user sees.

Expected instants are worked out by hand from the tz rules used here:
- Europe/Berlin: CET = UTC+1, CEST = UTC+2; 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z),
  2026-10-25 03:00 CEST -> 02:00 CET (01:00Z).
- America/New_York: EST = UTC-5, EDT = UTC-4; 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z),
  2026-11-01 02:00 EDT -> 01:00 EST (06:00Z).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from skylane.errors import InvalidInput
from skylane.schedules import (
    DEFAULT_INTERVAL_ANCHOR,
    MIN_INTERVAL_SECONDS,
    CatchUp,
    CronTimetable,
    IntervalTimetable,
    RRuleTimetable,
    ScheduleSpec,
    Timetable,
    check_timezone,
    default_anchor,
    parse_schedule,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def z(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0):
    """A UTC instant."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local_day(zone: ZoneInfo, year: int, month: int, day: int) -> tuple[datetime, datetime]:
    """(start, end) for `between` covering one local calendar day: start just before local
    midnight (start is exclusive), end just before the next local midnight."""
    start = datetime(year, month, day, tzinfo=zone) - timedelta(microseconds=1)
    end = datetime(year, month, day, tzinfo=zone) + timedelta(days=1) - timedelta(microseconds=1)
    return start, end


def cron(expression: str, zone: str = "UTC") -> Timetable:
    return parse_schedule(ScheduleSpec(cron=expression, timezone=zone))


def every(seconds: int, zone: str = "UTC", anchor: datetime | None = None) -> Timetable:
    return parse_schedule(ScheduleSpec(interval_seconds=seconds, timezone=zone, anchor=anchor))


def rule(text: str, zone: str = "UTC", anchor: datetime | None = None) -> Timetable:
    return parse_schedule(ScheduleSpec(rrule=text, timezone=zone, anchor=anchor))


def assert_consistent(timetable: Timetable, start: datetime, end: datetime) -> list[datetime]:
    """One uninterrupted iteration over (start, end] against restarts from every occurrence
    (given in UTC and as local time, which carries the fold of a repeated hour), one second
    either side of it, and against latest_at_or_before."""
    sequence = timetable.between(start, end, limit=1000)
    assert sequence == sorted(set(sequence))
    assert all(value.tzinfo is UTC for value in sequence)
    assert timetable.after(start, limit=len(sequence)) == sequence
    for index, value in enumerate(sequence):
        following = sequence[index + 1 : index + 4]
        for restart in (value, value.astimezone(timetable.zone)):
            assert timetable.after(restart, limit=len(following)) == following, restart
        assert timetable.after(value - timedelta(seconds=1), limit=1) == [value]
        assert timetable.latest_at_or_before(value) == value
        assert timetable.latest_at_or_before(value.astimezone(timetable.zone)) == value
        if index:
            previous = sequence[index - 1]
            assert timetable.latest_at_or_before(value - timedelta(seconds=1)) == previous
    return sequence


# --- cron across daylight-saving changes ------------------------------------------------------


def test_cron_time_in_the_spring_gap_fires_once_right_after_it_berlin() -> None:
    timetable = cron("30 2 * * *", "Europe/Berlin")
    assert timetable.after(z(2026, 3, 27), limit=4) == [
        z(2026, 3, 27, 1, 30),  # 02:30 CET
        z(2026, 3, 28, 1, 30),
        z(2026, 3, 29, 1, 0),  # 02:30 does not exist: 03:00 CEST
        z(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]
    assert timetable.between(*local_day(BERLIN, 2026, 3, 29), limit=10) == [z(2026, 3, 29, 1, 0)]


def test_cron_time_in_the_spring_gap_fires_once_right_after_it_new_york() -> None:
    timetable = cron("30 2 * * *", "America/New_York")
    assert timetable.between(*local_day(NEW_YORK, 2026, 3, 8), limit=10) == [z(2026, 3, 8, 7, 0)]
    assert timetable.after(z(2026, 3, 8, 7, 0), limit=1) == [z(2026, 3, 9, 6, 30)]  # 02:30 EDT


def test_cron_repeated_time_fires_once_at_its_first_occurrence() -> None:
    new_york = cron("30 1 * * *", "America/New_York")
    # 01:30 EDT = 05:30Z; 01:30 EST (06:30Z) does not fire.
    assert new_york.between(*local_day(NEW_YORK, 2026, 11, 1), limit=10) == [z(2026, 11, 1, 5, 30)]
    assert new_york.after(z(2026, 10, 31, 12), limit=2) == [
        z(2026, 11, 1, 5, 30),
        z(2026, 11, 2, 6, 30),  # 01:30 EST
    ]
    berlin = cron("30 2 * * *", "Europe/Berlin")
    # 02:30 CEST = 00:30Z; 02:30 CET (01:30Z) does not fire.
    assert berlin.between(*local_day(BERLIN, 2026, 10, 25), limit=10) == [z(2026, 10, 25, 0, 30)]
    # Restarting from inside the second pass of the hour does not fire it again.
    assert berlin.after(z(2026, 10, 25, 1, 15), limit=1) == [z(2026, 10, 26, 1, 30)]
    assert berlin.latest_at_or_before(z(2026, 10, 25, 1, 45)) == z(2026, 10, 25, 0, 30)


@pytest.mark.parametrize(
    ("zone", "spring", "autumn"),
    [
        ("Europe/Berlin", (2026, 3, 29), (2026, 10, 25)),
        ("America/New_York", (2026, 3, 8), (2026, 11, 1)),
    ],
)
def test_hourly_cron_fires_23_and_25_times_on_change_days(zone, spring, autumn) -> None:
    timetable = cron("0 * * * *", zone)
    short = timetable.between(*local_day(ZoneInfo(zone), *spring), limit=100)
    long = timetable.between(*local_day(ZoneInfo(zone), *autumn), limit=100)
    assert len(short) == 23
    assert len(long) == 25
    # Every real hour: one hour apart in UTC throughout, the repeated hour included.
    assert all(b - a == timedelta(hours=1) for a, b in zip(long, long[1:], strict=False))
    assert all(b - a == timedelta(hours=1) for a, b in zip(short, short[1:], strict=False))


def test_half_hourly_cron_fires_in_both_passes_of_the_repeated_hour() -> None:
    new_york = cron("*/30 * * * *", "America/New_York")
    assert new_york.after(z(2026, 11, 1, 4, 45), limit=7) == [
        z(2026, 11, 1, 5, 0),  # 01:00 EDT
        z(2026, 11, 1, 5, 30),  # 01:30 EDT
        z(2026, 11, 1, 6, 0),  # 01:00 EST
        z(2026, 11, 1, 6, 30),  # 01:30 EST
        z(2026, 11, 1, 7, 0),  # 02:00 EST
        z(2026, 11, 1, 7, 30),
        z(2026, 11, 1, 8, 0),
    ]
    berlin = cron("*/30 * * * *", "Europe/Berlin")
    assert berlin.after(z(2026, 10, 24, 23, 45), limit=5) == [
        z(2026, 10, 25, 0, 0),  # 02:00 CEST
        z(2026, 10, 25, 0, 30),  # 02:30 CEST
        z(2026, 10, 25, 1, 0),  # 02:00 CET
        z(2026, 10, 25, 1, 30),  # 02:30 CET
        z(2026, 10, 25, 2, 0),  # 03:00 CET
    ]
    # Spring: 01:30 CET, then straight to 03:00 CEST; 02:00 and 02:30 do not exist.
    assert berlin.after(z(2026, 3, 29, 0, 15), limit=3) == [
        z(2026, 3, 29, 0, 30),
        z(2026, 3, 29, 1, 0),
        z(2026, 3, 29, 1, 30),
    ]


@pytest.mark.parametrize(
    "expression",
    [
        "30 2 * * *",
        "30 1 * * *",
        "15,45 1 * * *",
        "0,30 2,3 * * *",
        "0 * * * *",
        "*/30 * * * *",
        "*/20 1 * * *",
        "0 */2 * * *",
    ],
)
@pytest.mark.parametrize(
    ("zone", "days"),
    [
        ("Europe/Berlin", [(2026, 3, 29), (2026, 10, 25)]),
        ("America/New_York", [(2026, 3, 8), (2026, 11, 1)]),
    ],
)
def test_cron_restarting_from_any_occurrence_continues_the_same_sequence(
    expression, zone, days
) -> None:
    timetable = cron(expression, zone)
    for day in days:
        start = datetime(*day, tzinfo=ZoneInfo(zone)) - timedelta(hours=6)
        sequence = assert_consistent(timetable, start, start + timedelta(hours=30))
        assert sequence
        assert all(value.microsecond == 0 and value.second == 0 for value in sequence)


def test_cron_wall_clock_expression_in_repeated_hour_from_second_pass() -> None:
    # 15,45 1 * * * in New York on 2026-11-01 fires at 01:15 and 01:45 EDT only. From 01:20 EST
    # (06:20Z, after both) the next run is the next day; the latest is 01:45 EDT, which a
    # plain reverse iteration from the wall time 01:20 would miss.
    timetable = cron("15,45 1 * * *", "America/New_York")
    assert timetable.between(*local_day(NEW_YORK, 2026, 11, 1), limit=10) == [
        z(2026, 11, 1, 5, 15),
        z(2026, 11, 1, 5, 45),
    ]
    second_pass = datetime(2026, 11, 1, 1, 20, tzinfo=NEW_YORK, fold=1)
    # (An aware time in a repeated hour never compares equal across zones: PEP 495.)
    assert second_pass.astimezone(UTC) == z(2026, 11, 1, 6, 20)
    assert timetable.after(second_pass, limit=1) == [z(2026, 11, 2, 6, 15)]
    assert timetable.latest_at_or_before(second_pass) == z(2026, 11, 1, 5, 45)


# --- cron month ends and leap days ------------------------------------------------------------


def test_cron_day_31_skips_30_day_months() -> None:
    assert cron("0 0 31 * *").after(z(2026, 1, 1), limit=7) == [
        z(2026, 1, 31),
        z(2026, 3, 31),
        z(2026, 5, 31),
        z(2026, 7, 31),
        z(2026, 8, 31),
        z(2026, 10, 31),
        z(2026, 12, 31),
    ]


def test_cron_last_day_of_month() -> None:
    assert cron("0 0 L * *").after(z(2028, 1, 15), limit=4) == [
        z(2028, 1, 31),
        z(2028, 2, 29),
        z(2028, 3, 31),
        z(2028, 4, 30),
    ]


def test_cron_leap_day_only_in_leap_years() -> None:
    timetable = cron("0 12 29 2 *")
    assert timetable.after(z(2026, 1, 1), limit=2) == [z(2028, 2, 29, 12), z(2032, 2, 29, 12)]
    assert timetable.latest_at_or_before(z(2031, 6, 1)) == z(2028, 2, 29, 12)
    assert timetable.between(z(2026, 1, 1), z(2028, 2, 28), limit=5) == []


def test_cron_macros_are_translated() -> None:
    assert cron("@daily", "Europe/Berlin").after(z(2026, 7, 1, 12), limit=1) == [
        z(2026, 7, 1, 22)  # midnight CEST
    ]
    assert cron("@weekly").after(z(2026, 10, 26), limit=1) == [z(2026, 11, 1)]  # Sunday
    assert cron("@yearly").after(z(2026, 5, 5), limit=1) == [z(2027, 1, 1)]
    assert cron("@hourly").after(z(2026, 5, 5, 10, 30), limit=1) == [z(2026, 5, 5, 11)]


def test_cron_inputs_in_any_zone_and_with_microseconds() -> None:
    timetable = cron("30 2 * * *", "Europe/Berlin")
    tokyo = datetime(2026, 6, 1, 9, 30, tzinfo=ZoneInfo("Asia/Tokyo"))  # = 00:30Z
    assert timetable.after(tokyo, limit=1) == [z(2026, 6, 2, 0, 30)]
    assert timetable.after(z(2026, 6, 1, 0, 29, 59) + timedelta(microseconds=500), limit=1) == [
        z(2026, 6, 1, 0, 30)
    ]
    assert timetable.latest_at_or_before(z(2026, 6, 1, 0, 30) + timedelta(microseconds=1)) == z(
        2026, 6, 1, 0, 30
    )
    assert timetable.latest_at_or_before(z(2026, 6, 1, 0, 29, 59)) == z(2026, 5, 31, 0, 30)


# --- interval -----------------------------------------------------------------------------------


def test_interval_is_aligned_to_its_anchor_before_and_after_it() -> None:
    timetable = every(5400, anchor=z(2026, 1, 1, 0, 10))
    # 00:10, 01:40, 03:10, 04:40, 06:10, ...
    assert timetable.after(z(2026, 1, 1, 2), limit=3) == [
        z(2026, 1, 1, 3, 10),
        z(2026, 1, 1, 4, 40),
        z(2026, 1, 1, 6, 10),
    ]
    # k negative: the anchor is not the first occurrence.
    assert timetable.after(z(2025, 12, 31, 20), limit=3) == [
        z(2025, 12, 31, 21, 10),
        z(2025, 12, 31, 22, 40),
        z(2026, 1, 1, 0, 10),
    ]
    assert timetable.latest_at_or_before(z(2025, 12, 31, 20)) == z(2025, 12, 31, 19, 40)


def test_interval_default_anchor_is_2020_midnight_in_the_zone() -> None:
    assert every(7).after(z(2020, 1, 1, 0, 0, 10), limit=2) == [
        z(2020, 1, 1, 0, 0, 14),
        z(2020, 1, 1, 0, 0, 21),
    ]
    # Midnight 2020-01-01 CET is 23:00Z: every 2 h falls on odd UTC hours.
    assert every(7200, "Europe/Berlin").after(z(2026, 7, 1, 12), limit=2) == [
        z(2026, 7, 1, 13),
        z(2026, 7, 1, 15),
    ]
    # Far from the anchor the answer is still arithmetic, not a walk.
    assert every(1).after(z(2500, 1, 1), limit=1) == [z(2500, 1, 1, 0, 0, 1)]


def test_interval_in_seconds_is_exact_elapsed_time_across_dst() -> None:
    timetable = every(3600, "Europe/Berlin")
    autumn = timetable.between(*local_day(BERLIN, 2026, 10, 25), limit=100)
    spring = timetable.between(*local_day(BERLIN, 2026, 3, 29), limit=100)
    assert len(autumn) == 25
    assert len(spring) == 23
    assert autumn[:4] == [
        z(2026, 10, 24, 22),
        z(2026, 10, 24, 23),
        z(2026, 10, 25),
        z(2026, 10, 25, 1),
    ]
    assert all(b - a == timedelta(hours=1) for a, b in zip(autumn, autumn[1:], strict=False))


def test_interval_in_whole_days_keeps_the_wall_clock_time() -> None:
    berlin = every(86400, "Europe/Berlin", datetime(2026, 3, 27, 9, tzinfo=BERLIN))
    assert berlin.after(z(2026, 3, 27), limit=4) == [
        z(2026, 3, 27, 8),  # 09:00 CET
        z(2026, 3, 28, 8),
        z(2026, 3, 29, 7),  # 09:00 CEST
        z(2026, 3, 30, 7),
    ]
    new_york = every(86400, "America/New_York", datetime(2026, 10, 30, 9, tzinfo=NEW_YORK))
    assert new_york.after(z(2026, 10, 31), limit=2) == [z(2026, 10, 31, 13), z(2026, 11, 1, 14)]
    weekly = every(7 * 86400, "Europe/Berlin", datetime(2026, 3, 2, 9, tzinfo=BERLIN))  # Monday
    assert weekly.after(z(2026, 3, 20), limit=2) == [z(2026, 3, 23, 8), z(2026, 3, 30, 7)]
    # Before the anchor too.
    assert weekly.latest_at_or_before(z(2026, 3, 1)) == z(2026, 2, 23, 8)


def test_interval_in_days_moves_a_missing_time_forward_and_takes_a_repeated_one_first() -> None:
    spring = every(86400, "Europe/Berlin", datetime(2026, 3, 1, 2, 30, tzinfo=BERLIN))
    assert spring.after(z(2026, 3, 28, 12), limit=2) == [
        z(2026, 3, 29, 1, 30),  # 02:30 does not exist: 03:30 CEST
        z(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]
    autumn = every(86400, "Europe/Berlin", datetime(2026, 10, 1, 2, 30, tzinfo=BERLIN))
    assert autumn.after(z(2026, 10, 24, 12), limit=2) == [
        z(2026, 10, 25, 0, 30),  # 02:30 CEST, the first of the two
        z(2026, 10, 26, 1, 30),  # 02:30 CET
    ]


def test_interval_leap_day() -> None:
    timetable = every(86400, anchor=z(2028, 2, 27, 12))
    assert timetable.after(z(2028, 2, 27, 12), limit=3) == [
        z(2028, 2, 28, 12),
        z(2028, 2, 29, 12),
        z(2028, 3, 1, 12),
    ]


def test_interval_limit_between_bounds_and_latest_inclusive() -> None:
    timetable = every(3600)
    assert timetable.after(z(2026, 1, 1), limit=3) == [
        z(2026, 1, 1, 1),
        z(2026, 1, 1, 2),
        z(2026, 1, 1, 3),
    ]
    assert timetable.after(z(2026, 1, 1), limit=0) == []
    # start exclusive, end inclusive
    assert timetable.between(z(2026, 1, 1, 10), z(2026, 1, 1, 13), limit=10) == [
        z(2026, 1, 1, 11),
        z(2026, 1, 1, 12),
        z(2026, 1, 1, 13),
    ]
    assert timetable.between(z(2026, 1, 1, 10), z(2026, 1, 1, 13), limit=2) == [
        z(2026, 1, 1, 11),
        z(2026, 1, 1, 12),
    ]
    assert timetable.between(z(2026, 1, 1, 13), z(2026, 1, 1, 10), limit=10) == []
    # A second-by-second schedule over a century, cut at the limit without listing it.
    assert len(every(1).between(z(2000, 1, 1), z(2100, 1, 1), limit=5)) == 5
    assert timetable.latest_at_or_before(z(2026, 1, 1, 11)) == z(2026, 1, 1, 11)
    assert timetable.latest_at_or_before(z(2026, 1, 1, 10, 59, 59)) == z(2026, 1, 1, 10)
    with pytest.raises(ValueError, match="limit"):
        timetable.after(z(2026, 1, 1), limit=-1)


@pytest.mark.parametrize("seconds", [3600, 5400, 86400, 2 * 86400])
@pytest.mark.parametrize(
    ("zone", "days"),
    [
        ("Europe/Berlin", [(2026, 3, 29), (2026, 10, 25)]),
        ("America/New_York", [(2026, 3, 8), (2026, 11, 1)]),
    ],
)
def test_interval_restarting_from_any_occurrence_continues_the_same_sequence(
    seconds, zone, days
) -> None:
    anchor = datetime(2026, 1, 1, 2, 30, tzinfo=ZoneInfo(zone))
    timetable = every(seconds, zone, anchor)
    for day in days:
        start = datetime(*day, tzinfo=ZoneInfo(zone)) - timedelta(days=2)
        assert assert_consistent(timetable, start, start + timedelta(days=5))


# --- RRULE --------------------------------------------------------------------------------------


def test_rrule_weekly_by_day_stays_at_local_time_across_dst() -> None:
    anchor = datetime(2026, 10, 19, 9, tzinfo=NEW_YORK)  # a Monday, 09:00 EDT
    timetable = rule("FREQ=WEEKLY;BYDAY=MO,WE", "America/New_York", anchor)
    assert timetable.after(z(2026, 10, 24), limit=4) == [
        z(2026, 10, 26, 13),  # Mon 09:00 EDT
        z(2026, 10, 28, 13),  # Wed 09:00 EDT
        z(2026, 11, 2, 14),  # Mon 09:00 EST
        z(2026, 11, 4, 14),  # Wed 09:00 EST
    ]
    # "RRULE:" prefix accepted, same schedule.
    prefixed = rule("RRULE:FREQ=WEEKLY;BYDAY=MO,WE", "America/New_York", anchor)
    assert prefixed.after(z(2026, 10, 24), limit=4) == timetable.after(z(2026, 10, 24), limit=4)


def test_rrule_by_month_day_including_last_day() -> None:
    timetable = rule("FREQ=MONTHLY;BYMONTHDAY=15,-1", anchor=z(2026, 1, 1, 6))
    assert timetable.after(z(2026, 1, 1), limit=6) == [
        z(2026, 1, 15, 6),
        z(2026, 1, 31, 6),
        z(2026, 2, 15, 6),
        z(2026, 2, 28, 6),
        z(2026, 3, 15, 6),
        z(2026, 3, 31, 6),
    ]


def test_rrule_leap_day() -> None:
    anchor = datetime(2020, 1, 1, 9, tzinfo=BERLIN)
    timetable = rule("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29", "Europe/Berlin", anchor)
    assert timetable.after(z(2026, 1, 1), limit=2) == [z(2028, 2, 29, 8), z(2032, 2, 29, 8)]
    assert timetable.latest_at_or_before(z(2027, 1, 1)) == z(2024, 2, 29, 8)


def test_rrule_count_and_until_make_it_finite() -> None:
    counted = rule("FREQ=DAILY;COUNT=3", anchor=z(2026, 5, 1, 10))
    assert counted.after(z(2026, 4, 1), limit=10) == [
        z(2026, 5, 1, 10),
        z(2026, 5, 2, 10),
        z(2026, 5, 3, 10),
    ]
    assert counted.after(z(2026, 5, 3, 10), limit=10) == []
    assert counted.between(z(2026, 5, 2, 10), z(2027, 1, 1), limit=10) == [z(2026, 5, 3, 10)]
    assert counted.latest_at_or_before(z(2030, 1, 1)) == z(2026, 5, 3, 10)
    assert counted.latest_at_or_before(z(2026, 5, 1, 9)) is None
    # UNTIL is inclusive; a UTC UNTIL with a local-time rule.
    until = rule("FREQ=DAILY;UNTIL=20260503T070000Z", "Europe/Berlin", z(2026, 5, 1, 7))
    assert until.after(z(2026, 4, 1), limit=10) == [
        z(2026, 5, 1, 7),
        z(2026, 5, 2, 7),
        z(2026, 5, 3, 7),
    ]


def test_rrule_dtstart_in_the_text_wins_over_the_anchor() -> None:
    text = "DTSTART:20260105T090000\nRRULE:FREQ=DAILY"
    timetable = rule(text, "Europe/Berlin", anchor=z(2026, 1, 1))
    assert timetable.after(z(2026, 1, 1), limit=2) == [z(2026, 1, 5, 8), z(2026, 1, 6, 8)]
    assert timetable.after(z(2026, 7, 1), limit=1) == [z(2026, 7, 1, 7)]  # 09:00 CEST
    # TZID names the zone whose wall clock the rule follows.
    tzid = rule("DTSTART;TZID=America/New_York:20260105T090000\nRRULE:FREQ=DAILY", "UTC")
    assert tzid.after(z(2026, 3, 6), limit=3) == [
        z(2026, 3, 6, 14),
        z(2026, 3, 7, 14),
        z(2026, 3, 8, 13),  # 09:00 EDT
    ]
    # A UTC DTSTART is that instant, on the schedule's wall clock.
    utc_start = rule("DTSTART:20260105T080000Z\nRRULE:FREQ=DAILY", "Europe/Berlin")
    assert utc_start.after(z(2026, 7, 1), limit=1) == [z(2026, 7, 1, 7)]


def test_rrule_exdate_and_rdate() -> None:
    text = (
        "DTSTART:20260105T090000\n"
        "RRULE:FREQ=DAILY;COUNT=4\n"
        "EXDATE;VALUE=DATE:20260106\n"
        "RDATE:20260110T120000Z"
    )
    timetable = rule(text, "Europe/Berlin")
    assert timetable.after(z(2026, 1, 1), limit=10) == [
        z(2026, 1, 5, 8),
        z(2026, 1, 7, 8),
        z(2026, 1, 8, 8),
        z(2026, 1, 10, 12),
    ]


def test_rrule_missing_and_repeated_local_times() -> None:
    spring = rule("FREQ=DAILY", "Europe/Berlin", datetime(2026, 3, 27, 2, 30, tzinfo=BERLIN))
    assert spring.after(z(2026, 3, 28), limit=3) == [
        z(2026, 3, 28, 1, 30),  # 02:30 CET
        z(2026, 3, 29, 1, 30),  # 02:30 does not exist: 03:30 CEST
        z(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]
    autumn = rule("FREQ=DAILY", "America/New_York", datetime(2026, 10, 30, 1, 30, tzinfo=NEW_YORK))
    assert autumn.after(z(2026, 10, 31, 12), limit=2) == [
        z(2026, 11, 1, 5, 30),  # 01:30 EDT, the first of the two
        z(2026, 11, 2, 6, 30),  # 01:30 EST
    ]


def test_rrule_sub_hourly_expansion_through_the_gap_is_sorted_and_unique() -> None:
    # 02:00 and 02:30 do not exist on 2026-03-29 in Berlin and move forward an hour, onto
    # 03:00 and 03:30: each instant fires once, in order.
    anchor = datetime(2026, 3, 29, tzinfo=BERLIN)
    timetable = rule("FREQ=HOURLY;BYMINUTE=0,30", "Europe/Berlin", anchor)
    assert timetable.after(z(2026, 3, 29, 0, 15), limit=5) == [
        z(2026, 3, 29, 0, 30),  # 01:30 CET
        z(2026, 3, 29, 1, 0),  # 03:00 CEST
        z(2026, 3, 29, 1, 30),  # 03:30 CEST
        z(2026, 3, 29, 2, 0),
        z(2026, 3, 29, 2, 30),
    ]


def test_rrule_long_after_its_start_keeps_its_phase() -> None:
    # Queries move DTSTART forward by whole periods; the occurrences must not move with it.
    # 2020-01-01 00:00Z to 2026-06-01 00:00Z is 2343 days = 56232 hours = 5 * 11246 + 2.
    hourly = rule("FREQ=HOURLY;INTERVAL=5", anchor=z(2020, 1, 1))
    assert hourly.after(z(2026, 6, 1), limit=3) == [
        z(2026, 6, 1, 3),
        z(2026, 6, 1, 8),
        z(2026, 6, 1, 13),
    ]
    assert hourly.latest_at_or_before(z(2026, 6, 1)) == z(2026, 5, 31, 22)
    # 2020-01-06 (a Monday) to 2026-06-01 (a Monday) is 334 weeks: on the fortnightly lattice.
    fortnightly = rule(
        "FREQ=WEEKLY;INTERVAL=2", "Europe/Berlin", datetime(2020, 1, 6, 9, tzinfo=BERLIN)
    )
    assert fortnightly.after(z(2026, 5, 25), limit=2) == [z(2026, 6, 1, 7), z(2026, 6, 15, 7)]
    # Every 5 months from January 2020: ..., 2025-11, 2026-04, 2026-09.
    five_monthly = rule("FREQ=MONTHLY;INTERVAL=5", anchor=z(2020, 1, 15, 10))
    assert five_monthly.after(z(2026, 1, 1), limit=2) == [z(2026, 4, 15, 10), z(2026, 9, 15, 10)]
    # Monthly from the 31st: only months that have one.
    month_end = rule("FREQ=MONTHLY", anchor=z(2020, 1, 31, 10))
    assert month_end.after(z(2026, 4, 1), limit=2) == [z(2026, 5, 31, 10), z(2026, 7, 31, 10)]
    three_yearly = rule("FREQ=YEARLY;INTERVAL=3", anchor=z(2020, 3, 1))
    assert three_yearly.after(z(2026, 1, 1), limit=2) == [z(2026, 3, 1), z(2029, 3, 1)]
    assert three_yearly.latest_at_or_before(z(2026, 1, 1)) == z(2023, 3, 1)


def test_iter_after_and_endless() -> None:
    for timetable in (cron("0 9 * * *", "Europe/Berlin"), every(5400)):
        assert timetable.endless
        walk = timetable.iter_after(z(2026, 3, 27))
        assert [next(walk) for _ in range(5)] == timetable.after(z(2026, 3, 27), limit=5)
    finite = rule("FREQ=DAILY;COUNT=2", anchor=z(2026, 1, 1, 9))
    assert not finite.endless
    assert list(finite.iter_after(z(2025, 1, 1))) == [z(2026, 1, 1, 9), z(2026, 1, 2, 9)]


@pytest.mark.parametrize(
    "text",
    ["FREQ=DAILY", "FREQ=HOURLY;INTERVAL=3", "FREQ=DAILY;BYHOUR=1,2,3;BYMINUTE=0,30"],
)
@pytest.mark.parametrize(
    ("zone", "days"),
    [
        ("Europe/Berlin", [(2026, 3, 29), (2026, 10, 25)]),
        ("America/New_York", [(2026, 3, 8), (2026, 11, 1)]),
    ],
)
def test_rrule_restarting_from_any_occurrence_continues_the_same_sequence(text, zone, days) -> None:
    timetable = rule(text, zone, datetime(2026, 2, 1, 2, 30, tzinfo=ZoneInfo(zone)))
    for day in days:
        start = datetime(*day, tzinfo=ZoneInfo(zone)) - timedelta(hours=6)
        assert assert_consistent(timetable, start, start + timedelta(hours=30))


# --- after, between and latest agree -------------------------------------------------------------


@pytest.mark.parametrize(
    "timetable",
    [
        cron("0 9 * * MON-FRI", "Europe/Berlin"),
        cron("0 0 L * *", "America/New_York"),
        every(86400 * 3, "America/New_York", datetime(2026, 1, 1, 9, tzinfo=NEW_YORK)),
        every(2700),
        rule("FREQ=WEEKLY;BYDAY=TU,TH;BYHOUR=8,17", "Europe/Berlin", z(2025, 1, 1)),
    ],
    ids=["cron-weekdays", "cron-last-day", "interval-3d", "interval-45m", "rrule-weekly"],
)
def test_after_between_and_latest_agree(timetable: Timetable) -> None:
    for t in (z(2026, 1, 1), z(2026, 3, 8, 6, 59, 59), z(2026, 10, 25, 0, 30), z(2026, 11, 1, 6)):
        upcoming = timetable.after(t, limit=12)
        assert len(upcoming) == 12
        assert upcoming == sorted(upcoming) and upcoming[0] > t
        assert timetable.between(t, upcoming[-1], limit=100) == upcoming
        assert timetable.between(t, upcoming[-1] - timedelta(seconds=1), limit=100) == upcoming[:-1]
        before_first = timetable.latest_at_or_before(upcoming[0] - timedelta(microseconds=1))
        assert before_first is not None and before_first <= t
        assert timetable.after(before_first, limit=1) == upcoming[:1]
        for previous, value in zip(upcoming, upcoming[1:], strict=False):
            assert timetable.latest_at_or_before(value) == value
            assert timetable.latest_at_or_before(value - timedelta(microseconds=1)) == previous
        assert all(value.tzinfo is UTC for value in upcoming)


def test_results_are_deterministic_and_utc() -> None:
    spec = ScheduleSpec(
        rrule="FREQ=WEEKLY;BYDAY=MO", timezone="Europe/Berlin", anchor=z(2026, 1, 1)
    )
    first = parse_schedule(spec).after(z(2026, 3, 1), limit=5)
    second = parse_schedule(spec).after(datetime(2026, 3, 1, 1, tzinfo=BERLIN), limit=5)
    assert first == second
    assert [value.isoformat() for value in first] == [value.isoformat() for value in second]
    assert all(value.tzinfo is UTC for value in first)


def test_naive_inputs_are_rejected() -> None:
    timetable = cron("0 * * * *")
    with pytest.raises(ValueError, match="timezone-aware"):
        timetable.after(datetime(2026, 1, 1), limit=1)
    with pytest.raises(ValueError, match="timezone-aware"):
        timetable.latest_at_or_before(datetime(2026, 1, 1))


# --- parsing, describe, anchors -------------------------------------------------------------------


def test_parse_returns_one_class_per_kind_and_describes_it() -> None:
    berlin_cron = cron("30  2 * * *", "Europe/Berlin")
    assert isinstance(berlin_cron, CronTimetable)
    assert berlin_cron.describe() == "cron 30 2 * * * (Europe/Berlin)"
    interval = every(5400)
    assert isinstance(interval, IntervalTimetable)
    assert interval.describe() == "every 1h 30m from 2020-01-01 00:00 (UTC)"
    weekly = rule("FREQ=WEEKLY;BYDAY=MO,WE", "America/New_York", z(2026, 1, 1))
    assert isinstance(weekly, RRuleTimetable)
    assert weekly.describe() == "RRULE FREQ=WEEKLY;BYDAY=MO,WE (America/New_York)"


def test_default_anchor() -> None:
    now = z(2026, 3, 10, 23, 30)
    tokyo = ZoneInfo("Asia/Tokyo")
    interval = ScheduleSpec(interval_seconds=60, timezone="Asia/Tokyo")
    assert default_anchor(interval, now) == datetime(2020, 1, 1, tzinfo=tokyo)
    assert datetime(2020, 1, 1) == DEFAULT_INTERVAL_ANCHOR
    # 23:30Z on the 10th is already the 11th in Tokyo.
    weekly = ScheduleSpec(rrule="FREQ=WEEKLY", timezone="Asia/Tokyo")
    assert default_anchor(weekly, now) == datetime(2026, 3, 11, tzinfo=tokyo)
    assert default_anchor(ScheduleSpec(cron="0 * * * *"), now) is None
    own_start = ScheduleSpec(rrule="DTSTART:20260101T000000\nRRULE:FREQ=DAILY")
    assert default_anchor(own_start, now) is None
    given = ScheduleSpec(interval_seconds=60, anchor=z(2026, 1, 1, 0, 0, 30))
    assert default_anchor(given, now) == z(2026, 1, 1, 0, 0, 30)


def test_catch_up_values() -> None:
    assert [member.value for member in CatchUp] == ["latest", "all", "none"]
    assert CatchUp("all") is CatchUp.ALL
    assert MIN_INTERVAL_SECONDS == 1


# --- errors -------------------------------------------------------------------------------------


def invalid(spec: ScheduleSpec) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_schedule(spec, field_prefix="schedules[1]")
    return caught.value


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("0 0 * * * *", "has 6 fields"),
        ("0 0 * * * * 2026", "has 7 fields"),
        ("0 0 * *", "has 4 fields"),
        ("61 * * * *", "Bad minute"),
        ("0 24 * * *", "Bad hour"),
        ("0 0 31 2 *", "Bad day-of-month"),
        ("@reboot", "@reboot"),
        ("@every 5m", "unknown cron macro"),
        ("", "empty"),
    ],
)
def test_bad_cron(expression: str, fragment: str) -> None:
    error = invalid(ScheduleSpec(cron=expression))
    assert error.field == "schedules[1].cron"
    assert fragment in error.message
    assert "5 fields" in error.message  # and what is accepted


def test_unknown_time_zone() -> None:
    error = invalid(ScheduleSpec(cron="0 * * * *", timezone="Europe/Berln"))
    assert error.field == "schedules[1].timezone"
    assert "unknown time zone 'Europe/Berln'" in error.message
    assert "IANA" in error.message
    assert "did you mean Europe/Berlin?" in error.message
    with pytest.raises(InvalidInput) as caught:
        check_timezone("Mars/Olympus", field="timezone")
    assert caught.value.field == "timezone"
    assert check_timezone("America/New_York", field="timezone") == NEW_YORK


@pytest.mark.parametrize("value", [0, -60, True, 1.5, 10**15])
def test_bad_interval(value: object) -> None:
    error = invalid(ScheduleSpec(interval_seconds=value))  # type: ignore[arg-type]
    assert error.field == "schedules[1].interval_seconds"
    assert "at least 1 and at most" in error.message
    assert repr(value) in error.message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("FREQ=WEEKLY;BYDAY=XX", "BYDAY"),
        ("FREQ=FORTNIGHTLY", "unknown FREQ"),
        ("BYDAY=MO", "FREQ"),
        ("this is not a rule", "NAME=VALUE"),
        ("FREQ=DAILY;COUNT=3;UNTIL=20260101T000000Z", "not both"),
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL"),
        ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "never occurs"),
        ("DTSTART;TZID=Mars/Olympus:20260101T000000\nRRULE:FREQ=DAILY", "unknown time zone"),
        ("RRULE:FREQ=DAILY\nVEVENT:x", "unsupported line"),
        ("FREQ=DAILY;BYHOUR=9,17;BYSETPOS=1", "BYSETPOS is supported with FREQ=WEEKLY"),
        ("FREQ=WEEKLY;BYDAY=1MO", "numbered weekday"),
        ("FREQ=HOURLY;INTERVAL=2;BYHOUR=3", "never reaches"),
        ("FREQ=DAILY;INTERVAL=7;BYDAY=TU", "never reaches"),
    ],
)
def test_bad_rrule(text: str, fragment: str) -> None:
    error = invalid(ScheduleSpec(rrule=text, anchor=z(2026, 1, 1)))
    assert error.field == "schedules[1].rrule"
    assert fragment in error.message


@pytest.mark.parametrize("frequency", ["MINUTELY", "SECONDLY"])
def test_sub_hourly_rrule_is_rejected(frequency: str) -> None:
    error = invalid(ScheduleSpec(rrule=f"FREQ={frequency};INTERVAL=15", anchor=z(2026, 1, 1)))
    assert error.field == "schedules[1].rrule"
    assert f"FREQ={frequency}" in error.message
    assert "interval_seconds or cron" in error.message


@pytest.mark.parametrize(
    ("spec", "got"),
    [
        (ScheduleSpec(), "none"),
        (ScheduleSpec(cron="0 * * * *", rrule="FREQ=DAILY"), "cron and rrule"),
        (ScheduleSpec(cron="0 * * * *", interval_seconds=60), "cron and interval_seconds"),
    ],
)
def test_exactly_one_kind(spec: ScheduleSpec, got: str) -> None:
    error = invalid(spec)
    assert error.field == "schedules[1]"
    assert "exactly one of cron, interval_seconds or rrule" in error.message
    assert got in error.message
    with pytest.raises(InvalidInput) as caught:
        parse_schedule(spec)
    assert caught.value.field == "schedule"


def test_naive_anchor() -> None:
    error = invalid(ScheduleSpec(interval_seconds=60, anchor=datetime(2026, 1, 1, 9)))
    assert error.field == "schedules[1].anchor"
    assert "timezone-aware" in error.message


def test_anchor_and_rrule_dates_out_of_range() -> None:
    error = invalid(ScheduleSpec(interval_seconds=60, anchor=datetime(1, 1, 1, tzinfo=UTC)))
    assert error.field == "schedules[1].anchor"
    assert "between years 1900 and 9000" in error.message
    error = invalid(ScheduleSpec(rrule="DTSTART:00010101T000000\nRRULE:FREQ=DAILY"))
    assert error.field == "schedules[1].rrule"
    assert "out of range" in error.message
