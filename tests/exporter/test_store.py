"""The result store: per-check history, probe-set changes and restored states."""

from __future__ import annotations

import itertools

import pytest

from kubeprober.exporter.store import HISTORY_LENGTH, CheckState, ResultStore
from kubeprober.probers.result import CheckResult
from kubeprober.probers.status import Status
from tests.exporter.fakes import check, make_probe

P, N, W, E, U = Status.PASS, Status.INFO, Status.WARN, Status.ERROR, Status.UNKNOWN  # N: iNfo


def result(status: Status, at: float, *, duration: float = 0.5, message: str = "") -> CheckResult:
    """A check result started at unix time ``at``."""
    return CheckResult(status=status, message=message, started_at=at, duration=duration)


@pytest.mark.parametrize(
    ("sequence", "failures", "last_success", "last_transition"),
    [
        ([P], 0, 100.0, 100.5),
        ([E], 1, None, 100.5),
        ([P, P, P], 0, 300.0, 100.5),
        ([P, E, U, E], 3, 100.0, 400.5),  # ERROR -> UNKNOWN -> ERROR: each a transition
        ([E, E, P], 0, 300.0, 300.5),
        ([P, W, N], 0, 300.0, 300.5),  # WARN and INFO are successes
        ([U, U], 2, None, 100.5),
        ([E, W, E], 1, 200.0, 300.5),
    ],
)
def test_check_state_history(
    sequence: list[Status],
    failures: int,
    last_success: float | None,
    last_transition: float | None,
) -> None:
    state = CheckState()
    changes = [state.record(result(s, 100.0 * (i + 1))) for i, s in enumerate(sequence)]
    assert state.consecutive_failures == failures
    assert state.last_success == last_success
    assert state.last_transition == last_transition
    assert changes[0] is True  # the first result counts as a change
    assert changes[1:] == [a is not b for a, b in itertools.pairwise(sequence)]
    assert state.runs == {s: sequence.count(s) for s in Status}
    assert state.result is not None
    assert state.result.status is sequence[-1]


def test_history_keeps_the_last_results_oldest_first() -> None:
    state = CheckState()
    results = [result(E if i % 3 else P, 100.0 + i) for i in range(HISTORY_LENGTH + 5)]
    for r in results:
        state.record(r)
    assert list(state.history) == results[-HISTORY_LENGTH:]
    assert state.history[-1] is state.result


def test_a_state_restored_with_its_last_result_starts_its_history_there() -> None:
    restored = CheckState(result=result(E, 50))
    assert list(restored.history) == [restored.result]
    assert list(CheckState().history) == []


def test_new_check_state_is_empty() -> None:
    state = CheckState()
    assert state.result is None
    assert state.consecutive_failures == 0
    assert state.runs == dict.fromkeys(Status, 0)
    assert CheckState().runs is not state.runs  # not shared between instances


def test_record_returns_transitions() -> None:
    store = ResultStore()
    probe = make_probe(checks=(check("a"), check("b")))
    store.set_probes([probe])
    first = store.record(probe.key, {"a": result(P, 1), "b": result(E, 1, message="x")}, duration=1)
    assert [(t.check, t.previous, t.current, t.message) for t in first] == [
        ("a", None, P, ""),
        ("b", None, E, "x"),
    ]
    assert (first[0].namespace, first[0].probe) == ("default", "p")
    again = store.record(probe.key, {"a": result(P, 2), "b": result(U, 2, message="y")}, duration=1)
    assert [(t.check, t.previous, t.current) for t in again] == [("b", E, U)]
    state = store.get(probe.key)
    assert state is not None
    assert state.duration == 1
    assert state.last_run == 2


def test_record_for_unknown_probe_or_check_is_ignored() -> None:
    store = ResultStore()
    probe = make_probe()
    store.set_probes([probe])
    assert store.record(("default", "gone"), {"c": result(P, 1)}, duration=1) == []
    assert store.record(probe.key, {"other": result(P, 1)}, duration=1) == []
    state = store.get(probe.key)
    assert state is not None
    assert list(state.checks) == ["c"]
    assert state.checks["c"].result is None


