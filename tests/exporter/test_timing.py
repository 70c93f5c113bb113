"""When probes run: cron in UTC and time zones (DST included), intervals, once, jitter.

Every function takes the clock as ``now``/``after``, so the tests need no sleeping.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from kubeprober.exporter.timing import (
    START_SPREAD,
    interval_seconds,
    jitter,
    next_cron,
    next_due,
    start_offset,
)
from tests.exporter.fakes import make_probe

HOUR = 3600.0
PARIS = "Europe/Paris"
NEW_YORK = "America/New_York"


def ts(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, *, tz: str = "UTC") -> float:
    """Unix time of a wall-clock time in zone ``tz``."""
    return datetime(y, mo, d, h, mi, s, tzinfo=ZoneInfo(tz)).timestamp()


def utc(t: float) -> str:
    """Render unix time ``t`` as ISO UTC for readable assertions."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("*/5 * * * *", ts(2026, 1, 1, 0, 0), "2026-01-01T00:05:00Z"),
        ("*/5 * * * *", ts(2026, 1, 1, 0, 0) + 0.5, "2026-01-01T00:05:00Z"),
        ("*/5 * * * *", ts(2026, 1, 1, 0, 4, 59), "2026-01-01T00:05:00Z"),
        ("0 * * * *", ts(2026, 1, 1, 23, 30), "2026-01-02T00:00:00Z"),
        ("30 9 * * 1-5", ts(2026, 1, 2, 10, 0), "2026-01-05T09:30:00Z"),  # Fri -> Mon
        ("@daily", ts(2026, 2, 28, 12, 0), "2026-03-01T00:00:00Z"),
        ("0 0 29 2 *", ts(2026, 1, 1), "2028-02-29T00:00:00Z"),
    ],
)
def test_next_cron_utc(schedule: str, after: float, expected: str) -> None:
    assert utc(next_cron(schedule, None, after)) == expected


def test_next_cron_is_strictly_after() -> None:
    at = ts(2026, 1, 1, 0, 5)
    assert next_cron("*/5 * * * *", None, at) == at + 300


@pytest.mark.parametrize(
    ("schedule", "tz", "after", "expected"),
    [
        # 09:00 in Paris is 08:00 UTC in winter ...
        ("0 9 * * *", PARIS, ts(2026, 3, 27, 9, tz=PARIS), "2026-03-28T08:00:00Z"),
        # ... and 07:00 UTC from 2026-03-29, when clocks go from 02:00 to 03:00.
        ("0 9 * * *", PARIS, ts(2026, 3, 28, 9, tz=PARIS), "2026-03-29T07:00:00Z"),
        ("0 9 * * *", PARIS, ts(2026, 10, 24, 9, tz=PARIS), "2026-10-25T08:00:00Z"),
        # New York springs forward on 2026-03-08: noon EST is 17:00 UTC, noon EDT 16:00 UTC.
        ("0 12 * * *", NEW_YORK, ts(2026, 3, 7, tz=NEW_YORK), "2026-03-07T17:00:00Z"),
        ("0 12 * * *", NEW_YORK, ts(2026, 3, 7, 12, tz=NEW_YORK), "2026-03-08T16:00:00Z"),
        ("0 9 * * *", "Asia/Tokyo", ts(2026, 1, 1), "2026-01-02T00:00:00Z"),
        ("0 9 * * *", "UTC", ts(2026, 1, 1), "2026-01-01T09:00:00Z"),
    ],
)
def test_next_cron_in_time_zone(schedule: str, tz: str, after: float, expected: str) -> None:
    assert utc(next_cron(schedule, tz, after)) == expected


def test_hourly_cron_keeps_one_hour_steps_across_dst() -> None:
    for start in (ts(2026, 3, 28, 23, 10), ts(2026, 10, 24, 23, 10)):  # both Paris changes
        t, firings = start, []
        for _ in range(6):
            t = next_cron("0 * * * *", "Europe/Paris", t)
            firings.append(t)
        assert [b - a for a, b in itertools.pairwise(firings)] == [HOUR] * 5


