"""Every kustomization under manifests/ renders with the real kubectl, and grants no wildcard."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.binaries import binary
from tests.conftest import MANIFESTS

OVERLAYS = [
    "crds",
    "central",
    "managed",
    "managed/all-namespaces",
    "probes",
    "prometheus",
    "grafana",
]
"""What the install guide applies; every other kustomization here is a base of these."""

KUSTOMIZATIONS = sorted(
    str(p.parent.relative_to(MANIFESTS)) for p in MANIFESTS.rglob("kustomization.yaml")
)


def render(path: str) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize manifests/PATH`` prints (no cluster needed)."""
    out = subprocess.run(
        [binary("kubectl"), "kustomize", str(MANIFESTS / path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_every_overlay_is_a_kustomization() -> None:
    assert set(OVERLAYS) <= set(KUSTOMIZATIONS)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_renders_without_wildcards(path: str) -> None:
    for doc in render(path):
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
        for rule in doc.get("rules", []) if doc["kind"] in ("Role", "ClusterRole") else []:
            granted = rule.get("apiGroups", []) + rule.get("resources", []) + rule["verbs"]
            assert "*" not in granted, f"{path}: {doc['kind']} {doc['metadata']['name']}: {rule}"
            assert not rule.get("nonResourceURLs"), f"{path}: {doc['metadata']['name']}"
