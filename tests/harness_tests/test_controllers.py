"""Controller-manager behaviour tests rely on: GC, namespace deletion, workloads, endpoints."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from kubernetes import client

from tests.harness.rawapi import call
from tests.harness.simulator import Simulator
from tests.harness.waiting import wait_for

MERGE = "application/merge-patch+json"


def _cm(
    ns: str, name: str, owner: dict[str, Any] | None = None, *, block: bool = False
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if owner:
        ref = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
        }
        if block:
            ref["blockOwnerDeletion"] = True
        meta["ownerReferences"] = [ref]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}


def _gone(api: client.ApiClient, path: str) -> bool:
    return call(api, "GET", path).status == 404


def test_garbage_collection_in_background(kube_api: client.ApiClient, kube_namespace: str) -> None:
    """Deleting an owner deletes its dependents shortly after."""
    path = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    owner = call(kube_api, "POST", path, _cm(kube_namespace, "owner")).body
    call(kube_api, "POST", path, _cm(kube_namespace, "child", owner))
    assert call(kube_api, "DELETE", f"{path}/owner").status == 200
    wait_for(lambda: _gone(kube_api, f"{path}/child"), what="dependent deleted")


def test_orphan_deletion_keeps_dependents(kube_api: client.ApiClient, kube_namespace: str) -> None:
    """propagationPolicy=Orphan removes the owner reference instead of the dependent."""
    path = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    owner = call(kube_api, "POST", path, _cm(kube_namespace, "o")).body
    call(kube_api, "POST", path, _cm(kube_namespace, "kept", owner))
    call(kube_api, "DELETE", f"{path}/o", {"propagationPolicy": "Orphan"})
    wait_for(lambda: _gone(kube_api, f"{path}/o"), what="owner deleted")
    kept = call(kube_api, "GET", f"{path}/kept").body
    assert not kept["metadata"].get("ownerReferences")


def _deleting(api: client.ApiClient, path: str) -> bool:
    return bool(call(api, "GET", path).body["metadata"].get("deletionTimestamp"))


def test_foreground_deletion_waits_for_blocking_dependents(
    kube_api: client.ApiClient, kube_namespace: str, kube_held: list[str]
) -> None:
    """Foreground deletion deletes all dependents but waits only for blockOwnerDeletion ones."""
    path = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    owner = call(kube_api, "POST", path, _cm(kube_namespace, "fg")).body
    for name, block in (("fg-block", True), ("fg-free", False)):
        child = _cm(kube_namespace, name, owner, block=block)
        child["metadata"]["finalizers"] = ["example.com/hold"]
        assert call(kube_api, "POST", path, child).status == 201
        kube_held.append(f"{path}/{name}")
    ans = call(kube_api, "DELETE", f"{path}/fg", {"propagationPolicy": "Foreground"})
    assert ans.status in (200, 202)
    held = call(kube_api, "GET", f"{path}/fg").body
    assert "foregroundDeletion" in held["metadata"]["finalizers"]
    for name in ("fg-block", "fg-free"):
        wait_for(lambda n=name: _deleting(kube_api, f"{path}/{n}"), what=f"{name} deleting")
    assert call(kube_api, "GET", f"{path}/fg").status == 200
    call(
        kube_api,
        "PATCH",
        f"{path}/fg-block",
        {"metadata": {"finalizers": None}},
        content_type=MERGE,
    )
    wait_for(lambda: _gone(kube_api, f"{path}/fg"), what="owner deleted after blocking dependent")
    assert _deleting(kube_api, f"{path}/fg-free")


def test_namespace_deletion_empties_then_removes(
    kube_api: client.ApiClient, kube_namespace: str, kube_held: list[str]
) -> None:
    """A deleted namespace is Terminating while its content goes, then disappears."""
    ns = kube_namespace
    path = f"/api/v1/namespaces/{ns}/configmaps"
    held = _cm(ns, "held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    call(kube_api, "POST", path, held)
    kube_held.append(f"{path}/held")
    call(kube_api, "POST", path, _cm(ns, "plain"))
    assert call(kube_api, "DELETE", f"/api/v1/namespaces/{ns}").status == 200
    nso = call(kube_api, "GET", f"/api/v1/namespaces/{ns}").body
    assert nso["status"]["phase"] == "Terminating"
    refused = call(kube_api, "POST", path, _cm(ns, "late"))
    assert (refused.status, refused.reason) == (403, "Forbidden")
    wait_for(lambda: _gone(kube_api, f"{path}/plain"), what="namespace content deleted")
    assert call(kube_api, "GET", f"/api/v1/namespaces/{ns}").status == 200
    call(kube_api, "PATCH", f"{path}/held", {"metadata": {"finalizers": None}}, content_type=MERGE)
    wait_for(lambda: _gone(kube_api, f"/api/v1/namespaces/{ns}"), what="namespace deleted")


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "registry.example/app:1",
                            "ports": [{"containerPort": 8080}],
                        }
                    ]
                },
            },
        },
    }


def test_deployment_runs_pods(
    kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator
) -> None:
    """A Deployment gets pods that the simulator runs; status reports them ready."""
    path = f"/apis/apps/v1/namespaces/{kube_namespace}/deployments"
    call(kube_api, "POST", path, _deployment("web", 2))

    def ready() -> bool:
        st = call(kube_api, "GET", f"{path}/web").body.get("status", {})
        return st.get("readyReplicas") == 2

    wait_for(ready, what="deployment ready")
    pods = call(
        kube_api,
        "GET",
        f"/api/v1/namespaces/{kube_namespace}/pods",
        query={"labelSelector": "app=web"},
    ).body["items"]
    assert len(pods) == 2
    for p in pods:
        assert p["status"]["phase"] == "Running"
        assert ipaddress.ip_address(p["status"]["podIP"]) in kube_simulator.pod_subnet
        assert p["spec"]["nodeName"] in kube_simulator.nodes
        owner = p["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "ReplicaSet" and owner["controller"] is True
    running = call(
        kube_api,
        "GET",
        f"/api/v1/namespaces/{kube_namespace}/pods",
        query={"fieldSelector": "status.phase=Running", "labelSelector": "app=web"},
    ).body["items"]
    assert len(running) == 2


def test_daemonset_runs_a_pod_on_each_matching_node(
    kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator
) -> None:
    """One pod per node its nodeSelector matches (the simulator's), counted in its status."""
    path = f"/apis/apps/v1/namespaces/{kube_namespace}/daemonsets"
    labels = {"app": "agent"}
    body = {
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"kubeprober.io/simulated": "true"},
                    "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}],
                },
            },
        },
    }
    call(kube_api, "POST", path, body)
    nodes = len(kube_simulator.nodes)

    def ready() -> bool:
        st = call(kube_api, "GET", f"{path}/agent").body.get("status", {})
        return st.get("desiredNumberScheduled") == nodes and st.get("numberReady") == nodes

    wait_for(ready, what="daemonset ready")
    pods = call(
        kube_api,
        "GET",
        f"/api/v1/namespaces/{kube_namespace}/pods",
        query={"labelSelector": "app=agent"},
    ).body["items"]
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(kube_simulator.nodes)
    assert {p["metadata"]["ownerReferences"][0]["kind"] for p in pods} == {"DaemonSet"}