def test_next_due_cron_uses_time_zone() -> None:
    probe = make_probe(schedule="0 9 * * *", time_zone="Europe/Paris")
    now = ts(2026, 3, 28, 12, 0)
    assert utc(next_due(probe, previous=None, now=now) or 0) == "2026-03-29T07:00:00Z"


def test_next_due_cron_never_repeats_the_previous_firing() -> None:
    probe = make_probe(schedule="*/5 * * * *")
    planned = ts(2026, 1, 1, 0, 5)
    # Woken a hair early (monotonic vs wall clock): still the next slot, not the same one.
    assert next_due(probe, previous=planned, now=planned - 0.001) == planned + 300
    assert next_due(probe, previous=planned, now=planned + 1) == planned + 300


def test_next_due_cron_skips_missed_firings() -> None:
    probe = make_probe(schedule="*/5 * * * *")
    previous = ts(2026, 1, 1, 0, 5)
    now = ts(2026, 1, 1, 1, 2)  # an hour late: run at the next slot, not twelve at once
    assert utc(next_due(probe, previous=previous, now=now) or 0) == "2026-01-01T01:05:00Z"


def test_interval_first_run_is_soon_at_a_stable_offset() -> None:
    probe = make_probe(interval=30)
    offset = start_offset(probe)
    assert 0.0 <= offset < START_SPREAD
    assert next_due(probe, previous=None, now=1000.0) == 1000.0 + offset
    assert start_offset(make_probe(interval=30)) == offset  # a restart keeps the offset


@pytest.mark.parametrize("interval", [0.2, 5.0, 30.0, 3600.0])
def test_start_offsets_spread_within_the_interval(interval: float) -> None:
    offsets = [start_offset(make_probe(f"p{i}", interval=interval)) for i in range(200)]
    bound = min(interval, START_SPREAD)
    assert all(0.0 <= o < bound for o in offsets)
    assert max(offsets) - min(offsets) > bound * 0.8  # spread out, not all at once
    assert start_offset(make_probe("p1", interval=interval, namespace="other")) != offsets[1]


def test_once_probes_have_no_start_offset_and_cron_ones_spread() -> None:
    assert start_offset(make_probe()) == 0.0
    offsets = [start_offset(make_probe(f"p{i}", schedule="0 3 * * *")) for i in range(200)]
    assert all(0.0 <= o < START_SPREAD for o in offsets)
    assert max(offsets) - min(offsets) > START_SPREAD * 0.8


def test_pending_cron_probe_runs_at_start_then_on_its_schedule() -> None:
    probe = make_probe(schedule="0 3 * * *")  # daily at 03:00 UTC
    now = ts(2026, 1, 1, 8)
    first = next_due(probe, previous=None, now=now, pending=True)
    assert first == now + start_offset(probe)  # seconds away, not 19 hours
    assert first is not None
    assert utc(next_due(probe, previous=first, now=first) or 0) == "2026-01-02T03:00:00Z"
    # With every check's result restored (a restart), it keeps to its schedule.
    assert utc(next_due(probe, previous=None, now=now) or 0) == "2026-01-02T03:00:00Z"
    # Suspended stays suspended.
    assert (
        next_due(
            make_probe(schedule="0 3 * * *", suspend=True), previous=None, now=now, pending=True
        )
        is None
    )


@pytest.mark.parametrize(
    ("previous", "now", "expected"),
    [
        (1000.0, 1000.5, 1030.0),  # on time: anchored on the plan, not on when the run ended
        (1000.0, 1029.9, 1030.0),
        (1000.0, 1030.0, 1030.0),
        (1000.0, 1031.0, 1030.0),  # just late: run now, once
        (1000.0, 1095.0, 1090.0),  # three slots missed: only the latest is kept
        (1000.0, 1120.0, 1120.0),
    ],
)
def test_interval_anchoring(previous: float, now: float, expected: float) -> None:
    assert next_due(make_probe(interval=30), previous=previous, now=now) == expected


