"""The ``service`` prober against the simulator: its own server, existing Services, each step's
failure (endpoints, connect, request, DNS), on both API legs."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from kubeprober.exporter.runner import run_check
from kubeprober.probers import registry, service
from kubeprober.probers.options import SpecError, parse_options
from kubeprober.probers.sdk import Context
from kubeprober.probers.status import Status
from tests.harness.rawapi import call
from tests.harness.simulator import (
    LOCAL_IMAGE,
    UNPULLABLE_IMAGE,
    ClusterDns,
    Simulator,
    http_server,
)
from tests.harness.waiting import wait_for
from tests.probers.kube.conftest import RunKube, make_check

# Its own server, as the simulator runs one: a local process on the pod IP.
LOCAL = {"image": LOCAL_IMAGE, "command": http_server(), "args": []}


def _objects(api: client.ApiClient, ns: str) -> list[str]:
    """Return the prober's Deployments and Services in ns that are not being deleted."""
    found = []
    for path in (f"/apis/apps/v1/namespaces/{ns}/deployments", f"/api/v1/namespaces/{ns}/services"):
        items = call(api, "GET", path, query={"labelSelector": service.LABEL}).body["items"]
        found += [
            o["metadata"]["name"] for o in items if not o["metadata"].get("deletionTimestamp")
        ]
    return found


async def test_own_server_by_cluster_ip_and_dns_name(
    run_kube: RunKube,
    kube_api: client.ApiClient,
    kube_namespace: str,
    kube_simulator: Simulator,
    kube_cluster_dns: ClusterDns,
) -> None:
    ns = kube_namespace
    result = await run_kube("service", {**LOCAL, "dns": True}, namespace=ns, deadline=20)
    assert result.status is Status.PASS, result.message
    assert result.message.startswith(f"Service {ns}/kubeprober-service-")
    assert ": endpoints ready in " in result.message
    assert f".{ns}.svc.cluster.local:80/: " in result.message
    assert {"cleanup", "create", "endpoints", "dns", "connect", "request", "delete"} <= set(
        result.phases
    )
    assert _objects(kube_api, ns) == []  # deleted at the end of the run


async def test_leftovers_of_earlier_runs_are_removed(
    run_kube: RunKube, kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator
) -> None:
    ns = kube_namespace
    owner = Context(namespace=ns, probe="p", check="c", timeout=1).owner_id()
    body = {
        "metadata": {"name": "left-behind", "labels": {service.LABEL: owner}},
        "spec": {"ports": [{"port": 80}]},
    }
    assert call(kube_api, "POST", f"/api/v1/namespaces/{ns}/services", body).status == 201
    result = await run_kube("service", {**LOCAL, "protocol": "tcp"}, namespace=ns, deadline=20)
    assert result.status is Status.PASS, result.message
    assert result.message.endswith(":80 accepts connections")
    assert _objects(kube_api, ns) == []


async def test_pods_that_never_get_ready_are_named(
    run_kube: RunKube, kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator
) -> None:
    ns = kube_namespace
    result = await run_kube("service", {"image": UNPULLABLE_IMAGE}, namespace=ns, deadline=3)
    assert result.status is Status.ERROR
    assert result.message.startswith(f"endpoints: Service {ns}/kubeprober-service-")
    assert "has no ready endpoint after " in result.message
    assert ": container server: ErrImagePull: Failed to pull image" in result.message
    assert _objects(kube_api, ns) == []