def test_endpoint_slices_follow_ready_pods(
    kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator
) -> None:
    """A Service's EndpointSlice and Endpoints list the ready pods' IPs and target port."""
    ns = kube_namespace
    call(kube_api, "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", _deployment("api", 2))
    svc = call(
        kube_api,
        "POST",
        f"/api/v1/namespaces/{ns}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "api"},
            "spec": {
                "selector": {"app": "api"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
    ).body
    assert svc["spec"]["clusterIP"].startswith("127.0.101.")

    def slice_ready() -> list[str]:
        items = call(
            kube_api,
            "GET",
            f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
            query={"labelSelector": "kubernetes.io/service-name=api"},
        ).body["items"]
        addrs = [
            a
            for s in items
            for e in s.get("endpoints") or []
            if e["conditions"].get("ready")
            for a in e["addresses"]
        ]
        return addrs if len(addrs) == 2 else []

    addrs = wait_for(slice_ready, what="two ready endpoints")
    assert all(ipaddress.ip_address(a) in kube_simulator.pod_subnet for a in addrs)
    items = call(
        kube_api,
        "GET",
        f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
        query={"labelSelector": "kubernetes.io/service-name=api"},
    ).body["items"]
    assert items[0]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]

    def endpoints_ips() -> list[str]:
        # The Endpoints controller is not the EndpointSlice one: it catches up on its own time.
        subsets = call(kube_api, "GET", f"/api/v1/namespaces/{ns}/endpoints/api").body.get(
            "subsets"
        )
        ips = sorted(a["ip"] for sub in subsets or [] for a in sub.get("addresses") or [])
        return ips if ips == sorted(addrs) else []

    wait_for(endpoints_ips, what="Endpoints listing the same two ready pods")


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.100.4", "may not be in the loopback range"),
        ("169.254.1.1", "may not be in the link-local range"),
        ("0.0.0.0", "may not be unspecified"),
    ],
)
@pytest.mark.parametrize("kind", ["EndpointSlice", "Endpoints"])
def test_endpoints_refuse_addresses_no_pod_has(
    kube_api: client.ApiClient, kube_namespace: str, kind: str, address: str, why: str
) -> None:
    """Loopback, link-local and unspecified IPs are 422 in EndpointSlices and Endpoints.

    So a controller never publishes pods whose IPs a kube-proxy could not reach (the reason
    the simulator's pods live in a network namespace, not on loopback).
    """
    ns = kube_namespace
    if kind == "EndpointSlice":
        path = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
        body: dict[str, Any] = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": "manual"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["198.18.0.9"]}, {"addresses": [address]}],
        }
        field = "endpoints[1].addresses[0]"
    else:
        path = f"/api/v1/namespaces/{ns}/endpoints"
        body = {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {"name": "manual"},
            "subsets": [
                {
                    "addresses": [{"ip": "198.18.0.9"}],
                    "notReadyAddresses": [{"ip": address}],
                    "ports": [{"port": 80}],
                }
            ],
        }
        field = "subsets[0].notReadyAddresses[0].ip"
    ans = call(kube_api, "POST", path, body)
    assert ans.status == 422, ans.body
    assert ans.body["reason"] == "Invalid"
    [cause] = ans.body["details"]["causes"]
    assert cause["field"] == field and cause["reason"] == "FieldValueInvalid"
    assert cause["message"].startswith(f'Invalid value: "{address}": {why}')
    assert call(kube_api, "GET", f"{path}/manual").status == 404
