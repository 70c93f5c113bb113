"""What ``kubectl kustomize`` makes of manifests/: valid objects, least privilege, restricted pods.

Static checks on the rendered output; tests/manifests/test_install.py applies it to a cluster.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from kubeprober import __version__
from kubeprober.aggregator.cli import AGENT_CONFIGMAP, AGENT_NAMESPACE, AGENT_TOKEN_SECRET
from kubeprober.cli import build_parser
from tests.binaries import binary
from tests.conftest import CENTRAL_NAMESPACE, MANIFESTS
from tests.manifests.rendering import (
    KUSTOMIZATIONS,
    OVERLAYS,
    find,
    is_component,
    local_command,
    render,
)
from tests.manifests.test_crds import schema

KUBERNETES = "1.32"
"""The Kubernetes version the manifests are checked against: the real control plane leg's."""

RENDERED = [k for k in KUSTOMIZATIONS if not is_component(k)]
DEPLOYMENTS = [
    ("central", "kubeprober-aggregator", "aggregator"),
    ("managed", "kubeprober-agent", "agent"),
    ("managed/all-namespaces", "kubeprober-agent", "agent"),
]
IMAGE = yaml.safe_load((MANIFESTS / "image" / "kustomization.yaml").read_text())["images"][0]


def test_every_overlay_is_a_kustomization() -> None:
    assert set(OVERLAYS) <= set(RENDERED)


@pytest.mark.parametrize("path", RENDERED)
def test_grants_no_wildcard(path: str) -> None:
    for doc in render(path):
        for rule in doc.get("rules", []) if doc["kind"] in ("Role", "ClusterRole") else []:
            granted = rule.get("apiGroups", []) + rule.get("resources", []) + rule["verbs"]
            assert "*" not in granted, f"{path}: {doc['kind']} {doc['metadata']['name']}: {rule}"
            assert not rule.get("nonResourceURLs"), f"{path}: {doc['metadata']['name']}"


