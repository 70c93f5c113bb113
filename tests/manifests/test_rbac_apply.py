"""The RBAC kustomizations apply as the README says, with the real kubectl, on a fresh cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from tests.harness.fixtures import delete_namespace
from tests.harness.kubectl import Kubectl

RBAC = Path(__file__).resolve().parents[2] / "manifests" / "rbac"
NAMESPACE = "kubeprober"


@pytest.mark.parametrize(
    ("mode", "account"),
    [
        ("namespace", "kubeprober-agent"),
        ("cluster", "kubeprober-agent"),
        ("aggregator", "kubeprober-aggregator"),
    ],
)
def test_kustomization_applies_without_the_namespace(
    kubectl: Kubectl, kube_api: client.ApiClient, mode: str, account: str
) -> None:
    """``kubectl apply -k manifests/rbac/MODE`` creates the kubeprober namespace it needs."""
    absent = kubectl("get", "namespace", NAMESPACE, check=False)
    assert absent.returncode != 0 and "NotFound" in absent.stderr, "the cluster is not fresh"
    try:
        applied = kubectl("apply", "-k", str(RBAC / mode)).stdout
        assert f"namespace/{NAMESPACE} created" in applied
        assert f"serviceaccount/{account} created" in applied
        made = kubectl("get", "serviceaccount", account, "-n", NAMESPACE, "-o", "name").stdout
        assert made.strip() == f"serviceaccount/{account}"
    finally:
        kubectl("delete", "-k", str(RBAC / mode), "--ignore-not-found", "--wait=false", check=False)
        delete_namespace(kube_api, NAMESPACE)
