"""What a user sees through the real kubectl: printer columns, the category, described Events."""

from __future__ import annotations

import asyncio
import subprocess

from tests.exporter.kube.conftest import CRD_DIR, AgentFactory, eventually
from tests.harness.kubectl import Kubectl

PROBES_YAML = """\
apiVersion: kubeprober.io/v1
kind: Probe
metadata:
  name: web
spec:
  layer: application
  checks:
  - name: up
    prober: tcp
    with: {{host: 127.0.0.1, port: {open_port}}}
  - name: down
    prober: tcp
    with: {{host: 127.0.0.1, port: {closed_port}}}
---
apiVersion: kubeprober.io/v1
kind: Probe
metadata:
  name: fine
spec:
  layer: middleware
  checks:
  - name: up
    prober: tcp
    with: {{host: 127.0.0.1, port: {open_port}}}
"""


async def _run(kubectl: Kubectl, *args: str, stdin: str | None = None) -> str:
    # kubectl blocks; the agent shares this event loop, so run it in a thread.
    proc: subprocess.CompletedProcess[str] = await asyncio.to_thread(kubectl, *args, input=stdin)
    return proc.stdout


def _rows(table: str) -> dict[str, dict[str, str]]:
    """Parse kubectl's column output into rows by NAME, cells by header."""
    lines = [line for line in table.splitlines() if line.strip()]
    header = lines[0]
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    # Header cells may hold a space ("LAST RUN"): cut at column starts, not at spaces.
    starts = [s for s in starts if not (s > 0 and header[s - 2 : s] != "  ")]
    bounds = [*starts[1:], None]
    rows = {}
    for line in lines[1:]:
        cells = {
            header[a:b].strip(): line[a:b].strip() for a, b in zip(starts, bounds, strict=True)
        }
        rows[cells["NAME"]] = cells
    return rows


async def test_kubectl_shows_results(
    kubectl: Kubectl,
    start_agent: AgentFactory,
    kube_namespace: str,
    open_port: int,
    closed_port: int,
) -> None:
    await _run(kubectl, "apply", "-k", str(CRD_DIR))
    manifest = PROBES_YAML.format(open_port=open_port, closed_port=closed_port)
    await _run(kubectl, "apply", "-n", kube_namespace, "-f", "-", stdin=manifest)
    agent = await start_agent()
    await eventually(lambda: agent.mode.statuses.stats.writes >= 2, what="both ProbeStatuses")
    await eventually(lambda: agent.mode.events.sent >= 1, what="the CheckFailed event")

    for name in ("probestatus", "probestatuses", "pst"):
        table = await _run(kubectl, "get", name, "-n", kube_namespace)
        rows = _rows(table)
        assert list(rows) == ["fine", "web"], table
        assert table.splitlines()[0].split() == [
            "NAME",
            "STATUS",
            "PASSED",
            "MESSAGE",
            "LAST",
            "RUN",
            "AGE",
        ], table
        assert rows["web"]["STATUS"] == "ERROR"
        assert rows["web"]["PASSED"] == "1/2"
        assert rows["web"]["MESSAGE"].startswith("down: connection refused")
        assert rows["fine"]["STATUS"] == "PASS" and rows["fine"]["PASSED"] == "1/1"
        assert rows["fine"]["LAST RUN"].endswith("s"), rows["fine"]  # an age like 2s

    everything = await _run(kubectl, "get", "kubeprober", "-n", kube_namespace)
    assert "probe.kubeprober.io/web" in everything
    assert "probe.kubeprober.io/fine" in everything
    assert "probestatus.kubeprober.io/web" in everything

    described = await _run(kubectl, "describe", "probe", "web", "-n", kube_namespace)
    assert "Events:" in described
    events = described[described.index("Events:") :]
    assert "CheckFailed" in events and "Warning" in events, described
    assert "kubeprober-agent" in events
    assert "check down: new -> ERROR: connection refused" in events
    assert "Valid" in described  # the conditions show too
