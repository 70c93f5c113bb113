"""Bad ``POST /report`` bodies: any JSON gives a report or one line naming the fault, never 500."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeprober.probers.report import Report, ReportError, parse_report
from tests.exporter.report_server import serve_reports

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["PASS", "WARN", "FAIL", "UNKNOWN", "error", "2026-12-04T10:00:00Z"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "checks",
                    "checkers",
                    "name",
                    "status",
                    "message",
                    "lastRun",
                    "probeName",
                    "probeNamespace",
                    "x",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_any_json_is_a_report_or_a_report_error(body: object) -> None:
    try:
        report = parse_report(body)
    except ReportError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(report, Report) and report.checks


@pytest.mark.parametrize("opener", ["[", '{"a":'])
async def test_a_deeply_nested_body_is_400_not_a_crash(
    opener: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = (opener * 12_000).encode()  # under the size limit, far past Python's recursion
    async with serve_reports() as server, aiohttp.ClientSession() as session:
        server.runs.open(("shop", "checkout"), ("login",))
        async with session.post(
            f"{server.url}/report", data=body, headers={"Authorization": "Bearer t"}
        ) as answer:
            assert answer.status == 400
            error = (await answer.json())["error"]
    assert error.startswith("bad report: ") and "\n" not in error
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
