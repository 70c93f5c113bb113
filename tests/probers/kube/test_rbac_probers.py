"""The Kubernetes probers run as the agent's ServiceAccount, bound by manifests/ alone.

Real control plane leg only (the API test server enforces no RBAC): the authorizer must allow
every call each prober makes with the namespace-mode bindings (the default), and every call
must be one its module declares in PERMISSIONS.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from kubeprober.exporter.kube.access import ProberAccess
from kubeprober.exporter.runner import run_check
from kubeprober.kube.api import KubeApi
from kubeprober.probers import registry
from kubeprober.probers.status import Status
from tests.conftest import FAST_API, RBAC_NAMESPACE
from tests.harness import accounts
from tests.harness.faultproxy import FaultProxy
from tests.harness.rawapi import call
from tests.harness.simulator import LOCAL_IMAGE, Simulator, http_server
from tests.probers.kube.conftest import make_check

AGENT = "kubeprober-agent"
CLUSTER_SCOPED = {"nodes", "namespaces", "validatingwebhookconfigurations"}
CLUSTER_SCOPED |= {"mutatingwebhookconfigurations"}
# What each prober is asked here: things in the agent's namespace, or the whole cluster.
RUNS: dict[str, dict[str, Any]] = {
    "nodes": {"minNodes": 0},
    "pod-lifecycle": {},
    "namespace": {"prefix": "kp-test-rbac-"},
    "webhooks": {"labelSelector": "kubeprober.test/none=none"},
    "addons": {"components": [f"deployment/{RBAC_NAMESPACE}/none"]},
    "service": {"image": LOCAL_IMAGE, "command": http_server(), "args": [], "protocol": "tcp"},
    # A DNS Service of the agent's namespace: reading kube-system needs more than these bindings.
    "dns": {"cluster": True, "service": f"{RBAC_NAMESPACE}/dns", "name": "kubernetes.test"},
    "certificates": {"namespaces": [RBAC_NAMESPACE]},
    # No such Ingress: ERROR "not found" needs the read to be allowed; a refusal is UNKNOWN.
    "ingress": {"ingress": f"{RBAC_NAMESPACE}/none"},
}


async def test_probers_work_as_the_agents_service_account(
    rbac: Callable[..., None],
    kube_api: client.ApiClient,
    kube_config_path: Path,
    kube_simulator: Simulator,
    tmp_path: Path,
) -> None:
    rbac("managed/rbac/namespace")
    dns = {"metadata": {"name": "dns"}, "spec": {"ports": [{"port": 53, "protocol": "UDP"}]}}
    assert (
        call(kube_api, "POST", f"/api/v1/namespaces/{RBAC_NAMESPACE}/services", dns).status == 201
    )
    who = accounts.user(RBAC_NAMESPACE, AGENT)
    probers = registry.probers()
    accounts.wait_granted(
        kube_api,
        who,
        [
            (p, None if p.resource in CLUSTER_SCOPED else RBAC_NAMESPACE)
            for name in RUNS
            for p in probers[name].permissions
        ],
    )
    kubeconfig = accounts.token_kubeconfig(
        kube_api, kube_config_path, RBAC_NAMESPACE, AGENT, tmp_path / "agent.yaml"
    )
    proxy = FaultProxy(kubeconfig, tmp_path).start()
    try:
        for name, options in RUNS.items():
            api = KubeApi.from_kubeconfig(proxy.kubeconfig, settings=FAST_API)
            try:
                # Short: the namespace may still be Terminating (ERROR); only a refusal matters.
                probe, check = make_check(name, options, timeout=3, namespace=RBAC_NAMESPACE)
                result = await run_check(probe, check, probers[name], kube=ProberAccess(api))
            finally:
                await api.close()
            assert result.status is not Status.UNKNOWN, (name, result.message)
            assert api.used <= set(probers[name].permissions), name
        assert proxy.forbidden == []
    finally:
        proxy.stop()
