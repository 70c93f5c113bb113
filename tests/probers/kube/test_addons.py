"""The ``addons`` prober: Deployments and DaemonSets run by the control plane's controllers and
the simulator (both legs)."""

from __future__ import annotations

from typing import Any

import pytest

from kubeprober.kube.api import KubeApi
from kubeprober.kube.resources import DAEMONSETS, DEPLOYMENTS
from kubeprober.probers.addons import Spec, judge
from kubeprober.probers.options import SpecError, parse_options
from kubeprober.probers.status import Status
from tests.exporter.kube.conftest import eventually
from tests.harness.simulator import UNPULLABLE_IMAGE, Simulator
from tests.probers.kube.conftest import RunKube


def workload(name: str, image: str, **spec: Any) -> dict[str, Any]:
    """A Deployment's or DaemonSet's body (only the simulator's nodes run DaemonSet pods)."""
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            **spec,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "main", "image": image}],
                    "nodeSelector": {"kubeprober.io/simulated": "true"},
                },
            },
        },
    }


async def test_ready_components_pass_and_short_ones_are_named(
    kube: KubeApi, kube_namespace: str, kube_simulator: Simulator, run_kube: RunKube
) -> None:
    ns = kube_namespace
    pause = "registry.k8s.io/pause:3.10"
    await kube.create(DEPLOYMENTS, workload("dns", pause, replicas=1), namespace=ns)
    await kube.create(DEPLOYMENTS, workload("proxy", UNPULLABLE_IMAGE, replicas=1), namespace=ns)
    await kube.create(DAEMONSETS, workload("cni", pause), namespace=ns)
    await kube.create(DAEMONSETS, workload("csi", UNPULLABLE_IMAGE), namespace=ns)

    async def settled() -> bool:
        dns = await kube.get(DEPLOYMENTS, "dns", namespace=ns)
        proxy = await kube.get(DEPLOYMENTS, "proxy", namespace=ns)
        cni = await kube.get(DAEMONSETS, "cni", namespace=ns)
        csi = await kube.get(DAEMONSETS, "csi", namespace=ns)
        conditions = {c["type"]: c["status"] for c in proxy["status"].get("conditions") or []}
        return (
            dns["status"].get("readyReplicas") == 1
            and conditions.get("Available") == "False"
            and cni["status"].get("numberReady") == 1
            and csi["status"].get("currentNumberScheduled") == 1
        )

    await eventually(settled, within=20, what="the workloads to settle")
    passed = await run_kube(
        "addons", {"components": [f"deployment/{ns}/dns", f"daemonset/{ns}/cni"]}
    )
    assert (passed.status, passed.message) == (
        Status.PASS,
        "2 components with every desired pod ready",
    )
    components = [f"deployment/{ns}/proxy", f"daemonset/{ns}/csi", f"daemonset/{ns}/gone"]
    failed = await run_kube("addons", {"components": components})
    assert failed.status is Status.ERROR
    assert failed.message.startswith(
        f"deployment {ns}/proxy: 0/1 ready, not Available (MinimumReplicasUnavailable"
    )
    assert failed.message.endswith(
        f"; daemonset {ns}/csi: 0/1 ready; daemonset {ns}/gone: not found"
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"desiredNumberScheduled": 3, "numberReady": 3}, None),
        ({"desiredNumberScheduled": 3, "numberReady": 2}, "2/3 ready"),
        ({}, "schedules no pod (no node matches it, or its controller has not run)"),
    ],
)
def test_daemonsets(status: dict[str, int], expected: str | None) -> None:
    assert judge("daemonset", {"status": status}) == expected


def test_components_are_checked_on_load() -> None:
    with pytest.raises(SpecError, match=r"components\[1\]: expected deployment/NAMESPACE/NAME"):
        parse_options(Spec, {"components": ["deployment/a/b", "statefulset/a/b"]}, "with")
