"""An agent restart keeps consecutive failures and transition times (from ProbeStatus)."""

from __future__ import annotations

from typing import Any

import pytest

from kubeprober.exporter.kube.restore import check_states, parse_time
from kubeprober.kube.api import KubeApi
from kubeprober.probers.status import Status
from tests.exporter.kube.conftest import (
    AgentFactory,
    checks_by_name,
    create_probe,
    eventually,
    probe_body,
    probe_status,
    tcp_check,
)


async def test_restart_keeps_counters_and_transition_time(
    start_agent: AgentFactory, kube: KubeApi, kube_namespace: str, closed_port: int
) -> None:
    first = await start_agent()
    body = probe_body("down", [tcp_check("db", closed_port)], interval="200ms")
    await create_probe(kube, kube_namespace, body)

    async def failing(at_least: int) -> dict[str, Any] | None:
        check = checks_by_name(await probe_status(kube, kube_namespace, "down")).get("db")
        return check if check and check["consecutiveFailures"] >= at_least else None

    await eventually(lambda: failing(3), what="three failures written")
    await first.stop()
    before = checks_by_name(await probe_status(kube, kube_namespace, "down"))["db"]

    second = await start_agent()
    # Restored before the first run: the store already holds the written state.
    state = second.store.get((kube_namespace, "down"))
    assert state is not None
    restored = state.checks["db"]
    assert restored.consecutive_failures >= before["consecutiveFailures"]
    assert restored.result is not None and restored.result.status is Status.ERROR

    after = await eventually(
        lambda: failing(before["consecutiveFailures"] + 1), what="the second agent's write"
    )
    assert after["lastTransitionTime"] == before["lastTransitionTime"]
    assert second.mode.statuses.stats.creates == 0  # found, not created again


def test_check_states_from_status() -> None:
    states = check_states(
        {
            "checks": [
                {
                    "name": "a",
                    "status": "ERROR",
                    "message": "refused",
                    "lastRun": "2026-11-26T13:00:00Z",
                    "durationSeconds": 0.25,
                    "consecutiveFailures": 7,
                    "lastTransitionTime": "2026-11-26T12:00:00Z",
                },
                {"name": "never", "status": "UNKNOWN", "lastRun": None},
                {"name": "odd", "status": "MAYBE", "lastRun": "2026-11-26T13:00:00Z"},
                "junk",
            ]
        }
    )
    assert list(states) == ["a"]
    a = states["a"]
    assert a.consecutive_failures == 7
    assert a.result is not None and a.result.status is Status.ERROR
    assert a.result.started_at == parse_time("2026-11-26T13:00:00Z")
    assert a.result.duration == 0.25
    assert a.last_transition == a.result.started_at - 3600
    assert a.last_success is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:10Z", 10.0),
        ("1970-01-01T00:00:10.5Z", 10.5),
        ("1970-01-01T01:00:10+01:00", 10.0),
        ("yesterday", None),
        ("", None),
        (None, None),
        (12, None),
    ],
)
def test_parse_time(text: object, expected: float | None) -> None:
    assert parse_time(text) == expected
