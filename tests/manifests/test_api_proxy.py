"""manifests/managed/api-proxy: the agent may impersonate kubeprober-api-proxy and no one else,
and that ServiceAccount reads what `view` reads; in step with exporter/api_proxy.py."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from kubeprober.cli import build_parser
from kubeprober.exporter.api_proxy import SERVICE_ACCOUNT, ApiProxySettings
from tests.binaries import binary
from tests.conftest import MANIFESTS, RBAC_NAMESPACE
from tests.harness.kubectl import Kubectl
from tests.harness.waiting import wait_for
from tests.manifests.rendering import find

AGENT = f"system:serviceaccount:{RBAC_NAMESPACE}:kubeprober-agent"


def _with_component(tmp_path: Path) -> list[dict[str, Any]]:
    """manifests/managed with the api-proxy component, as a user's kustomization names it."""
    (tmp_path / "manifests").symlink_to(MANIFESTS)
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../manifests/managed]\ncomponents: [../manifests/managed/api-proxy]\n"
    )
    out = subprocess.run(
        [binary("kubectl"), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_the_agent_impersonates_only_the_proxy_account(tmp_path: Path) -> None:
    docs = _with_component(tmp_path)
    account = find(docs, "ServiceAccount", SERVICE_ACCOUNT)
    assert account["metadata"]["namespace"] == RBAC_NAMESPACE
    # The user the agent impersonates is that account, in the agent's own namespace.
    assert ApiProxySettings(namespace=RBAC_NAMESPACE).user == (
        f"system:serviceaccount:{RBAC_NAMESPACE}:{SERVICE_ACCOUNT}"
    )
    impersonating = [
        rule
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
        for rule in d.get("rules", [])
        if "impersonate" in rule["verbs"]
    ]
    assert impersonating == [
        {
            "apiGroups": [""],
            "resources": ["serviceaccounts"],
            "resourceNames": [SERVICE_ACCOUNT],
            "verbs": ["impersonate"],
        }
    ]
    binding = find(docs, "RoleBinding", "kubeprober-agent-api-proxy")
    assert binding["metadata"]["namespace"] == RBAC_NAMESPACE
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kubeprober-agent", "namespace": RBAC_NAMESPACE}
    ]
    view = find(docs, "ClusterRoleBinding", "kubeprober-api-proxy-view")
    assert view["roleRef"]["name"] == "view"
    # The agent is started with the flag, and its command line still parses.
    (container,) = find(docs, "Deployment", "kubeprober-agent")["spec"]["template"]["spec"][
        "containers"
    ]
    assert "--accept-api-proxy" in container["args"]
    token = tmp_path / "token"
    token.write_text("kp1.moon.0123456789abcdefABCDEF\n")
    line = [
        a if not a.startswith("--token-file=") else f"--token-file={token}"
        for a in container["args"]
    ]
    args = build_parser().parse_args(
        [a.replace("$(KUBEPROBER_AGGREGATOR_URL)", "wss://x") for a in line]
    )
    assert args.accept_api_proxy and not args.api_proxy_write


def test_rbac_grants_the_proxy_view_and_the_agent_one_impersonation(
    rbac: Callable[..., None], kubectl: Kubectl
) -> None:
    rbac("managed/api-proxy/rbac.yaml")
    proxy = f"system:serviceaccount:{RBAC_NAMESPACE}:{SERVICE_ACCOUNT}"

    def can(user: str, *what: str) -> bool:
        answer = kubectl("auth", "can-i", *what, f"--as={user}", check=False)
        return answer.stdout.strip() == "yes"

    ns = ("-n", RBAC_NAMESPACE)
    assert can(AGENT, "impersonate", f"serviceaccounts/{SERVICE_ACCOUNT}", *ns)
    assert not can(AGENT, "impersonate", "serviceaccounts/default", *ns)
    assert not can(AGENT, "impersonate", "users/admin")
    assert can(proxy, "list", "pods", "-A")
    assert not can(proxy, "create", "configmaps", *ns)
    assert not can(proxy, "get", "secrets", *ns)
    # `view` takes in kubeprober-view once the controller-manager aggregated it
    wait_for(lambda: can(proxy, "list", "probestatuses.kubeprober.io", "-A"), what="aggregation")
