"""The agent's RBAC grants exactly what exporter/kube/ uses: no more, no less.

Each module declares the ``(apiGroup, resource, verb)`` its calls need next to them; the
agent fixture also checks every call a test run made against the declarations.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeprober.exporter.kube.mode import PERMISSIONS
from kubeprober.exporter.kube.resources import Permission
from tests.binaries import binary

RBAC = Path(__file__).resolve().parents[3] / "manifests" / "rbac"
AGENT = {"kind": "ServiceAccount", "name": "kubeprober-agent", "namespace": "kubeprober"}


def _docs(*parts: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(RBAC.joinpath(*parts).glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _grants(rules: list[dict[str, Any]]) -> Iterator[Permission]:
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    yield Permission(group, resource, verb)


def test_roles_grant_exactly_what_the_code_uses() -> None:
    roles = [d for d in _docs("base") if d["kind"] == "ClusterRole"]
    granted = [g for role in roles for g in _grants(role["rules"])]
    assert len(granted) == len(set(granted)), "a grant appears twice"
    assert set(granted) == set(PERMISSIONS)
    for role in roles:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")


def test_roles_are_split_by_concern() -> None:
    roles = {d["metadata"]["name"]: d for d in _docs("base") if d["kind"] == "ClusterRole"}
    resources = {
        name: {r.split("/")[0] for rule in role["rules"] for r in rule["resources"]}
        for name, role in roles.items()
    }
    assert resources == {
        "kubeprober-agent-probes": {"probes"},
        "kubeprober-agent-probestatuses": {"probestatuses"},
        "kubeprober-agent-events": {"events"},
        "kubeprober-agent-nodes": {"nodes"},
    }


@pytest.mark.parametrize(
    ("mode", "kind"), [("namespace", "RoleBinding"), ("cluster", "ClusterRoleBinding")]
)
def test_bindings_give_every_role_to_the_agent(mode: str, kind: str) -> None:
    roles = {d["metadata"]["name"] for d in _docs("base") if d["kind"] == "ClusterRole"}
    (nodes,) = [d for d in _docs("base") if d["kind"] == "ClusterRoleBinding"]
    # Nodes are cluster-scoped: that one role is bound cluster-wide in both modes.
    assert nodes["roleRef"]["name"] == "kubeprober-agent-nodes"
    assert nodes["subjects"] == [AGENT]
    roles.remove("kubeprober-agent-nodes")
    bindings = _docs(mode)
    assert {b["kind"] for b in bindings} == {kind}
    assert {b["roleRef"]["name"] for b in bindings} == roles
    for b in bindings:
        assert b["roleRef"]["kind"] == "ClusterRole"
        assert b["subjects"] == [AGENT]
        if kind == "RoleBinding":
            assert b["metadata"]["namespace"] == AGENT["namespace"]
    (account,) = [d for d in _docs("base") if d["kind"] == "ServiceAccount"]
    assert account["metadata"]["name"] == AGENT["name"]


@pytest.mark.parametrize("mode", ["namespace", "cluster"])
def test_kustomizations_render(mode: str) -> None:
    kubectl = binary("kubectl")
    out = subprocess.run(
        [kubectl, "kustomize", str(RBAC / mode)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(out) if d)
    binding = "RoleBinding" if mode == "namespace" else "ClusterRoleBinding"
    expected = [
        "Namespace",
        "ServiceAccount",
        *["ClusterRole"] * 4,
        "ClusterRoleBinding",
        *[binding] * 3,
    ]
    assert kinds == sorted(expected)
