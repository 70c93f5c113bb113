"""The simulator's cluster DNS: kube-dns answers for Services and Pods, per replica, over UDP
through the ClusterIP (the kube-proxy stand-in's UDP forwarding) from the host and from pods."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
from kubernetes import client

from tests.harness.rawapi import call
from tests.harness.simulator import LOCAL_IMAGE, ClusterDns, Simulator
from tests.harness.waiting import wait_for

Answer = tuple[str, list[str]]


def ask(server: str, name: str, rdtype: str = "A", *, tcp: bool = False) -> Answer:
    """Return the rcode and the answers' text of one query to server:53."""
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    reply = send(query, server, timeout=2)
    values = sorted(rr.to_text() for rrset in reply.answer for rr in rrset)
    return dns.rcode.to_text(reply.rcode()), values


@pytest.fixture
def cluster_dns(kube_cluster_dns: ClusterDns) -> Iterator[ClusterDns]:
    """Return the cluster DNS; faults and upstream names set by the test are undone after it."""
    yield kube_cluster_dns
    for address in kube_cluster_dns.serving:
        kube_cluster_dns.fault(address, None)
    kube_cluster_dns.hosts.clear()


def _service(api: client.ApiClient, ns: str, name: str, spec: dict[str, object]) -> str:
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}
    ans = call(api, "POST", f"/api/v1/namespaces/{ns}/services", body)
    assert ans.status == 201, ans.body
    return str(ans.body["spec"].get("clusterIP", ""))


def test_services_pods_and_upstream_names_resolve(
    kube_api: client.ApiClient, kube_namespace: str, cluster_dns: ClusterDns
) -> None:
    """Every replica and the ClusterIP answer Services, headless ones, Pods and upstream names."""
    ns = kube_namespace
    ip = _service(kube_api, ns, "web", {"ports": [{"port": 80}]})
    _service(kube_api, ns, "alias", {"type": "ExternalName", "externalName": "db.example.test"})
    _service(kube_api, ns, "peers", {"clusterIP": "None", "ports": [{"port": 80}]})
    peer = sorted(cluster_dns.serving)[0]  # an address in the pod /24, as endpoints must be
    ans = call(
        kube_api,
        "POST",
        f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "peers", "labels": {"kubernetes.io/service-name": "peers"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [peer], "conditions": {"ready": True}}],
            "ports": [{"name": "", "port": 80, "protocol": "TCP"}],
        },
    )
    assert ans.status == 201, ans.body
    cluster_dns.hosts["www.example.test"] = "192.0.2.7"
    kubernetes = call(kube_api, "GET", "/api/v1/namespaces/default/services/kubernetes").body
    domain = f"{ns}.svc.cluster.local"
    expected = {
        "kubernetes.default.svc.cluster.local": ("NOERROR", [kubernetes["spec"]["clusterIP"]]),
        f"web.{domain}": ("NOERROR", [ip]),
        f"peers.{domain}": ("NOERROR", [peer]),
        f"alias.{domain}": ("NOERROR", ["db.example.test."]),
        f"198-18-7-9.{ns}.pod.cluster.local": ("NOERROR", ["198.18.7.9"]),
        f"missing.{domain}": ("NXDOMAIN", []),
        "www.example.test": ("NOERROR", ["192.0.2.7"]),
        "nowhere.example.test": ("NXDOMAIN", []),
    }
    for server in (cluster_dns.service_ip, *sorted(cluster_dns.serving)):
        for name, want in expected.items():
            # The records follow the API within a poll (0.25 s).
            wait_for(lambda s=server, n=name, w=want: ask(s, n) == w, what=f"{name} from {server}")
    assert ask(cluster_dns.service_ip, f"web.{domain}", tcp=True) == ("NOERROR", [ip])
    assert ask(cluster_dns.service_ip, f"web.{domain}", "AAAA") == ("NOERROR", [])


def test_one_replica_can_be_broken(cluster_dns: ClusterDns) -> None:
    """A faulty replica answers SERVFAIL or nothing, while the others still answer."""
    broken, *healthy = sorted(cluster_dns.serving)
    name = "kubernetes.default.svc.cluster.local"
    cluster_dns.fault(broken, "servfail")
    assert ask(broken, name)[0] == "SERVFAIL"
    assert all(ask(address, name)[0] == "NOERROR" for address in healthy)
    cluster_dns.fault(broken, "silent")
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(dns.message.make_query(name, "A"), broken, timeout=0.3)
    cluster_dns.fault(broken, None)
    assert ask(broken, name)[0] == "NOERROR"


RESOLVE = (
    "import os, dns.message, dns.query\n"
    "q = dns.message.make_query('kubernetes.default.svc.cluster.local', 'A')\n"
    "print(dns.query.udp(q, os.environ['DNS'], timeout=5).answer[0][0])\n"
)


def test_pods_resolve_through_the_cluster_ip(
    kube_api: client.ApiClient,
    kube_namespace: str,
    kube_simulator: Simulator,
    cluster_dns: ClusterDns,
) -> None:
    """A pod asks the kube-dns ClusterIP over UDP and gets its answer back from it."""
    ns = kube_namespace
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "resolver"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": LOCAL_IMAGE,
                    "command": [sys.executable, "-c", RESOLVE],
                    "env": [{"name": "DNS", "value": cluster_dns.service_ip}],
                }
            ],
        },
    }
    assert call(kube_api, "POST", f"/api/v1/namespaces/{ns}/pods", pod).status == 201

    def phase() -> str:
        got = call(kube_api, "GET", f"/api/v1/namespaces/{ns}/pods/resolver").body
        return str(got["status"]["phase"])

    kubernetes = call(kube_api, "GET", "/api/v1/namespaces/default/services/kubernetes").body
    assert wait_for(lambda: phase() in ("Succeeded", "Failed"), what="resolver finished")
    out = kube_simulator.logs(ns, "resolver", "main")
    assert out.strip() == kubernetes["spec"]["clusterIP"], out
