"""Tenant time modes: which mode a schedule puts in force."""

import pytest

from divert.kemi.core.schedule import (
    ScheduleEntry,
    active_mode,
    format_days,
    modes_in_order,
    next_period,
    parse_days,
    parse_minute,
    toggled,
)
from divert.kemi.modes import mode_at

MON, TUE, FRI, SAT, SUN = 0, 1, 4, 5, 6
WEEKDAYS = parse_days("mon-fri")
DAY = ScheduleEntry("day", WEEKDAYS, 8 * 60, 18 * 60)
NIGHT = ScheduleEntry("night", WEEKDAYS, 18 * 60, 8 * 60)
WEEKEND = ScheduleEntry("holiday", parse_days("sat,sun"), 0, 0)
SCHEDULE = (DAY, NIGHT, WEEKEND)


@pytest.mark.parametrize(
    ("weekday", "minute", "mode"),
    [
        (MON, 8 * 60, "day"),
        (MON, 17 * 60 + 59, "day"),
        (MON, 18 * 60, "night"),
        (TUE, 7 * 60 + 59, "night"),  # Monday's night runs into Tuesday
        (MON, 7 * 60, None),  # Sunday is not a weekday: no night ran into Monday
        (SAT, 7 * 60, "night"),  # Friday's night runs into Saturday morning, listed first
        (SAT, 12 * 60, "holiday"),
        (SUN, 23 * 60 + 59, "holiday"),
    ],
)
def test_the_first_entry_covering_the_moment_wins(weekday, minute, mode):
    assert active_mode(SCHEDULE, weekday, minute) == mode


def test_no_schedule_means_no_mode():
    assert active_mode((), MON, 600) is None


def test_days_read_ranges_lists_and_wrapping():
    assert parse_days("all") == frozenset(range(7))
    assert parse_days("mon-wed") == {0, 1, 2}
    assert parse_days("fri-mon") == {4, 5, 6, 0}
    assert parse_days("sat, sun") == {5, 6}
    assert format_days(parse_days("sun,mon")) == "mon,sun"
    with pytest.raises(ValueError, match="weekdays"):
        parse_days("weekdays")


def test_times_of_day():
    assert parse_minute("08:30") == 510
    assert parse_minute("24:00") == 0
    for bad in ("8", "25:00", "08:60", "08-00"):
        with pytest.raises(ValueError):
            parse_minute(bad)


def test_mode_at_reads_the_schedule_in_the_tenants_time_zone():
    monday_0700_utc = 1_795_417_200.0  # 2026-11-23 07:00 UTC, 08:00 in Rome
    assert mode_at("UTC", SCHEDULE, monday_0700_utc) is None
    assert mode_at("Europe/Rome", SCHEDULE, monday_0700_utc) == "day"
    assert mode_at("Europe/Rome", (), monday_0700_utc) is None


def test_star_20_jumps_to_the_next_mode_until_that_period_ends():
    shop = (
        ScheduleEntry("open", WEEKDAYS, 8 * 60, 12 * 60),
        ScheduleEntry("closed", WEEKDAYS, 12 * 60, 13 * 60 + 30),
        ScheduleEntry("open", WEEKDAYS, 13 * 60 + 30, 19 * 60),
    )
    # Monday 11:45: closed now, until 13:30 (105 minutes)
    assert next_period(shop, MON, 11 * 60 + 45) == ("closed", 105)
    # Monday 07:30 (no mode yet): open now, until noon
    assert next_period(shop, MON, 7 * 60 + 30) == ("open", 270)
    # a schedule that never changes has no next period
    assert (
        next_period((WEEKEND_ALL := ScheduleEntry("x", parse_days("all"), 0, 0),), MON, 0) is None
    )
    assert WEEKEND_ALL.mode == "x"


def test_star_11_steps_through_the_modes_then_back_to_automatic():
    assert modes_in_order(SCHEDULE) == ("day", "night", "holiday")
    assert toggled(SCHEDULE, None) == "day"
    assert toggled(SCHEDULE, "day") == "night"
    assert toggled(SCHEDULE, "holiday") is None
    assert toggled((), None) is None
