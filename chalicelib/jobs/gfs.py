"""Grandfather-father-son backup retention with restic's `forget --keep-daily/-weekly/-monthly` semantics.

restic (doc/060_forget.rst and internal/restic/snapshot_policy.go, 0.17+):
- `--keep-daily n`: for the last n days which have one or more snapshots, keep only the most recent one
  of each day; weekly and monthly alike. Periods are natural calendar periods (weeks are ISO weeks,
  Monday to Sunday, numbered by ISO week-year), not windows relative to "now", and a period without a
  snapshot does not count. The options are ORed: one snapshot may fill a day, a week and a month.
- If a bucket still has counts left when the oldest snapshot is reached, that oldest snapshot is kept
  too ("oldest daily snapshot"), which keeps the longest history while the policy is not yet full.
- Snapshots dated in the future (relative to when forget runs) are ignored and never removed.

All of it is evaluated in UTC, so a backup's day does not depend on the machine running the job.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
Period = Callable[[datetime], tuple[int, ...]]


def _day(t: datetime) -> tuple[int, ...]:
    return (t.year, t.month, t.day)


def _iso_week(t: datetime) -> tuple[int, ...]:
    # The ISO week-year, not the calendar year: 2027-01-01 belongs to week 53 of 2026.
    year, week, _ = t.isocalendar()
    return (year, week)


def _month(t: datetime) -> tuple[int, ...]:
    return (t.year, t.month)


def utc(t: datetime) -> datetime:
    """`t` in UTC (a naive datetime is taken to be UTC already)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def keep(backups: Sequence[tuple[K, datetime]], *, daily: int = 30, weekly: int = 12, monthly: int = 6,
         now: datetime | None = None, keep_oldest: bool = True) -> set[K]:
    """The ids to keep among (id, taken_at) pairs; every other id may be expired.

    `now`: backups taken after it are kept and take no part in the policy (as restic ignores snapshots
    from the future). `keep_oldest=False` gives restic's behaviour before 0.17.
    """
    if min(daily, weekly, monthly) < 0:
        raise ValueError("keep counts must be >= 0")
    limit = utc(now) if now is not None else None
    future = {i for i, t in backups if limit is not None and utc(t) > limit}
    # Newest first; ties broken by id text so the answer never depends on the input's order.
    ordered = sorted(((utc(t), i) for i, t in backups if i not in future), key=lambda p: (p[0], str(p[1])),
                     reverse=True)
    buckets: list[tuple[Period, int]] = [(_day, daily), (_iso_week, weekly), (_month, monthly)]
    left = [count for _, count in buckets]
    last: list[tuple[int, ...] | None] = [None] * len(buckets)
    kept = set(future)
    for position, (taken, ident) in enumerate(ordered):
        oldest = keep_oldest and position == len(ordered) - 1
        for b, (period, _) in enumerate(buckets):
            if left[b] <= 0:
                continue
            value = period(taken)
            if value != last[b] or oldest:
                # Newest first, so the first backup seen in a period is that period's most recent one.
                kept.add(ident)
                last[b] = value
                left[b] -= 1
    return kept
