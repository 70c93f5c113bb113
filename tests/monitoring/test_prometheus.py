"""The shipped rules and dashboards against the real thing: the demo fleet and a real Prometheus.

``kubeprober demo`` runs as a process; Prometheus (Debian's) scrapes its aggregator every
second with ``honor_labels: true`` and evaluates alerts/kubeprober.rules.yaml as shipped
(short scrape and evaluation intervals; no rule is changed). Everything is asserted through
Prometheus' HTTP API: each dashboard query returns data once the demo is in the state the panel
is about, the demo's failing checks are pending alerts with the right labels, and stopping one
agent makes its agent-down alert pending and mutes its check alerts.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.aggregator._fleet_harness import eventually
from tests.harness.prometheus import Prom, running_prometheus, start_process, stop_process
from tests.monitoring.promql import RULES, dashboards, grafana_expr, label_values, panel_targets

KUBEPROBER = str(Path(sys.executable).with_name("kubeprober"))
RATE_INTERVAL = "30s"
"""What Grafana would pass as $__rate_interval: it spans at least two of the aggregator's pulls."""
AGENT_DOWN_PANELS = {("fleet.json", "Agents down")}
"""Panels about an agent that is down: they have data only once one is."""
CHECK_ALERTS = ("KubeproberCheckFailing", "KubeproberCheckUnknown", "KubeproberCertificate.*")


def has_data(result: list[dict[str, Any]]) -> bool:
    """Whether a query result holds a number (NaN, as of a quantile of nothing, is not)."""
    return any(not math.isnan(float(series["value"][1])) for series in result)


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """``kubeprober demo`` on a free port; yields its demo.json."""
    state = tmp_path / "demo"
    proc = await start_process(
        KUBEPROBER, "demo", "--listen", "127.0.0.1:0", "--state-dir", str(state),
        "--duration", "300", log=tmp_path / "demo.log",
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )  # fmt: skip
    try:
        info_file = state / "demo.json"

        async def written() -> bool:
            return info_file.exists() and info_file.read_text().endswith("}\n")

        await eventually(written, bool, within=30, what="demo.json", every=0.2)
        info: dict[str, Any] = json.loads(info_file.read_text())
        info["state"] = state
        yield info
    finally:
        await stop_process(proc)  # the demo stops its agents


@pytest.fixture
async def prometheus(tmp_path: Path, demo: dict[str, Any]) -> AsyncIterator[Prom]:
    """A real Prometheus scraping the demo's aggregator, with the shipped rules loaded."""
    job = {
        "job_name": "kubeprober-aggregator",
        "honor_labels": True,
        "scheme": "https",
        "tls_config": {"ca_file": demo["ca"]},
        "static_configs": [{"targets": [demo["aggregator"].removeprefix("https://")]}],
    }
    async with running_prometheus(tmp_path, [job], rule_files=(RULES,)) as prom:
        yield prom


def queries(*, about_agent_down: bool) -> dict[str, str]:
    """Every dashboard query as Grafana sends it (All selected), by where it is."""
    found = {}
    for name, board in dashboards().items():
        for panel, target in panel_targets(board):
            if ((name, panel["title"]) in AGENT_DOWN_PANELS) is about_agent_down:
                where = f"{name}: {panel['title']} ({target['refId']})"
                found[where] = grafana_expr(target["expr"], rate_interval=RATE_INTERVAL)
    return found


async def without_data(prom: Prom, exprs: dict[str, str]) -> list[str]:
    """The queries that return no number now."""
    results = await asyncio.gather(*(prom.query(e) for e in exprs.values()))
    return [where for where, result in zip(exprs, results, strict=True) if not has_data(result)]


@pytest.mark.slow
async def test_rules_and_dashboards_on_the_demo_fleet(
    demo: dict[str, Any], prometheus: Prom
) -> None:
    prom = prometheus
    # The demo's failing checks: mars's database is ERROR, venus's payments probe is UNKNOWN,
    # and the aggregator's certificate (10 days left) is about to expire on every cluster.
    failing = await eventually(
        lambda: prom.alerts("KubeproberCheckFailing", "mars"),
        bool,
        within=30,
        what="KubeproberCheckFailing on mars",
        every=0.5,
    )
    (alert,) = failing
    assert alert["alertstate"] in {"pending", "firing"}
    expected = {"severity": "critical", "namespace": "default", "probe": "orders-db"}
    expected |= {"check": "postgres-port", "layer": "middleware", "status": "ERROR"}
    assert expected.items() <= alert.items()
    (notes,) = await prom.annotations("KubeproberCheckFailing", "mars")
    assert "Check postgres-port of probe default/orders-db on cluster mars" in notes["description"]
    assert notes["runbook_url"] == "docs/runbooks.md#kubeprobercheckfailing"
    (unknown,) = await eventually(
        lambda: prom.alerts("KubeproberCheckUnknown", "venus"), bool, within=15, what="UNKNOWN"
    )
    assert (unknown["probe"], unknown["check"], unknown["severity"]) == (
        "payments",
        "checkout",
        "warning",
    )
    await eventually(
        lambda: prom.query('ALERTS{alertname="KubeproberCertificateExpiringSoon"}'),
        lambda found: {r["metric"]["cluster"] for r in found} == {"moon", "mars", "venus"},
        within=15,
        what="the expiring certificate on every cluster",
    )
    assert not await prom.query('ALERTS{alertname=~"KubeproberAgentDown|.*Absent"}')

    # Every panel's query has data in the demo's state (rates once two pulls are in).
    await eventually(
        lambda: without_data(prom, queries(about_agent_down=False)),
        lambda missing: not missing,
        within=25,
        what="every dashboard query to return data",
        every=1,
    )

    # Every variable of every dashboard offers values.
    for name, board in dashboards().items():
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                selector, label = label_values(var)
                found = await prom.query(f"count by ({label}) ({grafana_expr(selector)})")
                assert found, f"{name}: variable {var['name']} has no values"

    # The agent-down panels are empty while every agent is up...
    assert await without_data(prom, queries(about_agent_down=True)) == list(
        queries(about_agent_down=True)
    )

    # ...until mars's agent stops for good (the demo starts it again, but without its token
    # it cannot connect).
    pids = {a["cluster"]: a["pid"] for a in demo["agents"]}
    (demo["state"] / "mars" / "token").unlink()
    os.kill(pids["mars"], signal.SIGKILL)
    (down,) = await eventually(
        lambda: prom.alerts("KubeproberAgentDown", "mars"), bool, within=15, what="agent down"
    )
    assert (down["alertstate"], down["severity"]) == ("pending", "critical")
    for name in CHECK_ALERTS:  # mars's check alerts are muted; the other clusters' stay
        assert await prom.alerts(name, "mars") == [], name
    assert await prom.alerts("KubeproberCheckUnknown", "venus")
    assert await prom.alerts("KubeproberCertificateExpiringSoon", "moon")
    assert not await without_data(prom, queries(about_agent_down=True))
    agents_down = await prom.query(grafana_expr('kubeprober_agent_up{cluster=~"$cluster"} == 0'))
    assert [r["metric"]["cluster"] for r in agents_down] == ["mars"]
