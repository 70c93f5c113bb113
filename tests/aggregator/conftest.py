"""Aggregator tests: each test's reports are kept on it, so a fixture can tell it failed."""

from __future__ import annotations

from collections.abc import Generator

import pytest

REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep the report of each phase (setup, call) on the test item."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


def failed(request: pytest.FixtureRequest) -> bool:
    """Whether the test of ``request`` failed (in its setup or its body), for a fixture's
    teardown."""
    reports = request.node.stash.get(REPORTS, {})
    return any(r.failed for r in reports.values())
