"""GFS retention (restic's forget semantics) against hand-checked calendars, plus properties."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.jobs.gfs import keep


def at(text: str) -> datetime:
    """An ISO timestamp; UTC unless it says otherwise."""
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def named(*stamps: str) -> list[tuple[str, datetime]]:
    """Backups whose id is their timestamp text (so expectations read as dates)."""
    return [(s, at(s)) for s in stamps]


def daily_backups(first: date, last: date, hour: int = 2) -> list[tuple[str, datetime]]:
    days = (last - first).days + 1
    return named(*(f"{first + timedelta(days=n)}T{hour:02d}:00:00" for n in range(days)))


def test_iso_week_53_calendar_facts_the_tests_rely_on() -> None:
    # 2026 starts on a Thursday, so it has an ISO week 53: Mon 2026-12-28 .. Sun 2027-01-03.
    assert date(2026, 1, 1).isoweekday() == 4
    assert date(2026, 12, 28).isocalendar()[:2] == (2026, 53)
    assert date(2027, 1, 3).isocalendar()[:2] == (2026, 53)
    assert date(2027, 1, 4).isocalendar()[:2] == (2027, 1)
    # Years with 53 ISO weeks around here: Jan 1 on a Thursday, or on a Wednesday in a leap year.
    assert [y for y in range(2015, 2040) if date(y, 12, 28).isocalendar()[1] == 53] == [2015, 2020, 2026, 2032, 2037]
    assert date(2028, 2, 29).isocalendar()[:2] == (2028, 9)


def test_restic_documentation_example_twelve_sundays_keep_daily_4() -> None:
    sundays = named(*(f"{date(2019, 9, 1) + timedelta(weeks=n)}T11:00:00" for n in range(12)))
    kept = keep(sundays, daily=4, weekly=0, monthly=0)
    assert kept == {"2019-10-27T11:00:00", "2019-11-03T11:00:00", "2019-11-10T11:00:00", "2019-11-17T11:00:00"}


def test_iso_week_53_spans_the_new_year() -> None:
    backups = daily_backups(date(2026, 12, 21), date(2027, 1, 5), hour=3)
    # Newest first: Tue 2027-01-05 (2027-W01; Mon 01-04 is the same week), then Sun 2027-01-03, the most
    # recent day of 2026-W53 (not a week of its own for 2027), then Sun 2026-12-27 (2026-W52).
    assert keep(backups, daily=0, weekly=3, monthly=0) == {
        "2027-01-05T03:00:00", "2027-01-03T03:00:00", "2026-12-27T03:00:00"}
    assert keep(backups, daily=0, weekly=2, monthly=0) == {"2027-01-05T03:00:00", "2027-01-03T03:00:00"}


def test_month_boundaries_are_in_utc() -> None:
    backups = named("2026-01-31T23:59:59", "2026-02-01T00:00:00", "2026-02-27T12:00:00",
                    "2026-03-01T00:30:00+02:00",  # = 2026-02-28T22:30Z: still February in UTC
                    "2026-03-01T01:00:00")
    assert keep(backups, daily=0, weekly=0, monthly=3) == {
        "2026-03-01T01:00:00", "2026-03-01T00:30:00+02:00", "2026-01-31T23:59:59"}


def test_leap_day_is_a_day_of_its_own() -> None:
    backups = named("2028-02-28T10:00:00", "2028-02-29T10:00:00", "2028-02-29T22:00:00", "2028-03-01T09:00:00")
    assert keep(backups, daily=3, weekly=0, monthly=0) == {
        "2028-03-01T09:00:00", "2028-02-29T22:00:00", "2028-02-28T10:00:00"}
    # February 2028 has 29 days and its latest backup is on the 29th.
    assert keep(backups, daily=0, weekly=0, monthly=2) == {"2028-03-01T09:00:00", "2028-02-29T22:00:00"}
    # Mon 2028-02-28 .. Sun 2028-03-05 is one ISO week (2028-W09).
    assert keep(backups, daily=0, weekly=1, monthly=0) == {"2028-03-01T09:00:00"}


def test_days_without_backups_do_not_count() -> None:
    backups = named("2026-01-01T02:00:00", "2026-01-02T02:00:00", "2026-01-05T02:00:00", "2026-01-09T02:00:00",
                    "2026-01-10T02:00:00")
    # "The last 3 days which have backups" are the 10th, 9th and 5th, not the 8th..10th.
    assert keep(backups, daily=3, weekly=0, monthly=0) == {
        "2026-01-10T02:00:00", "2026-01-09T02:00:00", "2026-01-05T02:00:00"}


def test_several_backups_a_day_keep_the_latest_of_each_day() -> None:
    backups = named("2026-06-09T05:00:00", "2026-06-10T01:00:00", "2026-06-10T09:00:00", "2026-06-10T23:59:00",
                    "2026-06-11T02:00:00", "2026-06-11T03:00:00")
    assert keep(backups, daily=2, weekly=0, monthly=0) == {"2026-06-11T03:00:00", "2026-06-10T23:59:00"}


def test_one_backup_can_fill_the_daily_weekly_and_monthly_buckets() -> None:
    march = daily_backups(date(2026, 3, 1), date(2026, 3, 31))
    # Tue 2026-03-31 is the newest of its day, of its ISO week (W14) and of March: one backup, three buckets.
    assert keep(march, daily=1, weekly=1, monthly=1) == {"2026-03-31T02:00:00"}


def test_two_years_of_daily_backups_under_30_12_6() -> None:
    backups = daily_backups(date(2025, 1, 1), date(2026, 12, 31))
    kept = keep(backups)
    dailies = {f"{date(2026, 12, 2) + timedelta(days=n)}T02:00:00" for n in range(30)}  # Dec 2 .. Dec 31
    # 12 ISO weeks, newest first: W53 (Thu 12-31, already a daily), the Sundays 12-27, 12-20, 12-13, 12-06
    # (dailies too), then the Sundays 11-29 .. 10-18 (new).
    weeklies = {"2026-11-29T02:00:00", "2026-11-22T02:00:00", "2026-11-15T02:00:00", "2026-11-08T02:00:00",
                "2026-11-01T02:00:00", "2026-10-25T02:00:00", "2026-10-18T02:00:00"}
    # 6 months: December (12-31, already kept), then the last day of November .. July.
    monthlies = {"2026-11-30T02:00:00", "2026-10-31T02:00:00", "2026-09-30T02:00:00", "2026-08-31T02:00:00",
                 "2026-07-31T02:00:00"}
    assert kept == dailies | weeklies | monthlies
    assert len(kept) == 42


def test_the_oldest_is_kept_while_a_bucket_is_not_full() -> None:
    backups = named("2026-01-01T01:00:00", "2026-01-01T02:00:00", "2026-01-02T01:00:00")
    # restic 0.17+: not enough backups for 7 dailies, so the oldest is kept too ("oldest daily snapshot").
    assert keep(backups, daily=7, weekly=0, monthly=0) == {
        "2026-01-02T01:00:00", "2026-01-01T02:00:00", "2026-01-01T01:00:00"}
    assert keep(backups, daily=7, weekly=0, monthly=0, keep_oldest=False) == {
        "2026-01-02T01:00:00", "2026-01-01T02:00:00"}
    # A full bucket keeps no extra oldest.
    assert keep(backups, daily=2, weekly=0, monthly=0) == {"2026-01-02T01:00:00", "2026-01-01T02:00:00"}


def test_backups_from_the_future_are_kept_and_do_not_count() -> None:
    backups = named("2026-05-01T02:00:00", "2026-05-02T02:00:00")
    assert keep(backups, daily=1, weekly=0, monthly=0) == {"2026-05-02T02:00:00"}
    assert keep(backups, daily=1, weekly=0, monthly=0, now=at("2026-05-01T12:00:00")) == {
        "2026-05-01T02:00:00", "2026-05-02T02:00:00"}


def test_naive_timestamps_are_utc_and_offsets_are_converted() -> None:
    plus_ten = timezone(timedelta(hours=10))
    backups = [("a", datetime(2026, 7, 1, 8, 0)), ("b", datetime(2026, 7, 2, 7, 0, tzinfo=plus_ten))]
    # b is 2026-07-01T21:00Z: the same UTC day as a, and newer.
    assert keep(backups, daily=1, weekly=0, monthly=0) == {"b"}


def test_empty_input_and_zero_counts() -> None:
    assert keep([]) == set()
    assert keep(named("2026-01-01T00:00:00"), daily=0, weekly=0, monthly=0) == set()
    with pytest.raises(ValueError, match=">= 0"):
        keep([], daily=-1)


moments = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2029, 12, 31),
                       timezones=st.just(UTC))
histories = st.lists(moments, max_size=120).map(lambda ts: list(enumerate(ts)))
counts = st.integers(min_value=0, max_value=40)


@settings(max_examples=200, deadline=None)
@given(histories, counts, counts, counts, st.booleans(), st.randoms(use_true_random=False))
def test_properties(backups: list[tuple[int, datetime]], daily: int, weekly: int, monthly: int, oldest: bool,
                    rnd: random.Random) -> None:
    kept = keep(backups, daily=daily, weekly=weekly, monthly=monthly, keep_oldest=oldest)
    ids = {i for i, _ in backups}
    assert kept <= ids
    assert len(kept) <= daily + weekly + monthly
    if backups and daily + weekly + monthly:
        newest = max(t for _, t in backups)
        assert any(i in kept for i, t in backups if t == newest)
    shuffled = list(backups)
    rnd.shuffle(shuffled)
    assert keep(shuffled, daily=daily, weekly=weekly, monthly=monthly, keep_oldest=oldest) == kept
    # Stable under repetition: running retention again on what it kept expires nothing more.
    again = [(i, t) for i, t in backups if i in kept]
    assert keep(again, daily=daily, weekly=weekly, monthly=monthly, keep_oldest=oldest) == kept
