"""The agent's RBAC grants exactly what exporter/kube/ and the Kubernetes probers use.

Each module declares the ``(apiGroup, resource, verb)`` its calls need next to them; the
agent fixture also checks every call a test run made against the declarations. On a real
control plane the agent process then runs as its ServiceAccount, bound by manifests/managed/rbac/
alone, and the authorizer must allow all it does (and refuse it without the bindings); so
must it for the Kubernetes probers run with those credentials, each within its PERMISSIONS.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubeprober.exporter.kube.access import ProberAccess
from kubeprober.exporter.kube.mode import PERMISSIONS
from kubeprober.exporter.runner import run_check
from kubeprober.kube.api import KubeApi
from kubeprober.kube.resources import CONFIG_MAPS, JOBS, NODES, PROBES, Permission
from kubeprober.probers import registry
from kubeprober.probers.status import Status
from kubeprober.probers.targets import KINDS
from tests.binaries import binary
from tests.conftest import FAST_API, RBAC_NAMESPACE
from tests.exporter.kube.conftest import (
    AgentStarter,
    checks_by_name,
    create_probe,
    eventually,
    old_job,
    probe_body,
    probe_status,
    tcp_check,
)
from tests.harness import accounts
from tests.harness.faultproxy import FaultProxy
from tests.harness.fixtures import Deletions
from tests.probers.kube.conftest import make_check

RBAC = Path(__file__).resolve().parents[3] / "manifests" / "managed" / "rbac"
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


PROBER_ROLE = "kubeprober-prober-"
KUBE_SYSTEM_READERS = {
    ("kube-system", PROBER_ROLE + "addons"),
    ("kube-system", PROBER_ROLE + "dns"),
}
"""Namespace mode: the probers of components in kube-system are bound there as well."""
CLUSTER_SCOPED = {"nodes", "namespaces", "validatingwebhookconfigurations"}
CLUSTER_SCOPED |= {"mutatingwebhookconfigurations"}
"""Resources without a namespace: a RoleBinding cannot grant them."""


def _prober_needs() -> dict[str, set[Permission]]:
    """Each built-in prober's declared PERMISSIONS, by role name (probers with none left out)."""
    return {
        PROBER_ROLE + name: set(prober.permissions)
        for name, prober in registry.probers().items()
        if prober.origin == "builtin" and prober.permissions
    }


def _agent_roles() -> list[dict[str, Any]]:
    return [
        d
        for d in _docs("base")
        if d["kind"] == "ClusterRole" and not d["metadata"]["name"].startswith(PROBER_ROLE)
    ]


def _prober_roles() -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d
        for d in _docs("base")
        if d["kind"] == "ClusterRole" and d["metadata"]["name"].startswith(PROBER_ROLE)
    }


def _cluster_wide(role: str) -> bool:
    """Tell whether a prober's role must be bound cluster-wide (it touches cluster objects)."""
    return any(p.resource.split("/")[0] in CLUSTER_SCOPED for p in _prober_needs()[role])


def test_each_prober_role_grants_exactly_what_the_prober_declares() -> None:
    roles = _prober_roles()
    assert set(roles) == set(_prober_needs())
    for name, role in roles.items():
        granted = list(_grants(role["rules"]))
        assert len(granted) == len(set(granted)), f"{name}: a grant appears twice"
        assert set(granted) == _prober_needs()[name], name
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]


@pytest.mark.parametrize(
    ("mode", "kind"), [("namespace", "RoleBinding"), ("cluster", "ClusterRoleBinding")]
)
def test_prober_roles_are_bound_where_they_work(mode: str, kind: str) -> None:
    base = {
        d["roleRef"]["name"]
        for d in _docs("base")
        if d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"].startswith(PROBER_ROLE)
    }
    bound = [d for d in _docs(mode) if d["roleRef"]["name"].startswith(PROBER_ROLE)]
    assert base == {r for r in _prober_needs() if _cluster_wide(r)}
    home = [b for b in bound if b["metadata"].get("namespace", RBAC_NAMESPACE) == RBAC_NAMESPACE]
    assert {b["roleRef"]["name"] for b in home} == {
        r for r in _prober_needs() if not _cluster_wide(r)
    }
    for b in bound:
        assert (b["kind"], b["subjects"]) == (kind, [AGENT])
    # With --namespace, the probers of kube-system's components may read there too.
    elsewhere = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bound if b not in home}
    assert elsewhere == (KUBE_SYSTEM_READERS if mode == "namespace" else set())


def test_roles_grant_exactly_what_the_code_uses() -> None:
    roles = _agent_roles()
    granted = [g for role in roles for g in _grants(role["rules"])]
    assert len(granted) == len(set(granted)), "a grant appears twice"
    assert set(granted) == set(PERMISSIONS)
    for role in roles:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")


