"""The ``nodes`` prober: against nodes this test registers (labelled apart from the session's)."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from kubeprober.exporter.check import run_once
from kubeprober.kube.api import KubeApi
from kubeprober.kube.resources import NODES
from kubeprober.probers.nodes import broken, skewed
from kubeprober.probers.status import Status
from tests.probers.kube.conftest import RunKube

GROUP = "kubeprober.test/nodes"


def condition(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def healthy(version: str) -> dict[str, Any]:
    """A kubelet's status: Ready, no pressure, running ``version``."""
    return {
        "conditions": [
            condition("Ready", "True", "KubeletReady"),
            *(condition(p, "False") for p in ("MemoryPressure", "DiskPressure", "PIDPressure")),
        ],
        "nodeInfo": {"kubeletVersion": version},
    }


@pytest_asyncio.fixture
async def group(kube: KubeApi) -> AsyncIterator[tuple[str, list[str]]]:
    """A label value for this test's nodes; yields it and the names created, deleted after."""
    value, names = uuid.uuid4().hex[:10], []
    yield value, names
    for name in names:
        await kube.delete(NODES, name, namespace="")


async def register(
    kube: KubeApi,
    group: tuple[str, list[str]],
    suffix: str,
    *,
    spec: dict[str, Any] | None = None,
    status: dict[str, Any],
) -> None:
    """Create a node as a kubelet would: the object, then its status."""
    value, names = group
    name = f"kp-test-{value}-{suffix}"
    body = {"metadata": {"name": name, "labels": {GROUP: value}}, "spec": spec or {}}
    await kube.create(NODES, body, namespace="")
    names.append(name)
    await kube.patch_status(NODES, name, {"status": status}, namespace="")


async def test_healthy_nodes_pass_and_bad_ones_are_named(
    kube: KubeApi, group: tuple[str, list[str]], run_kube: RunKube
) -> None:
    version = (await kube.server_version())["gitVersion"]
    await register(kube, group, "good", status=healthy(version))
    selector = {"labelSelector": f"{GROUP}={group[0]}"}
    passed = await run_kube("nodes", selector)
    assert (passed.status, passed.message) == (
        Status.PASS,
        f"1 nodes matching {GROUP}={group[0]} Ready and schedulable",
    )

    down = healthy(version)
    down["conditions"][0] = condition("Ready", "False", "KubeletNotReady", "PLEG is not healthy")
    await register(kube, group, "down", status=down)
    taint = {"key": "dedicated", "value": "db", "effect": "NoSchedule"}
    await register(
        kube,
        group,
        "fenced",
        spec={"unschedulable": True, "taints": [taint]},
        status=healthy(version),
    )
    full = healthy(version)
    full["conditions"][2] = condition("DiskPressure", "True", "KubeletHasDiskPressure")
    await register(kube, group, "full", status=full)

    failed = await run_kube("nodes", selector)
    value = group[0]
    assert failed.status is Status.ERROR
    assert failed.message == (
        f"3 of 4 nodes unfit: kp-test-{value}-down: NotReady (KubeletNotReady: PLEG is not "
        f"healthy); kp-test-{value}-fenced: cordoned, taint dedicated=db:NoSchedule; "
        f"kp-test-{value}-full: DiskPressure"
    )
    allowed = await run_kube("nodes", {**selector, "allowedTaints": ["dedicated"], "minNodes": 5})
    assert allowed.message == f"4 nodes matching {GROUP}={value}, expected at least 5"


@pytest.mark.parametrize(
    ("kubelet", "server", "limit", "expected"),
    [
        ("v1.31.2", (1, 31), 3, None),
        ("v1.28.0-eks-1", (1, 31), 3, None),
        (
            "v1.27.9",
            (1, 31),
            3,
            "kubelet v1.27.9 is 4 minor versions behind the API server (max 3)",
        ),
        ("v1.32.0", (1, 31), 3, "kubelet v1.32.0 is newer than the API server"),
        ("", (1, 31), 3, None),
        ("v1.20.0", None, 3, None),
    ],
)
def test_version_skew(
    kubelet: str, server: tuple[int, int] | None, limit: int, expected: str | None
) -> None:
    node = {"status": {"nodeInfo": {"kubeletVersion": kubelet}}}
    assert skewed(node, server, limit) == expected


def test_controller_taints_and_preferences_are_not_counted() -> None:
    node = {
        "spec": {
            "taints": [
                {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
                {"key": "spot", "effect": "PreferNoSchedule"},
                {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
            ]
        },
        "status": {"conditions": [condition("Ready", "True")]},
    }
    assert broken(node, ("node-role.kubernetes.io/control-plane",)) == []
    assert broken({"status": {}}, ()) == ["NotReady (no Ready condition)"]


async def test_check_runs_kubernetes_probers_only_with_a_kubeconfig(
    kube_config_path: Path, tmp_path: Path
) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text(
        "apiVersion: kubeprober.io/v1\nkind: Probe\nmetadata: {name: nodes}\n"
        "spec:\n  layer: kubernetes\n  checks:\n  - name: none\n    prober: nodes\n"
        "    with: {labelSelector: kubeprober.test/nodes=none, minNodes: 0}\n"
    )
    kubeprober = str(Path(sys.executable).with_name("kubeprober"))
    command = [kubeprober, "check", "-o", "json", "--kubeconfig", str(kube_config_path), str(path)]
    with_cluster = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60
    )
    (result,) = json.loads(with_cluster.stdout)["clusters"][0]["probes"][0]["checks"]
    assert (with_cluster.returncode, result["status"]) == (0, "PASS")
    # Without --kubeconfig (in-process: the command line is the same but for the flag).
    out, err = io.StringIO(), io.StringIO()
    code = await run_once([path], concurrency=1, out=out, err=err)
    assert code == 3
    assert "UNKNOWN" in out.getvalue() and "needs a Kubernetes API" in out.getvalue()
