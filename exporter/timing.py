"""When a probe runs next: cron (with time zones), interval or once, plus jitter.

Pure functions of the probe and a wall-clock time, so tests drive them with any clock.
"""

from __future__ import annotations

import random
import zlib
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from kubeprober.probers.probe import Probe

START_SPREAD = 10.0
"""Interval probes first run within this many seconds of being loaded, at an offset taken
from their name: hundreds of probes then do not all fire in one burst every interval, a
restart keeps each probe's phase, and a new probe still shows a result within seconds.
Cron probes with a check that has no result yet make the same first run, so they are
pending for seconds, not until their first firing (which may be hours away)."""


def next_cron(schedule: str, time_zone: str | None, after: float) -> float:
    """Return the first cron firing strictly after unix time ``after``, in ``time_zone``."""
    tz = ZoneInfo(time_zone) if time_zone else UTC
    start = datetime.fromtimestamp(after, tz)
    # croniter takes the zone from the start datetime, so DST shifts follow the probe's zone.
    return float(croniter(schedule, start).get_next(float))


def next_due(
    probe: Probe, *, previous: float | None, now: float, pending: bool = False
) -> float | None:
    """Return the unjittered time of the next run, or None when the probe should not run again.

    ``previous`` is the last planned run time (None before the first). Intervals are
    anchored on the plan, not on when runs finish, so a probe does not drift; planned
    times already in the past are skipped rather than fired in a burst. A cron probe runs
    once at its start offset before its schedule when ``pending`` (one of its checks has no
    result yet, as after its definition, but not after a restart that restored its results).
    """
    if probe.suspend:
        return None
    if probe.schedule is not None:
        if previous is None and pending:
            return now + start_offset(probe)
        return next_cron(probe.schedule, probe.time_zone, max(now, previous or now))
    if probe.interval is not None:
        if previous is None:
            return now + start_offset(probe)
        due = previous + probe.interval
        if due < now:
            missed = int((now - due) // probe.interval)
            due += missed * probe.interval
        return due
    return now if previous is None else None


def jitter(probe: Probe, rng: random.Random) -> float:
    """Return this run's random delay, up to ``spec.jitter`` seconds."""
    return rng.uniform(0.0, probe.jitter) if probe.jitter > 0 else 0.0


def interval_seconds(probe: Probe, now: float) -> float | None:
    """Seconds between runs: the interval, or for cron the gap between its next two firings."""
    if probe.interval is not None:
        return probe.interval
    if probe.schedule is not None:
        first = next_cron(probe.schedule, probe.time_zone, now)
        return next_cron(probe.schedule, probe.time_zone, first) - first
    return None


def start_offset(probe: Probe) -> float:
    """Return a stable offset in ``[0, min(interval, START_SPREAD))`` from the probe's name.

    Cron probes take one in ``[0, START_SPREAD)``; probes that run once start at once.
    """
    if probe.interval is not None:
        spread = min(probe.interval, START_SPREAD)
    elif probe.schedule is not None:
        spread = START_SPREAD
    else:
        return 0.0
    fraction = zlib.crc32(f"{probe.namespace}/{probe.name}".encode()) / 2**32
    return fraction * spread