def test_roles_are_split_by_concern() -> None:
    roles = {d["metadata"]["name"]: d for d in _agent_roles()}
    resources = {
        name: {r.split("/")[0] for rule in role["rules"] for r in rule["resources"]}
        for name, role in roles.items()
    }
    assert resources == {
        "kubeprober-agent-probes": {"probes"},
        "kubeprober-agent-probestatuses": {"probestatuses"},
        "kubeprober-agent-events": {"events"},
        "kubeprober-agent-nodes": {"nodes"},
        "kubeprober-agent-containers": {"jobs", "pods", "configmaps"},
        "kubeprober-agent-targets": {"services", "pods", "ingresses", "endpointslices"},
    }


@pytest.mark.parametrize(
    ("mode", "kind"), [("namespace", "RoleBinding"), ("cluster", "ClusterRoleBinding")]
)
def test_bindings_give_every_role_to_the_agent(mode: str, kind: str) -> None:
    roles = {d["metadata"]["name"] for d in _agent_roles()}
    (nodes,) = [
        d
        for d in _docs("base")
        if d["kind"] == "ClusterRoleBinding" and not d["metadata"]["name"].startswith(PROBER_ROLE)
    ]
    # Nodes are cluster-scoped: that one role is bound cluster-wide in both modes.
    assert nodes["roleRef"]["name"] == "kubeprober-agent-nodes"
    assert nodes["subjects"] == [AGENT]
    roles.remove("kubeprober-agent-nodes")
    bindings = [b for b in _docs(mode) if not b["roleRef"]["name"].startswith(PROBER_ROLE)]
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
    probers = _prober_needs()
    cluster_wide = sum(1 for r in probers if _cluster_wide(r))
    expected = [
        "Namespace",
        "ServiceAccount",
        *["ClusterRole"] * (6 + len(probers)),
        *["ClusterRoleBinding"] * (1 + cluster_wide),
        *[binding] * (5 + len(probers) - cluster_wide),
        *["RoleBinding"] * (len(KUBE_SYSTEM_READERS) if mode == "namespace" else 0),
    ]
    assert kinds == sorted(expected)


# -- the real authorizer (real control plane leg) ----------------------------------------------

PROBER_RUNS: dict[str, dict[str, Any]] = {
    "nodes": {"minNodes": 0},
    "pod-lifecycle": {},
    "namespace": {"prefix": "kp-test-rbac-"},
    "webhooks": {"labelSelector": "kubeprober.test/none=none"},
    "addons": {"components": ["deployment/kube-system/coredns"]},
}
"""What each Kubernetes prober is asked as the agent: things in the agent's namespace, or the
whole cluster."""


async def _probers_work_as_the_agent(kubeconfig: Path, namespace: str) -> None:
    """Run each prober once with the agent's credentials: no refusal (nothing UNKNOWN), and
    no call its module does not declare. Short checks: a namespace still Terminating or a pod
    not yet Ready is ERROR, which is fine here; a 403 would be UNKNOWN."""
    probers = registry.probers()

    async def run(name: str, options: dict[str, Any]) -> None:
        api = KubeApi.from_kubeconfig(kubeconfig, settings=FAST_API)
        try:
            probe, check = make_check(name, options, timeout=1.5, namespace=namespace)
            result = await run_check(probe, check, probers[name], kube=ProberAccess(api))
        finally:
            await api.close()
        assert result.status is not Status.UNKNOWN, (name, result.message)
        assert api.used <= set(probers[name].permissions), name

    await asyncio.gather(*(run(name, options) for name, options in PROBER_RUNS.items()))


def _agent_proxy(kube_api: client.ApiClient, kube_config_path: Path, tmp_path: Path) -> FaultProxy:
    """Return a started proxy whose kubeconfig is the agent's ServiceAccount's."""
    kubeconfig = accounts.token_kubeconfig(
        kube_api, kube_config_path, AGENT["namespace"], AGENT["name"], tmp_path / "agent.yaml"
    )
    return FaultProxy(kubeconfig, tmp_path).start()


