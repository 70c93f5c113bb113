"""The real ``kubeprober agent --kubeconfig`` process: Probe CRs in, ProbeStatus out, restarts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.exporter.kube.conftest import CRD_DIR, KUBEPROBER, AgentProcess, AgentStarter, eventually
from tests.exporter.kube.test_kubectl import _rows, _run
from tests.harness.kubectl import Kubectl

PROBE = """\
apiVersion: kubeprober.io/v1
kind: Probe
metadata:
  name: db
spec:
  layer: middleware
  interval: 300ms
  checks:
  - name: port
    prober: tcp
    with: {{host: 127.0.0.1, port: {port}}}
"""
NODES_PROBE = """\
apiVersion: kubeprober.io/v1
kind: Probe
metadata:
  name: nodes
spec:
  layer: kubernetes
  checks:
  - name: none
    prober: nodes
    with: {labelSelector: kubeprober.test/nodes=none, minNodes: 0}
"""
EXEC_PROBE = """\
apiVersion: kubeprober.io/v1
kind: Probe
metadata:
  name: script
spec:
  layer: application
  checks:
  - name: cmd
    prober: exec
    with: {{command: [touch, "{marker}"]}}
"""


async def test_agent_runs_probe_crs_and_survives_a_restart(
    kubectl: Kubectl, agent_process: AgentStarter, kube_namespace: str, closed_port: int
) -> None:
    await _run(kubectl, "apply", "-k", str(CRD_DIR))
    await _run(
        kubectl, "apply", "-n", kube_namespace, "-f", "-", stdin=PROBE.format(port=closed_port)
    )
    await _run(kubectl, "apply", "-n", kube_namespace, "-f", "-", stdin=NODES_PROBE)
    agent = await agent_process()
    await eventually(lambda: _ready(agent), within=30, what="/readyz")

    async def failing(times: int) -> dict[str, str] | None:
        rows = _rows(await _run(kubectl, "get", "pst", "-n", kube_namespace))
        out = await _run(
            kubectl,
            "get",
            "pst",
            "db",
            "-n",
            kube_namespace,
            "-o",
            "jsonpath={.status.checks[0].consecutiveFailures}",
        )
        return rows["db"] if rows.get("db") and int(out or 0) >= times else None

    row = await eventually(lambda: failing(3), within=30, what="three failures in ProbeStatus")
    assert row["STATUS"] == "ERROR" and row["PASSED"] == "0/1"
    assert row["MESSAGE"].startswith("port: connection refused")
    # A Kubernetes prober gets the agent's API as ctx.kube.
    nodes_check = await eventually(
        lambda: _check(agent, "nodes", "none"), within=30, what="the nodes check's result"
    )
    assert nodes_check["status"] == "PASS", nodes_check
    status, doc = await agent.get("/status")
    assert status == 200
    cluster = doc["clusters"][0]
    assert "db" in {p["name"] for p in cluster["probes"]}
    # The cluster's facts, read through the API (the aggregator shows them per cluster).
    version = json.loads(await _run(kubectl, "version", "-o", "json"))["serverVersion"]
    assert cluster["kubernetesVersion"] == version["gitVersion"]
    nodes = await _run(kubectl, "get", "nodes", "-o", "name")
    assert cluster["nodeCount"] == len(nodes.split())
    assert await agent.stop() == 0

    jsonpath = "{.status.checks[0].consecutiveFailures} {.status.checks[0].lastTransitionTime}"
    saved = await _run(
        kubectl, "get", "pst", "db", "-n", kube_namespace, "-o", f"jsonpath={jsonpath}"
    )
    before, transition = saved.split()
    agent = await agent_process()
    check = await eventually(
        lambda: _failures_above(agent, int(before)), within=30, what="the count to go on"
    )
    # Restored from ProbeStatus: had it started fresh, its first failure would have been a
    # new transition, and its count would have started again at 1.
    assert check["lastTransitionTime"] == transition


async def test_exec_namespaces_flag_lets_probes_of_that_namespace_run_commands(
    kubectl: Kubectl, agent_process: AgentStarter, kube_namespace: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    await _run(kubectl, "apply", "-k", str(CRD_DIR))
    await _run(
        kubectl, "apply", "-n", kube_namespace, "-f", "-", stdin=EXEC_PROBE.format(marker=marker)
    )
    agent = await agent_process("--exec-namespaces", f"kubeprober-system,{kube_namespace}")
    await eventually(marker.exists, within=30, what="the exec check's command to run")
    await eventually(lambda: _ready(agent), within=30, what="/readyz")


async def _ready(agent: AgentProcess) -> bool:
    status, _ = await agent.get("/readyz")
    return status == 200


async def _failures_above(agent: AgentProcess, before: int) -> dict[str, Any] | None:
    check = await _check(agent, "db", "port")
    return check if check and check["consecutiveFailures"] > before else None


def test_agent_without_kubernetes_config_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["KUBECONFIG"] = str(tmp_path / "absent")
    out = subprocess.run(
        [KUBEPROBER, "agent", "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 3
    assert "kubeprober agent:" in out.stderr


async def _check(agent: AgentProcess, probe: str, check: str) -> dict[str, Any] | None:
    """Return a check of the agent's /status once it has a result."""
    _, doc = await agent.get("/status")
    for p in doc["clusters"][0]["probes"]:
        for c in p["checks"] if p["name"] == probe else []:
            if c["name"] == check and c.get("status"):
                return dict(c)
    return None
