"""The scheduler on a real event loop: repeated runs, no overlap, live probe-set changes, stop.

Its wall clock is a FakeClock the tests move by hand, so "the run at 10 s" happens when the
test says and lags are exact; probers still run on the real loop.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from kubeprober.exporter.scheduler import Scheduler, SchedulerSettings
from kubeprober.exporter.store import CheckState, ProbeState, ResultStore
from kubeprober.exporter.timing import START_SPREAD, next_cron, start_offset
from kubeprober.probers.probe import Probe
from kubeprober.probers.result import CheckResult
from kubeprober.probers.status import Status
from tests.exporter import fakes
from tests.exporter.fakes import FakeClock, Tracker, check, make_probe


@dataclass
class Harness:
    """A scheduler, its store, its clock and the lags it observed."""

    store: ResultStore
    scheduler: Scheduler
    clock: FakeClock
    lags: list[float] = field(default_factory=list)


def make_harness(max_concurrency: int = 50) -> Harness:
    """Build a scheduler over a fresh store with the fake prober and a fake clock."""
    store = ResultStore()
    harness = Harness(store, None, FakeClock())  # type: ignore[arg-type]  # set just below
    harness.scheduler = Scheduler(
        store,
        fakes.probers_map(),
        settings=SchedulerSettings(max_concurrency=max_concurrency),
        observe_lag=harness.lags.append,
        rng=random.Random(1),
        clock=harness.clock,
    )
    return harness


def leftover(before: set[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    """Tasks alive now that were not before, except the one asking."""
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t not in before and t is not current}


async def stop(harness: Harness) -> None:
    """Stop the scheduler, failing (not hanging) if that takes more than a second."""
    async with asyncio.timeout(1.0):
        await harness.scheduler.stop()


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    """A running scheduler, stopped after the test whatever happens."""
    before = asyncio.all_tasks()
    harness = make_harness()
    yield harness
    await stop(harness)
    assert leftover(before) == set()


def runs(store: ResultStore, probe: Probe, name: str = "c") -> int:
    """Total recorded runs of one check."""
    state = store.get(probe.key)
    assert state is not None
    return sum(state.checks[name].runs.values())


def state_of(store: ResultStore, probe: Probe) -> ProbeState:
    """Return the probe's state, failing when it is not in the store."""
    state = store.get(probe.key)
    assert state is not None
    return state