@pytest.mark.parametrize("mode", ["namespace", "cluster"])
async def test_agent_works_as_its_service_account(
    mode: str,
    rbac: Callable[..., None],
    kube: KubeApi,
    kube_api: client.ApiClient,
    kube_config_path: Path,
    kube_namespace: str,
    kube_deletions: Deletions,
    agent_process: AgentStarter,
    closed_port: int,
    tmp_path: Path,
) -> None:
    rbac(f"managed/rbac/{mode}")
    # Other tests' namespaces, still being deleted, would refuse the agent's writes.
    kube_deletions.check(wait=True)
    # Namespace mode runs the Probes of the manifests' namespace; cluster mode any namespace's.
    where = RBAC_NAMESPACE if mode == "namespace" else kube_namespace
    scope = ("--namespace", where) if mode == "namespace" else ("--all-namespaces",)
    who = accounts.user(AGENT["namespace"], AGENT["name"])
    needed = [
        *PERMISSIONS,
        *(p for name in PROBER_RUNS for p in _prober_needs()[PROBER_ROLE + name]),
    ]
    in_kube_system = [(p, "kube-system") for p in _prober_needs()[PROBER_ROLE + "addons"]]
    accounts.wait_granted(
        kube_api,
        who,
        [(p, None if p.resource.split("/")[0] in CLUSTER_SCOPED else where) for p in needed]
        + in_kube_system,
    )
    # Checks that discover each kind of target: the agent lists and watches them as itself.
    discovering = [
        {**tcp_check(kind.lower(), closed_port), "targets": {"fromObjects": {"kind": kind}}}
        for kind in KINDS
    ]
    await create_probe(
        kube, where, probe_body("db", [tcp_check("port", closed_port), *discovering])
    )
    proxy = _agent_proxy(kube_api, kube_config_path, tmp_path)
    agent = await agent_process(kubeconfig=proxy.kubeconfig, scope=scope)
    try:
        await _probers_work_as_the_agent(proxy.kubeconfig, where)

        async def worked() -> bool:
            # Restore (list), watch, ProbeStatus create and status patch, the Probe's
            # conditions, an Event for the failure, and the node count.
            status = checks_by_name(await probe_status(kube, where, "db"))
            probe = await kube.get(PROBES, "db", namespace=where)
            events = client.CoreV1Api(kube_api).list_namespaced_event(
                where, field_selector="involvedObject.name=db"
            )
            _, doc = await agent.get("/status")
            targets = [
                t for p in doc["clusters"][0]["probes"] if p["name"] == "db" for t in p["targets"]
            ]
            listed = [t["message"] for t in targets] == [""] * len(KINDS)
            return bool(
                listed
                and status.get("port", {}).get("consecutiveFailures")
                and {c["type"] for c in probe.get("status", {}).get("conditions", [])}
                >= {"Valid", "Scheduled"}
                and events.items
                and doc["clusters"][0]["nodeCount"] is not None
            )

        await eventually(worked, within=30, interval=0.2, what="the agent's work, as itself")
        assert proxy.forbidden == []
    finally:
        await agent.stop()  # before its proxy, which would cut it off mid-request
        proxy.stop()
        await kube.delete(PROBES, "db", namespace=where)


async def test_container_probes_run_as_the_agents_service_account(
    rbac: Callable[..., None],
    kube: KubeApi,
    kube_api: client.ApiClient,
    kube_config_path: Path,
    kube_deletions: Deletions,
    agent_process: AgentStarter,
    tmp_path: Path,
) -> None:
    """A run's Job, its pod's state, the ConfigMap's environment and the old Jobs' deletion."""
    rbac("managed/rbac/namespace")
    kube_deletions.check(wait=True)
    where = RBAC_NAMESPACE
    who = accounts.user(AGENT["namespace"], AGENT["name"])
    accounts.wait_granted(
        kube_api, who, [(p, where) for p in PERMISSIONS if p.resource != NODES.plural]
    )
    await kube.create(CONFIG_MAPS, {"metadata": {"name": "probe-env"}}, namespace=where)
    await kube.create(JOBS, old_job("job-old", "job"), namespace=where)
    body = probe_body("job", [{"name": "c"}], timeout="1s")
    body["spec"]["template"] = {"containers": [{"name": "probe", "image": "busybox"}]}
    await create_probe(kube, where, body)
    proxy = _agent_proxy(kube_api, kube_config_path, tmp_path)
    flags = ("--exec-namespaces", where, "--container-env-configmap", "probe-env")
    agent = await agent_process(
        *flags, "--keep-jobs", "1", kubeconfig=proxy.kubeconfig, scope=("--namespace", where)
    )
    try:

        async def ran() -> bool:
            # Nothing runs the pod (no kubelet here): the run ends UNKNOWN at its deadline,
            # after the agent created its Job, read its pod and deleted the older Job.
            check = checks_by_name(await probe_status(kube, where, "job")).get("c", {})
            jobs = await kube.list(JOBS, namespace=where)
            names = [j["metadata"]["name"] for j in jobs["items"]]
            return check.get("status") == "UNKNOWN" and len(names) == 1 and "job-old" not in names

        await eventually(ran, within=30, interval=0.2, what="a container probe's run")
        assert proxy.forbidden == []
    finally:
        await agent.stop()
        proxy.stop()
        await kube.delete(PROBES, "job", namespace=where)


@pytest.mark.parametrize(
    ("applied", "scope"),
    [
        pytest.param("base", ("--namespace", RBAC_NAMESPACE), id="no-bindings"),
        pytest.param("namespace", ("--all-namespaces",), id="namespace-bindings-cluster-mode"),
    ],
)
async def test_agent_is_refused_beyond_its_bindings(
    applied: str,
    scope: tuple[str, ...],
    rbac: Callable[..., None],
    kube_api: client.ApiClient,
    kube_config_path: Path,
    agent_process: AgentStarter,
    tmp_path: Path,
) -> None:
    rbac(f"managed/rbac/{applied}")
    who = accounts.user(AGENT["namespace"], AGENT["name"])
    accounts.wait_granted(kube_api, who, [(NODES.permission("list"), None)])
    proxy = _agent_proxy(kube_api, kube_config_path, tmp_path)
    agent = await agent_process(kubeconfig=proxy.kubeconfig, scope=scope)
    try:
        refused = await eventually(
            lambda: [r for r in proxy.forbidden if "/probes" in r], what="a 403 on Probes"
        )
        assert refused[0].startswith("GET ")
    finally:
        await agent.stop()
        proxy.stop()