def test_objects_validate_against_their_schemas() -> None:
    """Built-in kinds against Kubernetes' OpenAPI schemas (strict: no unknown fields); our
    custom resources against the CRDs; prometheus-operator's kinds are left to promtool.
    Every overlay's objects, each once (the overlays include every base)."""
    seen = set()
    for path in OVERLAYS:
        for doc in render(path):
            key = json.dumps(doc, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            group = doc["apiVersion"].rpartition("/")[0]
            if group == "kubeprober.io":
                jsonschema.validate(doc, schema(f"{doc['kind'].lower()}s"))
            elif group != "monitoring.coreos.com":
                try:
                    kubernetes_validate.validate(doc, KUBERNETES, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    where = f"{path}: {doc['kind']} {doc['metadata']['name']}"
                    pytest.fail(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert len(seen) > 20


def test_validation_can_fail() -> None:
    (deployment,) = [d for d in render("managed") if d["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


@pytest.mark.parametrize("path", ["prometheus"])
def test_prometheus_rules_pass_promtool(path: str, tmp_path: Path) -> None:
    rules = [d for d in render(path) if d["kind"] == "PrometheusRule"]
    for rule in rules:
        file = tmp_path / f"{rule['metadata']['name']}.yaml"
        file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
        checked = subprocess.run(
            [binary("promtool"), "check", "rules", str(file)], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(("path", "name", "role"), DEPLOYMENTS)
def test_pods_meet_the_restricted_pod_security_standard(path: str, name: str, role: str) -> None:
    pod = find(render(path), "Deployment", name)["spec"]["template"]["spec"]
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert all(set(v) <= {"name", "secret", "configMap", "emptyDir"} for v in pod["volumes"])
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert "privileged" not in context


@pytest.mark.parametrize(("path", "name", "role"), DEPLOYMENTS)
def test_containers_are_bounded_and_checked(path: str, name: str, role: str) -> None:
    (container,) = find(render(path), "Deployment", name)["spec"]["template"]["spec"]["containers"]
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    ports = {p["name"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert ports == {"http"}
    assert container["image"] == f"{IMAGE['newName']}:{__version__}"
    assert container["command"] == ["kubeprober"]


def test_the_image_tag_is_the_version() -> None:
    assert IMAGE["name"] == "kubeprober" and IMAGE["newTag"] == __version__


@pytest.mark.parametrize(("path", "name", "role"), DEPLOYMENTS)
def test_the_command_line_parses(path: str, name: str, role: str, tmp_path: Path) -> None:
    """The CLI takes the Deployment's arguments, its files where the pod mounts them."""
    docs = render(path)
    pod = find(docs, "Deployment", name)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for mount in container["volumeMounts"]:
        (tmp_path / mount["mountPath"].lstrip("/")).mkdir(parents=True)
    env = {"KUBEPROBER_AGGREGATOR_URL": "wss://kubeprober.example.com", "POD_IP": "10.0.0.7"}
    line = local_command(container, env=env, root=tmp_path)
    for arg in line:
        if arg.startswith("--") and str(tmp_path) in arg and "-dir=" not in arg:
            Path(arg.partition("=")[2]).write_text("kp1.moon.0123456789abcdefABCDEF\n")
    args = build_parser().parse_args(line[1:])
    assert args.command == role
    if role == "agent":
        assert args.aggregator == env["KUBEPROBER_AGGREGATOR_URL"]
        assert args.all_namespaces is path.endswith("all-namespaces")
        # Container probes' pods report to the agent's pod address, on its port.
        assert args.report_url == "http://10.0.0.7:8080"
    # The service account it runs as is the one its RBAC binds.
    account = find(docs, "ServiceAccount", pod["serviceAccountName"])
    bound = [
        d
        for d in docs
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
        in d["subjects"]
    ]
    assert bound


def test_the_agent_reads_what_cluster_add_tells_to_create() -> None:
    deployment = find(render("managed"), "Deployment", "kubeprober-agent")
    assert deployment["metadata"]["namespace"] == AGENT_NAMESPACE
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (url,) = [e for e in container["env"] if e["name"] == "KUBEPROBER_AGGREGATOR_URL"]
    assert url["valueFrom"]["configMapKeyRef"] == {"name": AGENT_CONFIGMAP, "key": "aggregator-url"}
    (token,) = [v for v in pod["volumes"] if "secret" in v]
    assert token["secret"]["secretName"] == AGENT_TOKEN_SECRET
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == token["name"]]
    assert f"--token-file={mount['mountPath']}/token" in container["args"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


@pytest.mark.parametrize(("path", "name", "role"), DEPLOYMENTS)
def test_network_policy_service_and_ingress_reach_the_pods(path: str, name: str, role: str) -> None:
    docs = render(path) + (render("central/ingress") if role == "aggregator" else [])
    template = find(docs, "Deployment", name)["spec"]["template"]
    labels = template["metadata"]["labels"]
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert _selects(policy["spec"]["podSelector"]["matchLabels"], labels)
    # In: the http port only, for anyone who needs it.
    (rule,) = policy["spec"]["ingress"]
    assert rule == {"ports": [{"port": "http", "protocol": "TCP"}]}
    if role == "agent":
        assert policy["spec"]["policyTypes"] == ["Ingress"]  # probes go anywhere
        return
    # The aggregator talks to the Kubernetes API and to its other replicas, nothing else.
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    out, peers = policy["spec"]["egress"]
    assert "to" not in out and {p["port"] for p in out["ports"]} == {443, 6443}
    assert peers["ports"] == [{"port": "http", "protocol": "TCP"}]
    ((to,),) = [peers["to"]]
    assert to == {"podSelector": {"matchLabels": policy["spec"]["podSelector"]["matchLabels"]}}
    service = find(docs, "Service", name)
    assert _selects(service["spec"]["selector"], labels)
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    backend = find(docs, "Ingress", name)["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend["service"] == {"name": name, "port": {"name": port["name"]}}
    monitor = find(render("prometheus"), "ServiceMonitor", name)
    assert monitor["metadata"]["namespace"] == CENTRAL_NAMESPACE
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["endpoints"][0]["port"] == port["name"]
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True  # the cluster label
    secret = monitor["spec"]["endpoints"][0]["authorization"]["credentials"]
    (tokens,) = [v for v in template["spec"]["volumes"] if "secret" in v]
    assert secret == {"name": tokens["secret"]["secretName"], "key": "read-token"}


@pytest.mark.parametrize("path", ["central", "managed", "managed/all-namespaces"])
def test_namespaces_enforce_restricted(path: str) -> None:
    for doc in render(path):
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
