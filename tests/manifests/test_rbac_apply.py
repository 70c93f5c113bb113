"""The RBAC kustomizations apply as the README says, with the real kubectl, on a fresh cluster."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.conftest import MANIFESTS
from tests.harness.fixtures import delete_namespace
from tests.harness.kubectl import Kubectl

NAMESPACE = "kubeprober"


@pytest.mark.parametrize(
    ("path", "account"),
    [
        ("managed/rbac/namespace", "kubeprober-agent"),
        ("managed/rbac/cluster", "kubeprober-agent"),
        ("central/rbac", "kubeprober-aggregator"),
    ],
)
def test_kustomization_applies_without_the_namespace(
    kubectl: Kubectl, kube_api: client.ApiClient, path: str, account: str
) -> None:
    """``kubectl apply -k manifests/PATH`` creates the kubeprober namespace it needs."""
    absent = kubectl("get", "namespace", NAMESPACE, check=False)
    assert absent.returncode != 0 and "NotFound" in absent.stderr, "the cluster is not fresh"
    try:
        applied = kubectl("apply", "-k", str(MANIFESTS / path)).stdout
        assert f"namespace/{NAMESPACE} created" in applied
        assert f"serviceaccount/{account} created" in applied
        made = kubectl("get", "serviceaccount", account, "-n", NAMESPACE, "-o", "name").stdout
        assert made.strip() == f"serviceaccount/{account}"
    finally:
        kubectl(
            "delete", "-k", str(MANIFESTS / path), "--ignore-not-found", "--wait=false", check=False
        )
        delete_namespace(kube_api, NAMESPACE)