async def until(condition: Callable[[], bool], within: float = 2.0) -> None:
    """Wait until ``condition()`` holds, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_interval_probe_runs_on_its_plan_and_lags_are_measured(h: Harness) -> None:
    tracker = Tracker()
    probe = make_probe(checks=(check(tracker=tracker),), interval=10.0)
    h.scheduler.apply([probe])
    loaded = h.clock.now()
    due = await h.clock.sleeping_past(loaded)
    assert loaded <= due < loaded + 10  # the first run within the start spread
    for n, late in enumerate((0.0, 0.5, 3.0), start=1):
        h.clock.advance(due - h.clock.now() - 0.001)
        assert h.clock.sleepers == [due]  # not woken a moment early
        h.clock.advance(0.001 + late)
        await until(lambda n=n: runs(h.store, probe) == n)  # type: ignore[misc]
        # The next run is planned from the plan, not from when this one happened: no drift.
        due = await h.clock.sleeping_past(due)
        assert due == pytest.approx(loaded + (due - loaded) % 10 + 10 * n)
        assert state_of(h.store, probe).next_run == due
    assert h.lags == pytest.approx([0.0, 0.5, 3.0])
    assert tracker.calls == 3
    assert state_of(h.store, probe).checks["c"].runs[Status.PASS] == 3


async def test_missed_slots_are_not_fired_in_a_burst(h: Harness) -> None:
    tracker = Tracker()
    probe = make_probe(checks=(check(tracker=tracker),), interval=10.0)
    h.scheduler.apply([probe])
    first = await h.clock.sleeping_past(h.clock.now())
    h.clock.advance(first - h.clock.now() + 35.0)  # woken 3.5 intervals late
    # The late slot, then only the latest missed one (at +30 s), then back on the plan.
    assert await h.clock.sleeping_past(first) == pytest.approx(first + 40.0)
    assert h.lags == pytest.approx([35.0, 5.0])
    await until(lambda: runs(h.store, probe) == 1)
    assert tracker.calls + state_of(h.store, probe).skipped_runs == 2


async def test_schedule_facts_are_recorded(h: Harness) -> None:
    interval = make_probe("i", interval=10.0)
    cron = make_probe("cron", schedule="* * * * *")
    h.scheduler.apply([interval, cron])
    now = h.clock.now()
    cron_first = now + start_offset(cron)
    assert sorted(await h.clock.sleeping(2)) == sorted(
        [cron_first, state_of(h.store, interval).next_run or 0.0]
    )
    i_state, c_state = state_of(h.store, interval), state_of(h.store, cron)
    # No result yet: the cron probe's first run is at its start offset, then every minute.
    assert i_state.interval == 10.0
    assert i_state.next_run is not None and now <= i_state.next_run < now + 10
    assert (c_state.interval, c_state.next_run) == (60.0, cron_first)
    assert now <= cron_first < now + START_SPREAD
    assert c_state.checks["c"].result is None  # not run yet


async def test_cron_probe_runs_at_start_unless_its_results_were_restored(h: Harness) -> None:
    yearly = "0 3 1 1 *"  # its next firing is months away
    tracker = Tracker()
    fresh = make_probe("fresh", checks=(check(tracker=tracker),), schedule=yearly)
    h.scheduler.apply([fresh])
    loaded = h.clock.now()
    (first,) = await h.clock.sleeping(1)
    assert first == loaded + start_offset(fresh) < loaded + START_SPREAD
    h.clock.advance(first - h.clock.now())
    await until(lambda: runs(h.store, fresh) == 1)
    # Then it keeps to its schedule.
    assert await h.clock.sleeping_past(first) == next_cron(yearly, None, first)

    # Its results restored (an agent restart): no run at start, the schedule's firing next.
    restored = make_probe("restored", checks=(check(tracker=Tracker()),), schedule=yearly)
    saved = CheckState(result=CheckResult(Status.PASS, "", loaded - 60, 0.1))
    h.store.restore({restored.key: {"c": saved}})
    h.scheduler.apply([fresh, restored])
    firing = next_cron(yearly, None, h.clock.now())
    assert await h.clock.sleeping(2) == [firing, firing]
    assert state_of(h.store, restored).next_run == firing


async def test_overlapping_runs_are_skipped_and_counted(h: Harness) -> None:
    tracker = Tracker()
    probe = make_probe(checks=(check(hang=True, timeout=60.0, tracker=tracker),), interval=10.0)
    h.scheduler.apply([probe])
    due = await h.clock.sleeping_past(h.clock.now())
    h.clock.advance(due - h.clock.now())
    await until(lambda: tracker.in_flight == 1)
    for skipped in range(1, 4):
        h.clock.advance(10.0)
        due = await h.clock.sleeping_past(due)
        assert state_of(h.store, probe).skipped_runs == skipped
    assert (tracker.calls, tracker.max_in_flight) == (1, 1)  # never overlaps itself


async def _flush(h: Harness) -> None:
    """Run a run-once probe and wait for it: anything due before it has happened by then."""
    marker = Tracker()
    h.scheduler.apply([*(s.probe for s in h.store), make_probe("marker", (check(tracker=marker),))])
    await until(lambda: marker.finished == 1)


async def test_run_once_probe_runs_exactly_once(h: Harness) -> None:
    tracker = Tracker()
    probe = make_probe(checks=(check(tracker=tracker),))
    h.scheduler.apply([probe])
    await until(lambda: tracker.finished == 1)
    h.scheduler.apply([probe])  # re-applying the same set does not run it again
    h.clock.advance(3600.0)
    await _flush(h)
    assert tracker.calls == 1
    assert runs(h.store, probe) == 1
    assert state_of(h.store, probe).next_run is None
    assert h.clock.sleepers == []


async def test_suspended_probe_never_runs(h: Harness) -> None:
    tracker = Tracker()
    probe = make_probe(checks=(check(tracker=tracker),), interval=10.0, suspend=True)
    h.scheduler.apply([probe])
    await _flush(h)
    assert h.clock.sleepers == []  # no run is planned at all
    h.clock.advance(3600.0)
    await _flush(h)
    assert tracker.calls == 0
    assert state_of(h.store, probe).next_run is None
    # No interval either: nothing is due, so the stale-probe alert must not count intervals.
    assert state_of(h.store, probe).interval is None


async def test_suspend_stops_runs_and_keeps_results(h: Harness) -> None:
    tracker = Tracker()
    probe = make_probe(checks=(check(tracker=tracker),), interval=10.0)
    h.scheduler.apply([probe])
    due = await h.clock.sleeping_past(h.clock.now())
    for n in (1, 2):
        h.clock.advance(due - h.clock.now())
        await until(lambda n=n: tracker.finished == n)  # type: ignore[misc]
        due = await h.clock.sleeping_past(due)
    suspended = make_probe(checks=probe.checks, interval=10.0, suspend=True)
    h.scheduler.apply([suspended])
    h.clock.advance(3600.0)
    await _flush(h)
    assert tracker.calls == 2
    assert h.clock.sleepers == []
    state = state_of(h.store, suspended)
    assert state.probe.suspend is True
    assert state.next_run is None
    assert state.interval is None
    assert state.checks["c"].result is not None  # the last result stays visible


async def test_apply_adds_removes_and_changes_without_restarting_unchanged(h: Harness) -> None:
    # Run-once probes start at once and never repeat: a restart shows up as a second run.
    t_keep, t_change, t_drop, t_new = Tracker(), Tracker(), Tracker(), Tracker()
    keep = make_probe("keep", (check(tracker=t_keep),))
    change = make_probe("change", (check(tracker=t_change),))
    drop = make_probe("drop", (check(tracker=t_drop, delay=0.05),))
    h.scheduler.apply([keep, change, drop])
    await until(lambda: bool(t_keep.finished and t_change.finished and t_drop.finished))
    kept_result = state_of(h.store, keep).checks["c"].result

    changed = make_probe("change", (check(tracker=t_change, message="v2"),))
    new = make_probe("new", (check(tracker=t_new),))
    h.scheduler.apply([keep, changed, new])
    await until(lambda: t_new.finished == 1 and t_change.finished == 2)
    await _flush(h)  # a restarted "keep" would have run before this

    assert t_keep.calls == 1  # unchanged: not restarted
    assert state_of(h.store, keep).checks["c"].result is kept_result
    assert t_change.calls == 2  # changed: restarted with the new spec
    assert state_of(h.store, changed).probe == changed
    assert runs(h.store, changed) == 2  # its history is kept across the change
    assert h.store.get(drop.key) is None  # removed: gone from the store
    assert t_drop.calls == 1
    assert [s.probe.name for s in h.store] == ["change", "keep", "marker", "new"]


async def test_removing_a_probe_cancels_its_hung_run(h: Harness) -> None:
    tracker = Tracker()
    probe = make_probe(checks=(check(timeout=5, hang=True, tracker=tracker),))
    h.scheduler.apply([probe])
    await until(lambda: tracker.in_flight == 1)
    h.scheduler.apply([])
    await until(lambda: tracker.in_flight == 0, 0.5)
    assert h.store.get(probe.key) is None
    assert list(h.store) == []


async def test_changed_check_set_keeps_history_of_remaining_checks(h: Harness) -> None:
    probe = make_probe(checks=(check("a"), check("b")))
    h.scheduler.apply([probe])
    await until(lambda: runs(h.store, probe, "a") == 1)
    changed = make_probe(checks=(check("a", status=Status.ERROR, message="x"), check("c")))
    h.scheduler.apply([changed])
    await until(lambda: runs(h.store, changed, "a") == 2)
    state = state_of(h.store, changed)
    assert list(state.checks) == ["a", "c"]
    assert state.checks["a"].runs[Status.PASS] == 1
    assert state.checks["a"].runs[Status.ERROR] == 1
    assert state.checks["a"].consecutive_failures == 1


async def test_global_concurrency_limit() -> None:
    before = asyncio.all_tasks()
    harness = make_harness(max_concurrency=2)
    tracker = Tracker()
    probes = [
        make_probe(f"p{i}", tuple(check(f"c{j}", delay=0.1, tracker=tracker) for j in range(3)))
        for i in range(3)
    ]
    try:
        harness.scheduler.apply(probes)
        await until(lambda: tracker.finished == 9, 3)
        assert tracker.max_in_flight == 2
    finally:
        await stop(harness)
    assert leftover(before) == set()


async def test_stop_leaves_no_tasks_even_mid_run() -> None:
    before = asyncio.all_tasks()
    harness = make_harness()
    tracker = Tracker()
    harness.scheduler.apply(
        [
            make_probe("hung", (check(timeout=5, hang=True, tracker=tracker),), interval=0.05),
            make_probe("busy", (check(delay=0.02),), interval=0.05),
            make_probe("once", (check(),)),
            make_probe("cron", schedule="* * * * *"),
        ]
    )
    await harness.clock.sleeping(3)  # hung, busy and cron wait for their first slot
    harness.clock.advance(START_SPREAD)  # the interval probes' first runs are due
    await until(lambda: tracker.in_flight == 1)
    harness.scheduler.apply([make_probe("busy", (check(delay=0.03),), interval=0.05)])
    await stop(harness)  # within a second: the hung run (5 s) is cancelled, not awaited
    assert leftover(before) == set()
    assert tracker.in_flight == 0
    await stop(harness)  # idempotent


async def test_results_and_transitions_are_recorded(h: Harness) -> None:
    probe = make_probe(
        checks=(
            check("ok"),
            check("bad", status=Status.ERROR, message="refused"),
            check("hung", timeout=0.2, hang=True),
        ),
    )
    h.scheduler.apply([probe])
    await until(lambda: state_of(h.store, probe).duration is not None)
    state = state_of(h.store, probe)
    results = {n: c.result for n, c in state.checks.items()}
    assert {n: r.status for n, r in results.items() if r} == {
        "bad": Status.ERROR,
        "hung": Status.UNKNOWN,
        "ok": Status.PASS,
    }
    assert state.duration is not None and 0.2 <= state.duration < 1.0  # the hung check's deadline
    assert state.checks["bad"].consecutive_failures == 1


async def test_check_of_a_missing_prober_ends_unknown(h: Harness) -> None:
    probe = make_probe(checks=(check("ok"), check("plugin", prober="not-installed")))
    h.scheduler.apply([probe])
    await until(lambda: state_of(h.store, probe).duration is not None)
    checks = state_of(h.store, probe).checks
    assert checks["ok"].result is not None
    assert checks["ok"].result.status is Status.PASS
    result = checks["plugin"].result
    assert result is not None
    assert (result.status, result.message) == (
        Status.UNKNOWN,
        "prober 'not-installed' is not installed",
    )
