"""Fixtures for tests that install manifests/ on the cluster under test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import CENTRAL_NAMESPACE, MANIFESTS, RBAC_NAMESPACE
from tests.harness.fixtures import Deletions
from tests.harness.kubectl import Kubectl


@pytest.fixture
def fresh(kubectl: Kubectl, kube_deletions: Deletions, crds: None) -> Iterator[list[str]]:
    """A cluster without kubeprober's namespaces; the test lists the kustomizations it
    applies, and those (but the session's CRDs) and both namespaces go afterwards."""
    for name in (RBAC_NAMESPACE, CENTRAL_NAMESPACE):
        if kubectl("get", "namespace", name, check=False).returncode == 0:
            pytest.skip(f"namespace {name} exists in this cluster: left alone")
    applied: list[str] = []
    try:
        yield applied
    finally:
        for path in reversed([p for p in applied if p != "crds"]):
            kubectl("delete", "-k", str(MANIFESTS / path), "--ignore-not-found", "--wait=false")
        for name in (RBAC_NAMESPACE, CENTRAL_NAMESPACE):
            kube_deletions.add(name)
        kube_deletions.check(wait=True)
