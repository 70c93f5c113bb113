"""The ``addons`` prober: Deployments run by the control plane's controller and the simulator
(both legs); DaemonSets judged from their status (the API test server runs no DaemonSet
controller, so a DaemonSet's status there would be the test's own writing)."""

from __future__ import annotations

from typing import Any

import pytest

from kubeprober.kube.api import KubeApi
from kubeprober.kube.resources import DEPLOYMENTS
from kubeprober.probers.addons import Spec, judge
from kubeprober.probers.options import SpecError, parse_options
from kubeprober.probers.status import Status
from tests.exporter.kube.conftest import eventually
from tests.harness.simulator import UNPULLABLE_IMAGE, Simulator
from tests.probers.kube.conftest import RunKube


def deployment(name: str, image: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }


async def test_ready_components_pass_and_short_ones_are_named(
    kube: KubeApi, kube_namespace: str, kube_simulator: Simulator, run_kube: RunKube
) -> None:
    ns = kube_namespace
    await kube.create(DEPLOYMENTS, deployment("dns", "registry.k8s.io/pause:3.10"), namespace=ns)
    await kube.create(DEPLOYMENTS, deployment("proxy", UNPULLABLE_IMAGE), namespace=ns)

    async def settled() -> bool:
        dns = await kube.get(DEPLOYMENTS, "dns", namespace=ns)
        proxy = await kube.get(DEPLOYMENTS, "proxy", namespace=ns)
        conditions = {c["type"]: c["status"] for c in proxy["status"].get("conditions") or []}
        return dns["status"].get("readyReplicas") == 1 and conditions.get("Available") == "False"

    await eventually(settled, within=20, what="one Deployment ready, one not")
    passed = await run_kube("addons", {"components": [f"deployment/{ns}/dns"]})
    assert (passed.status, passed.message) == (
        Status.PASS,
        "1 components with every desired pod ready",
    )
    failed = await run_kube(
        "addons",
        {"components": [f"deployment/{ns}/dns", f"deployment/{ns}/proxy", f"daemonset/{ns}/cni"]},
    )
    assert failed.status is Status.ERROR
    assert failed.message.startswith(
        f"deployment {ns}/proxy: 0/1 ready, not Available (MinimumReplicasUnavailable"
    )
    assert failed.message.endswith(f"; daemonset {ns}/cni: not found")


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
