"""The ``pod-lifecycle`` prober, with the cluster simulator as scheduler and kubelet (both legs).

A real control plane has no scheduler or kubelet of its own here; the simulator plays both on
either leg, so every case below runs the same way against the test server and the real one.
"""

from __future__ import annotations

import pytest

from kubeprober.kube.api import KubeApi
from kubeprober.kube.resources import PODS
from kubeprober.probers.pod_lifecycle import LABEL, failure
from kubeprober.probers.sdk import Context
from kubeprober.probers.status import Status
from tests.harness.simulator import LOCAL_IMAGE, UNPULLABLE_IMAGE, Simulator
from tests.probers.kube.conftest import RunKube

PHASES = {"cleanup", "create", "schedule", "start", "ready", "delete"}


async def pods_of(kube: KubeApi, namespace: str) -> list[str]:
    """Names of this check's pods not being deleted."""
    label = Context(namespace=namespace, probe="p", check="c", timeout=1).owner_id()
    found = await kube.list(PODS, namespace=namespace, label_selector=f"{LABEL}={label}")
    return [p["metadata"]["name"] for p in found["items"] if not p["metadata"].get(
        "deletionTimestamp"
    )]  # fmt: skip


async def test_a_pod_lives_and_leftovers_go_first(
    kube: KubeApi, kube_namespace: str, kube_simulator: Simulator, run_kube: RunKube
) -> None:
    ns = kube_namespace
    # A run cut off by its deadline left a pod behind.
    label = Context(namespace=ns, probe="p", check="c", timeout=1).owner_id()
    leftover = {
        "metadata": {"name": "leftover", "labels": {LABEL: label}},
        "spec": {"containers": [{"name": "probe", "image": "registry.k8s.io/pause:3.10"}]},
    }
    await kube.create(PODS, leftover, namespace=ns)
    result = await run_kube("pod-lifecycle", {}, namespace=ns)
    assert result.status is Status.PASS, result.message
    assert result.message.startswith(f"pod {ns}/kubeprober-lifecycle-")
    assert f"on {kube_simulator.nodes[0]}: schedule " in result.message
    assert set(result.phases) == PHASES
    assert await pods_of(kube, ns) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"image": UNPULLABLE_IMAGE},
            "start failed: container probe: ErrImagePull: Failed to pull image",
        ),
        (
            # A command that cannot start: the runtime never runs the container (StartError).
            {"image": LOCAL_IMAGE, "command": ["/nonexistent/entrypoint"]},
            'start failed: container probe exited with 128 (StartError): exec: "/nonexistent/',
        ),
        (
            {"nodeSelector": {"kubeprober.test/pool": "none"}, "readyWithin": "1s"},
            "schedule stalled, not Ready within 1s: Unschedulable: 0/1 nodes are available: "
            "1 node(s) didn't match Pod's node affinity/selector.",
        ),
    ],
    ids=["image-pull", "crash", "unschedulable"],
)
async def test_the_failing_step_is_named_with_its_reason(
    kube: KubeApi,
    kube_namespace: str,
    kube_simulator: Simulator,
    run_kube: RunKube,
    options: dict[str, object],
    message: str,
) -> None:
    result = await run_kube("pod-lifecycle", options, namespace=kube_namespace, deadline=5)
    assert result.status is Status.ERROR
    assert message in result.message
    # The failed run deleted its pod (the simulator confirms deletions of bound pods).
    assert await pods_of(kube, kube_namespace) == []


def test_a_pod_still_starting_has_not_failed() -> None:
    creating = {"containerStatuses": [{"name": "x", "state": {"waiting": {"reason": "Pulling"}}}]}
    assert failure({"status": creating}) is None
    assert failure({"status": {"phase": "Failed", "reason": "DeadlineExceeded"}}) == (
        "pod DeadlineExceeded"
    )