def test_interval_does_not_drift_over_many_runs() -> None:
    probe = make_probe(interval=10)
    first = next_due(probe, previous=None, now=5000.0)
    assert first is not None
    previous, now = first, first + 0.37
    for i in range(1, 100):
        due = next_due(probe, previous=previous, now=now)
        assert due == pytest.approx(first + 10 * i, abs=1e-9)
        assert due is not None
        previous = due
        now = due + 0.37  # every run ends a bit late
    assert previous == pytest.approx(first + 990)


def test_interval_late_by_many_slots_does_not_burst() -> None:
    probe = make_probe(interval=10)
    previous, now = 0.0, 1234.5
    past = []
    due = next_due(probe, previous=previous, now=now)
    while due is not None and due <= now:
        past.append(due)
        due = next_due(probe, previous=due, now=now)
    assert len(past) <= 1
    assert due == 1240.0
    assert all(d % 10 == 0 for d in [*past, due])


def test_once() -> None:
    probe = make_probe()
    assert next_due(probe, previous=None, now=42.0) == 42.0
    assert next_due(probe, previous=42.0, now=43.0) is None


@pytest.mark.parametrize(
    "kwargs", [{"interval": 30.0}, {"schedule": "* * * * *"}, {}], ids=["interval", "cron", "once"]
)
def test_suspended_never_runs(kwargs: dict[str, object]) -> None:
    probe = make_probe(suspend=True, **kwargs)  # type: ignore[arg-type]
    assert next_due(probe, previous=None, now=1000.0) is None
    assert next_due(probe, previous=990.0, now=1000.0) is None


def test_jitter_within_bounds_and_seeded() -> None:
    probe = make_probe(interval=60, jitter=5)
    values = [jitter(probe, random.Random(7)) for _ in range(3)]
    assert values[0] == values[1] == values[2]  # same seed, same delay
    rng = random.Random(1)
    draws = [jitter(probe, rng) for _ in range(1000)]
    assert all(0.0 <= d <= 5.0 for d in draws)
    assert max(draws) > 4.5
    assert min(draws) < 0.5
    assert len(set(draws)) > 900  # random, not a constant


def test_no_jitter_is_zero_and_draws_nothing() -> None:
    rng = random.Random(3)
    state = rng.getstate()
    assert jitter(make_probe(interval=60), rng) == 0.0
    assert rng.getstate() == state


@pytest.mark.parametrize(
    ("kwargs", "now", "expected"),
    [
        ({"interval": 45.0}, 0.0, 45.0),
        ({"schedule": "*/5 * * * *"}, ts(2026, 1, 1), 300.0),
        ({"schedule": "0 * * * *"}, ts(2026, 1, 1, 0, 30), HOUR),
        ({"schedule": "0 9,17 * * *"}, ts(2026, 1, 1, 8), 8 * HOUR),  # next two: 09:00, 17:00
        ({"schedule": "0 9,17 * * *"}, ts(2026, 1, 1, 10), 16 * HOUR),  # 17:00, 09:00
        # next two firings 03-28 08:00Z and 03-29 07:00Z: the DST night is 23 hours ...
        ({"schedule": "0 9 * * *", "time_zone": "Europe/Paris"}, ts(2026, 3, 28, 7), 23 * HOUR),
        ({"schedule": "0 9 * * *", "time_zone": "Europe/Paris"}, ts(2026, 3, 28, 9), 24 * HOUR),
        # ... and in October 25.
        ({"schedule": "0 9 * * *", "time_zone": "Europe/Paris"}, ts(2026, 10, 24, 6), 25 * HOUR),
        ({}, 0.0, None),
    ],
)
def test_interval_seconds(kwargs: dict[str, object], now: float, expected: float | None) -> None:
    assert interval_seconds(make_probe(**kwargs), now) == expected  # type: ignore[arg-type]
