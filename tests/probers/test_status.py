"""Statuses: severity order, roll-up, summaries and monitoring-plugin exit codes."""

from __future__ import annotations

import itertools

import pytest

from kubeprober.probers.status import BY_SEVERITY, Status, Summary, exit_code, shown, worst

P, N, W, E, U = Status.PASS, Status.INFO, Status.WARN, Status.ERROR, Status.UNKNOWN  # N: iNfo


def test_severity_order_is_error_warn_unknown_info_pass() -> None:
    assert sorted(Status, key=lambda s: s.severity, reverse=True) == [E, W, U, N, P]
    assert BY_SEVERITY == (E, W, U, N, P)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([P], P),
        ([P, N], N),
        ([N, U], U),
        ([U, W], W),
        ([W, E], E),
        ([E, U, W, N, P], E),
        ([P, P, U, P], U),
        ([N, W, N], W),
        ([U, N, P], U),
    ],
)
def test_worst(statuses: list[Status], expected: Status) -> None:
    assert worst(statuses) is expected
    assert worst(reversed(statuses)) is expected
    assert worst(iter(statuses)) is expected


@pytest.mark.parametrize(("a", "b"), list(itertools.permutations(list(Status), 2)))
def test_worst_of_pairs_follows_the_order(a: Status, b: Status) -> None:
    order = [E, W, U, N, P]
    assert worst([a, b]) is (a if order.index(a) < order.index(b) else b)


def test_worst_of_nothing_is_none() -> None:
    assert worst([]) is None


@pytest.mark.parametrize(
    ("status", "code", "success"),
    [(P, 0, True), (N, 0, True), (W, 1, True), (E, 2, False), (U, 3, False)],
)
def test_exit_code_and_success(status: Status, code: int, success: bool) -> None:
    assert status.exit_code == code
    assert status.is_success is success


def test_values_are_the_upper_case_names() -> None:
    assert [s.value for s in Status] == ["PASS", "INFO", "WARN", "ERROR", "UNKNOWN"]
    assert Status("WARN") is W
    assert f"{E}" == "ERROR"
    with pytest.raises(ValueError):
        Status("pass")


def test_summary_counts_every_status() -> None:
    summary = Summary.of([P, P, W, E, P, N])
    assert summary.status is E
    assert (summary.total, summary.pending) == (6, 0)
    assert summary.by_status == {P: 3, N: 1, W: 1, E: 1, U: 0}


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        # Nothing checked is neither PASS nor UNKNOWN: no status at all.
        ([], {"status": None, "total": 0, "pending": 0}),
        ([None, None], {"status": None, "total": 2, "pending": 2}),
        # The status is over the checks that have a result; pending ones only add up.
        ([None, P], {"status": "PASS", "total": 2, "pending": 1}),
        ([P, N], {"status": "INFO", "total": 2, "pending": 0}),
        ([U, N, P], {"status": "UNKNOWN", "total": 3, "pending": 0}),
        ([W, None, U], {"status": "WARN", "total": 3, "pending": 1}),
    ],
)
def test_summary_roll_up(statuses: list[Status | None], expected: dict[str, object]) -> None:
    doc = Summary.of(statuses).to_json()
    assert {k: doc[k] for k in ("status", "total", "pending")} == expected


def test_summary_to_json_shape() -> None:
    doc = Summary.of(iter([U, U, P, None])).to_json()
    assert doc == {
        "status": "UNKNOWN",
        "total": 4,
        "pending": 1,
        "byStatus": {"PASS": 1, "INFO": 0, "WARN": 0, "ERROR": 0, "UNKNOWN": 2},
    }
    assert list(doc) == ["status", "total", "pending", "byStatus"]
    by_status = doc["byStatus"]
    assert isinstance(by_status, dict)
    assert all(type(k) is str for k in by_status)  # JSON keys, not enum members


@pytest.mark.parametrize(
    ("status", "pending", "word", "code"),
    [
        (P, 0, "PASS", 0),
        (W, 2, "WARN", 1),
        (U, 0, "UNKNOWN", 3),
        (None, 3, "pending", 3),
        (None, 0, "no checks", 3),
    ],
)
def test_shown_word_and_exit_code(
    status: Status | None, pending: int, word: str, code: int
) -> None:
    assert shown(None if status is None else status.value, pending=pending) == word
    assert exit_code(status) == code
