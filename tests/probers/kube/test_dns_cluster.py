"""The ``dns`` prober's cluster mode against the simulator's cluster DNS (both API legs).

The simulator serves kube-system/kube-dns with two replicas; one can be broken on purpose,
and the prober must name it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import dns.message as dnsmessage
import dns.query as dnsquery
import pytest
from kubernetes import client

from kubeprober.exporter.runner import run_check
from kubeprober.probers import registry
from kubeprober.probers.result import CheckResult
from kubeprober.probers.status import Status
from tests.harness.rawapi import call
from tests.harness.simulator import ClusterDns
from tests.harness.waiting import wait_for
from tests.probers.kube.conftest import RunKube, make_check

KUBERNETES = "kubernetes.default.svc.cluster.local"


@pytest.fixture
def cluster_dns(kube_cluster_dns: ClusterDns) -> Iterator[ClusterDns]:
    """The cluster DNS, with an upstream name; faults are healed after the test."""
    kube_cluster_dns.hosts["www.example.test"] = "192.0.2.8"
    yield kube_cluster_dns
    for address in kube_cluster_dns.serving:
        kube_cluster_dns.fault(address, None)
    kube_cluster_dns.hosts.clear()


async def run(run_kube: RunKube, options: dict[str, Any], **kwargs: Any) -> CheckResult:
    """Run one ``dns`` check in cluster mode with ``options`` as its ``with:``."""
    return await run_kube("dns", {"cluster": True, **options}, **kwargs)


def _pods(api: client.ApiClient) -> dict[str, str]:
    """Return the kube-dns endpoints' pod names by address."""
    slices = call(
        api,
        "GET",
        "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
        query={"labelSelector": "kubernetes.io/service-name=kube-dns"},
    ).body["items"]
    return {
        a: ep["targetRef"]["name"]
        for s in slices
        for ep in s.get("endpoints") or []
        for a in ep["addresses"]
    }


@pytest.mark.parametrize("tcp", [False, True])
async def test_every_server_answers(run_kube: RunKube, cluster_dns: ClusterDns, tcp: bool) -> None:
    options = {"name": KUBERNETES, "externalName": "www.example.test", "tcp": tcp}
    result = await run(run_kube, options)
    assert result.status is Status.PASS, result.message
    assert result.message == (
        f"{KUBERNETES} A and www.example.test A: answered by the Service kube-system/kube-dns "
        "and its 2 endpoints"
    )
    assert {"api", "resolve"} <= set(result.phases)


@pytest.mark.parametrize("fault", ["servfail", "silent"])
async def test_one_broken_replica_is_named(
    run_kube: RunKube, cluster_dns: ClusterDns, kube_api: client.ApiClient, fault: Any
) -> None:
    broken, healthy = sorted(cluster_dns.serving)
    cluster_dns.fault(broken, fault)
    pods = _pods(kube_api)

    result = await run(run_kube, {"name": KUBERNETES}, deadline=1.5)

    assert result.status is Status.ERROR, result.message
    assert result.message.startswith(f"1 of 2 endpoints fail ({pods[broken]} ({broken}:53))")
    why = "SERVFAIL" if fault == "servfail" else "timed out"
    assert why in result.message
    assert pods[healthy] not in result.message


async def test_a_name_that_does_not_resolve(
    run_kube: RunKube, cluster_dns: ClusterDns, kube_namespace: str
) -> None:
    name = f"missing.{kube_namespace}.svc.cluster.local"
    result = await run(run_kube, {"name": KUBERNETES, "externalName": name})
    assert result.status is Status.ERROR
    assert result.message.startswith("2 of 2 endpoints fail")
    assert f"{name} A: no such name (NXDOMAIN) from the Service kube-system/kube-dns" in (
        result.message
    )


def _answers(servers: list[str], name: str) -> bool:
    """Tell whether every server has an A record for name (the records follow the API)."""
    query = dnsmessage.make_query(name, "A")
    return all(dnsquery.udp(query, s, timeout=1).answer for s in servers)


async def test_a_service_name_must_give_its_cluster_ip(
    run_kube: RunKube, cluster_dns: ClusterDns, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """A Service's name resolves to its ClusterIP, as the API says, through every server."""
    ns = kube_namespace
    body = {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}
    ip = call(kube_api, "POST", f"/api/v1/namespaces/{ns}/services", body).body["spec"]["clusterIP"]
    name = f"web.{ns}.svc.cluster.local"
    servers = [cluster_dns.service_ip, *cluster_dns.serving]
    wait_for(lambda: _answers(servers, name), what=f"{name} in the cluster DNS")
    result = await run(run_kube, {"name": name})
    assert result.status is Status.PASS, result.message

    # A DNS that answers something else for a Service's name (stale records, a rogue zone).
    stale = f"web.{ns}.svc.cluster.test"
    cluster_dns.hosts[stale] = "192.0.2.9"
    result = await run(run_kube, {"name": stale})
    assert result.status is Status.ERROR
    assert result.message.startswith("2 of 2 endpoints fail")
    assert f"{stale} A via the Service kube-system/kube-dns " in result.message
    assert f'missing "{ip}"; got "192.0.2.9"' in result.message


def _dns_service(api: client.ApiClient, ns: str) -> str:
    """Create a selector-less Service ``dns`` with port 53/UDP; return its ClusterIP."""
    body = {
        "metadata": {"name": "dns"},
        "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    }
    return str(
        call(api, "POST", f"/api/v1/namespaces/{ns}/services", body).body["spec"]["clusterIP"]
    )


async def test_cluster_ip_path_broken_while_endpoints_answer(
    run_kube: RunKube, cluster_dns: ClusterDns, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """Endpoints that answer behind a ClusterIP that does not: kube-proxy is named."""
    ns = kube_namespace
    ip = _dns_service(kube_api, ns)
    result = await run(run_kube, {"name": KUBERNETES, "service": f"{ns}/dns"})
    assert result.status is Status.ERROR
    assert result.message == f"cluster DNS Service {ns}/dns has no ready endpoints"

    # Something else holds the ClusterIP's port on this host, silently: kube-proxy's rule is
    # missing, as it were, while the replicas behind it are fine.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind((ip, 53))
        replica = sorted(cluster_dns.serving)[0]
        body = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "dns", "labels": {"kubernetes.io/service-name": "dns"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [replica], "conditions": {"ready": True}}],
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}],
        }
        path = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
        assert call(kube_api, "POST", path, body).status == 201

        result = await run(run_kube, {"name": KUBERNETES, "service": f"{ns}/dns"}, deadline=1.5)

    assert result.status is Status.ERROR
    assert result.message.startswith(
        f"the Service {ns}/dns ({ip}:53) fails while every endpoint answers: "
        "the ClusterIP path (kube-proxy): timed out"
    )


async def test_missing_service(run_kube: RunKube, kube_namespace: str) -> None:
    result = await run(run_kube, {"name": KUBERNETES, "service": f"{kube_namespace}/nope"})
    assert result.status is Status.ERROR
    assert result.message == f"cluster DNS Service {kube_namespace}/nope not found"


async def test_without_a_kubernetes_api_it_cannot_tell() -> None:
    probe, check = make_check("dns", {"name": KUBERNETES, "cluster": True}, timeout=5)
    result = await run_check(probe, check, registry.get("dns"), kube=None)
    assert result.status is Status.UNKNOWN
    assert "needs a Kubernetes API" in result.message