def test_revision_moves_on_every_change() -> None:
    store = ResultStore()
    probe = make_probe()
    seen = [store.revision]
    store.set_probes([probe])
    seen.append(store.revision)
    store.record(probe.key, {"c": result(P, 1)}, duration=1)
    seen.append(store.revision)
    store.count_skipped(probe.key)
    seen.append(store.revision)
    store.restore({})
    seen.append(store.revision)
    assert seen == sorted(set(seen))


def test_set_probes_keeps_history_of_remaining_checks() -> None:
    store = ResultStore()
    old = make_probe(checks=(check("a"), check("b")), interval=30)
    store.set_probes([old, make_probe("other")])
    store.record(old.key, {"a": result(E, 1), "b": result(P, 1)}, duration=1)
    store.count_skipped(old.key)
    new = make_probe(checks=(check("c"), check("a", message="v2")), interval=60)
    store.set_probes([new])
    assert [s.probe.key for s in store] == [("default", "p")]
    state = store.get(new.key)
    assert state is not None
    assert state.probe is new
    assert list(state.checks) == ["a", "c"]
    assert state.checks["a"].consecutive_failures == 1
    assert state.checks["a"].runs[E] == 1
    assert state.checks["c"].result is None
    assert state.skipped_runs == 1
    assert store.get(("default", "other")) is None


def test_iteration_is_sorted_by_key() -> None:
    store = ResultStore()
    store.set_probes([make_probe("b"), make_probe("a", namespace="z"), make_probe("a")])
    assert [s.probe.key for s in store] == [("default", "a"), ("default", "b"), ("z", "a")]


def test_schedule_and_skips() -> None:
    store = ResultStore()
    probe = make_probe()
    store.set_probes([probe])
    store.set_schedule(probe.key, next_run=123.0, interval=30.0)
    store.count_skipped(probe.key)
    store.count_skipped(probe.key)
    store.set_schedule(("default", "nope"), next_run=1.0, interval=1.0)  # no error
    store.count_skipped(("default", "nope"))
    state = store.get(probe.key)
    assert state is not None
    assert (state.next_run, state.interval, state.skipped_runs) == (123.0, 30.0, 2)


def saved(status: Status, at: float, failures: int) -> CheckState:
    """A check state as restored from disk or ProbeStatus."""
    runs = dict.fromkeys(Status, 0)
    runs[status] = failures or 1
    return CheckState(
        result=result(status, at), consecutive_failures=failures, last_transition=at, runs=runs
    )


def test_restore_before_probes_are_defined() -> None:
    store = ResultStore()
    store.restore({("default", "p"): {"c": saved(E, 50, 4), "gone": saved(P, 50, 0)}})
    assert list(store) == []  # restored states alone define nothing
    store.set_probes([make_probe()])
    state = store.get(("default", "p"))
    assert state is not None
    assert state.checks["c"].consecutive_failures == 4
    assert state.last_run == 50
    assert list(state.checks) == ["c"]  # a check no longer defined is not resurrected


def test_restore_after_probes_are_defined() -> None:
    store = ResultStore()
    store.set_probes([make_probe(), make_probe("q")])
    store.restore({("default", "p"): {"c": saved(U, 60, 2)}})
    state = store.get(("default", "p"))
    assert state is not None
    assert state.checks["c"].consecutive_failures == 2
    assert state.checks["c"].runs[U] == 2
    # the next run continues the restored history
    store.record(("default", "p"), {"c": result(E, 70)}, duration=1)
    assert state.checks["c"].consecutive_failures == 3
    assert state.checks["c"].last_transition == 70.5


def test_restore_does_not_overwrite_newer_results() -> None:
    store = ResultStore()
    probe = make_probe()
    store.set_probes([probe])
    store.record(probe.key, {"c": result(P, 100)}, duration=1)
    store.restore({probe.key: {"c": saved(E, 50, 9)}})
    state = store.get(probe.key)
    assert state is not None
    assert state.checks["c"].consecutive_failures == 0
    assert state.last_run == 100


def test_restored_states_wait_for_a_probe_defined_later() -> None:
    store = ResultStore()
    store.restore({("default", "late"): {"c": saved(E, 5, 1)}})
    store.set_probes([make_probe("early")])
    store.set_probes([make_probe("early"), make_probe("late")])
    state = store.get(("default", "late"))
    assert state is not None
    assert state.checks["c"].consecutive_failures == 1