def _deploy(api: client.ApiClient, ns: str, name: str) -> str:
    """Run the local server behind Service ``name`` (port 80) and wait until it is ready."""
    labels = {"app": name}
    container = {
        "name": "server",
        "image": LOCAL_IMAGE,
        "command": http_server(),
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    }
    deployment = {
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }
    assert call(api, "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment).status == 201
    return _service(
        api, ns, name, {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}
    )


def _service(api: client.ApiClient, ns: str, name: str, spec: dict[str, Any]) -> str:
    ans = call(
        api, "POST", f"/api/v1/namespaces/{ns}/services", {"metadata": {"name": name}, "spec": spec}
    )
    assert ans.status == 201, ans.body
    return str(ans.body["spec"]["clusterIP"])


def _answers(ip: str) -> bool:
    try:
        socket.create_connection((ip, 80), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def web(kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator) -> str:
    """Return ``namespace/web``: an existing Service whose server answers on its ClusterIP."""
    ip = _deploy(kube_api, kube_namespace, "web")
    wait_for(lambda: _answers(ip), what="Service web answering")
    return f"{kube_namespace}/web"


@pytest.fixture
def broken_dns(kube_cluster_dns: ClusterDns) -> Iterator[ClusterDns]:
    """Every cluster DNS replica answers SERVFAIL during the test."""
    for address in kube_cluster_dns.serving:
        kube_cluster_dns.fault(address, "servfail")
    yield kube_cluster_dns
    for address in kube_cluster_dns.serving:
        kube_cluster_dns.fault(address, None)


async def test_existing_service(run_kube: RunKube, web: str, kube_cluster_dns: ClusterDns) -> None:
    result = await run_kube("service", {"service": web, "dns": True, "expectedCodes": [200]})
    assert result.status is Status.PASS, result.message
    namespace, name = web.split("/")
    assert result.message.startswith(f"Service {web}; {name}.{namespace}.svc.cluster.local:80/: ")

    result = await run_kube("service", {"service": web, "expectedCodes": [204]}, deadline=3)
    assert result.status is Status.ERROR
    assert result.message.startswith(f"request: Service {web}; ")
    assert "expected status 204, got 200" in result.message


async def test_name_that_does_not_resolve(
    run_kube: RunKube, web: str, broken_dns: ClusterDns
) -> None:
    result = await run_kube("service", {"service": web, "dns": True}, deadline=3)
    assert result.status is Status.ERROR
    namespace, name = web.split("/")
    want = f"dns: {name}.{namespace}.svc.cluster.local A via kube-system/kube-dns ("
    assert result.message.startswith(want), result.message
    assert "SERVFAIL" in result.message


async def test_service_without_ready_endpoints(
    run_kube: RunKube, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    _service(kube_api, ns, "idle", {"selector": {"app": "none"}, "ports": [{"port": 80}]})
    result = await run_kube("service", {"service": f"{ns}/idle"})
    assert result.status is Status.ERROR
    assert result.message == f"endpoints: Service {ns}/idle has no ready endpoints"

    result = await run_kube("service", {"service": f"{ns}/nope"})
    assert result.status is Status.ERROR
    assert result.message == f"Service {ns}/nope not found"

    result = await run_kube("service", {"service": f"{ns}/idle", "port": 81})
    assert result.status is Status.ERROR
    assert result.message == f"Service {ns}/idle has no port 81 (TCP ports: 80)"


async def test_cluster_ip_refusing_while_endpoints_are_ready(
    run_kube: RunKube, kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator
) -> None:
    """Ready endpoints, yet nothing at the ClusterIP: kube-proxy has not programmed it."""
    ns = kube_namespace
    ip = _service(kube_api, ns, "lost", {"ports": [{"port": 80}]})
    # Holding the port on this host keeps the simulator's kube-proxy from listening there.
    with socket.socket() as holder:
        holder.bind((ip, 80))
        endpoints = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "lost", "labels": {"kubernetes.io/service-name": "lost"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [kube_simulator.network.pod_ips[-1]]}],
            "ports": [{"name": "", "port": 80, "protocol": "TCP"}],
        }
        path = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
        assert call(kube_api, "POST", path, endpoints).status == 201
        result = await run_kube("service", {"service": f"{ns}/lost"}, deadline=2)
    assert result.status is Status.ERROR
    assert result.message.startswith(f"connect: the ClusterIP {ip}:80: Connection refused (for ")


async def test_without_a_kubernetes_api_it_cannot_tell() -> None:
    probe, check = make_check("service", {}, timeout=5)
    result = await run_check(probe, check, registry.get("service"), kube=None)
    assert result.status is Status.UNKNOWN
    assert "needs a Kubernetes API" in result.message


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"service": "web"}, 'with.service: expected namespace/name of a Service, got "web"'),
        ({"service": "a/b", "image": "x"}, "with.image: only for its own server, not with service"),
        ({"service": "a/b", "args": []}, "with.args: only for its own server, not with service"),
        (
            {"dnsService": "a/b/c"},
            'with.dnsService: expected namespace/name of a Service, got "a/b/c"',
        ),
        ({"path": "x"}, 'with.path: expected a path starting with /, got "x"'),
        ({"protocol": "udp"}, 'with.protocol: expected one of http, tcp, got "udp"'),
    ],
)
def test_spec_rejects(data: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_options(service.Spec, data, "with")
    assert str(raised.value).startswith(error)
