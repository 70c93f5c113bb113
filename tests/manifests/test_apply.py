"""Every overlay but prometheus applies to a fresh cluster with the real kubectl, and the
Deployments' pods are admitted: on the real control plane, under the restricted Pod Security
Standard the namespaces enforce."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.conftest import CENTRAL_NAMESPACE, MANIFESTS, RBAC_NAMESPACE
from tests.harness.fixtures import Deletions
from tests.harness.kubectl import Kubectl
from tests.harness.waiting import wait_for
from tests.manifests.rendering import OVERLAYS, render

# prometheus needs prometheus-operator's CRDs; crds are the session's (the `crds` fixture).
APPLIED = [p for p in OVERLAYS if p not in ("prometheus", "crds")]


@pytest.fixture
def fresh(kubectl: Kubectl, kube_deletions: Deletions, crds: None) -> Iterator[list[str]]:
    """A cluster without kubeprober's namespaces; whatever the test applied goes afterwards."""
    for name in (RBAC_NAMESPACE, CENTRAL_NAMESPACE):
        if kubectl("get", "namespace", name, check=False).returncode == 0:
            pytest.skip(f"namespace {name} exists in this cluster: left alone")
    applied: list[str] = []
    try:
        yield applied
    finally:
        for path in reversed(applied):
            kubectl("delete", "-k", str(MANIFESTS / path), "--ignore-not-found", "--wait=false")
        for name in (RBAC_NAMESPACE, CENTRAL_NAMESPACE):
            kube_deletions.add(name)
        kube_deletions.check(wait=True)


def test_overlays_apply_and_their_pods_are_admitted(
    kubectl: Kubectl, kube_api: client.ApiClient, fresh: list[str]
) -> None:
    for path in APPLIED:
        if not render(path):
            continue  # nothing in it yet: kubectl refuses to apply nothing
        out = kubectl("apply", "-k", str(MANIFESTS / path)).stdout
        fresh.append(path)
        assert "created" in out or "configured" in out, out
    core = client.CoreV1Api(kube_api)
    for namespace, name in [
        (CENTRAL_NAMESPACE, "kubeprober-aggregator"),
        (RBAC_NAMESPACE, "kubeprober-agent"),
    ]:
        selector = f"app.kubernetes.io/name={name}"
        pods = wait_for(
            lambda ns=namespace, sel=selector: (
                core.list_namespaced_pod(ns, label_selector=sel).items
            ),
            what=f"a pod of {namespace}/{name}",
        )
        assert pods[0].spec.service_account_name == name
    # all-namespaces came after managed: the agent now runs with --all-namespaces, bound so.
    (container,) = (
        client.AppsV1Api(kube_api)
        .read_namespaced_deployment("kubeprober-agent", RBAC_NAMESPACE)
        .spec.template.spec.containers
    )
    assert container.args[-1] == "--all-namespaces"
    rbac = client.RbacAuthorizationV1Api(kube_api)
    assert rbac.read_cluster_role_binding("kubeprober-agent-probes").subjects[0].name == (
        "kubeprober-agent"
    )
