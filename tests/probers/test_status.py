"""Statuses: severity order, roll-up, summaries and monitoring-plugin exit codes."""

from __future__ import annotations

import itertools

import pytest

from kubeprober.probers.status import BY_SEVERITY, Status, Summary, worst

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


@pytest.mark.parametrize("empty", [P, U])
def test_worst_of_nothing_is_the_empty_value(empty: Status) -> None:
    assert worst([], empty=empty) is empty


def test_worst_of_nothing_defaults_to_pass() -> None:
    assert worst([]) is P


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
    assert summary.total == 6
    assert summary.by_status == {P: 3, N: 1, W: 1, E: 1, U: 0}


@pytest.mark.parametrize(
    ("statuses", "empty", "expected"),
    [
        ([], P, {"status": "PASS", "total": 0}),
        ([], U, {"status": "UNKNOWN", "total": 0}),
        ([P, N], P, {"status": "INFO", "total": 2}),
        ([U, N, P], P, {"status": "UNKNOWN", "total": 3}),
        ([W, U], P, {"status": "WARN", "total": 2}),
    ],
)
def test_summary_roll_up(
    statuses: list[Status], empty: Status, expected: dict[str, object]
) -> None:
    doc = Summary.of(statuses, empty=empty).to_json()
    assert {k: doc[k] for k in ("status", "total")} == expected


def test_summary_to_json_shape() -> None:
    doc = Summary.of(iter([U, U, P])).to_json()
    assert doc == {
        "status": "UNKNOWN",
        "total": 3,
        "byStatus": {"PASS": 1, "INFO": 0, "WARN": 0, "ERROR": 0, "UNKNOWN": 2},
    }
    assert list(doc) == ["status", "total", "byStatus"]
    by_status = doc["byStatus"]
    assert isinstance(by_status, dict)
    assert all(type(k) is str for k in by_status)  # JSON keys, not enum members
