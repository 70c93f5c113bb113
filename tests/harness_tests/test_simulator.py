"""The cluster simulator: local pod processes, scheduling, image pulls, Job completion,
ClusterIP forwarding."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import subprocess
import sys
import threading
import urllib.request
from typing import Any

import pytest
from kubernetes import client

from tests.binaries import binary
from tests.harness.rawapi import call
from tests.harness.simulator import LOCAL_IMAGE, UNPULLABLE_IMAGE, Simulator, http_server
from tests.harness.simulator.netns import PodNetwork
from tests.harness.simulator.scheduling import unschedulable_message
from tests.harness.waiting import wait_for

SCRIPT = (
    "import os, sys; print(os.environ['GREETING'], os.environ['POD_IP'], "
    "os.environ['FROM_CM']); sys.exit(int(os.environ['CODE']))"
)


def _pod(name: str, script: str, env: list[dict[str, Any]]) -> dict[str, Any]:
    """Return a pod that runs a Python script once, as a local process."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": LOCAL_IMAGE,
                    "command": [sys.executable, "-c", script],
                    "env": env,
                }
            ],
        },
    }


def _exiting(name: str, code: int) -> dict[str, Any]:
    return _pod(
        name,
        SCRIPT,
        [
            {"name": "CODE", "value": str(code)},
            {"name": "GREETING", "value": "hello-$(CODE)"},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {
                "name": "FROM_CM",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "k"}},
            },
        ],
    )


def _phase(api: client.ApiClient, ns: str, name: str) -> str:
    phase = call(api, "GET", f"/api/v1/namespaces/{ns}/pods/{name}").body["status"]["phase"]
    return phase if phase in ("Succeeded", "Failed") else ""


def test_local_pod_exit_code_becomes_phase(
    kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator
) -> None:
    """A local-image pod runs its command with the pod's env; its exit code sets the phase."""
    ns = kube_namespace
    call(
        kube_api,
        "POST",
        f"/api/v1/namespaces/{ns}/configmaps",
        {"metadata": {"name": "settings"}, "data": {"k": "from-configmap"}},
    )
    call(kube_api, "POST", f"/api/v1/namespaces/{ns}/pods", _exiting("ok", 0))
    call(kube_api, "POST", f"/api/v1/namespaces/{ns}/pods", _exiting("bad", 3))
    assert wait_for(lambda: _phase(kube_api, ns, "ok"), what="ok finished") == "Succeeded"
    assert wait_for(lambda: _phase(kube_api, ns, "bad"), what="bad finished") == "Failed"
    pod = call(kube_api, "GET", f"/api/v1/namespaces/{ns}/pods/bad").body
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 3
    ok = call(kube_api, "GET", f"/api/v1/namespaces/{ns}/pods/ok").body
    out = kube_simulator.logs(ns, "ok", "main").split()
    assert out[:2] == ["hello-0", ok["status"]["podIP"]]
    assert out[2] == "from-configmap"


def _plain_pod(name: str, image: str = "registry.k8s.io/pause:3.10", **spec: Any) -> Any:
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": image}], **spec},
    }


def _pod_status(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = call(api, "GET", f"/api/v1/namespaces/{ns}/pods/{name}").body["status"]
    return status


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def test_a_pod_no_node_fits_is_unschedulable_until_one_does(
    kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator
) -> None:
    """As kube-scheduler: PodScheduled False, reason Unschedulable, then bound once it fits."""
    ns, node = kube_namespace, kube_simulator.nodes[0]
    selector = {"kubeprober.test/pool": ns}
    call(kube_api, "POST", f"/api/v1/namespaces/{ns}/pods", _plain_pod("p", nodeSelector=selector))

    def unschedulable() -> str:
        return str(_condition(_pod_status(kube_api, ns, "p"), "PodScheduled").get("reason", ""))

    wait_for(lambda: unschedulable() == "Unschedulable", what="PodScheduled False")
    message = _condition(_pod_status(kube_api, ns, "p"), "PodScheduled")["message"]
    assert "didn't match Pod's node affinity/selector" in message
    path = f"/api/v1/nodes/{node}"
    patch = {"metadata": {"labels": {"kubeprober.test/pool": ns}}}
    call(kube_api, "PATCH", path, patch, content_type="application/merge-patch+json")
    try:
        wait_for(lambda: _pod_status(kube_api, ns, "p").get("phase") == "Running", what="bound")
    finally:
        unlabel = {"metadata": {"labels": {"kubeprober.test/pool": None}}}
        call(kube_api, "PATCH", path, unlabel, content_type="application/merge-patch+json")


def _on_node(name: str) -> dict[str, Any]:
    """The node affinity a DaemonSet controller gives its pod for node ``name``."""
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [name]}]}
    required = {"nodeSelectorTerms": [term]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}


@pytest.mark.parametrize(
    ("node_spec", "pod_spec", "message"),
    [
        ({"unschedulable": True}, {}, "0/1 nodes are available: 1 node(s) were unschedulable."),
        (
            {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]},
            {},
            "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: db}.",
        ),
        (
            {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]},
            {"tolerations": [{"key": "dedicated", "operator": "Exists"}]},
            "",
        ),
        ({"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}, {}, ""),
        ({"unschedulable": True}, {"tolerations": [{"operator": "Exists"}]}, ""),
        (
            {},
            {"affinity": _on_node("other")},
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.",
        ),
        ({}, {"affinity": _on_node("n")}, ""),
    ],
    ids=[
        "cordoned",
        "tainted",
        "tolerated",
        "preference-only",
        "tolerates-all",
        "other-node",
        "this-node",
    ],
)
def test_scheduling_filters(
    node_spec: dict[str, Any], pod_spec: dict[str, Any], message: str
) -> None:
    node = {"metadata": {"name": "n", "labels": {}}, "spec": node_spec}
    assert unschedulable_message({"spec": pod_spec}, [node]) == message


def test_an_image_that_cannot_be_pulled_waits_in_err_image_pull(
    kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator
) -> None:
    ns = kube_namespace
    call(kube_api, "POST", f"/api/v1/namespaces/{ns}/pods", _plain_pod("p", UNPULLABLE_IMAGE))

    def waiting() -> dict[str, Any]:
        statuses = _pod_status(kube_api, ns, "p").get("containerStatuses") or [{}]
        return dict(statuses[0].get("state", {}).get("waiting") or {})

    state = wait_for(waiting, what="the container waiting")
    assert state["reason"] == "ErrImagePull"
    status = _pod_status(kube_api, ns, "p")
    assert status["phase"] == "Pending"
    assert _condition(status, "Ready")["status"] == "False"


def _job(name: str, code: int) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": LOCAL_IMAGE,
                            "command": [sys.executable, "-c", f"import sys; sys.exit({code})"],
                        }
                    ],
                }
            },
        },
    }


def _job_condition(api: client.ApiClient, ns: str, name: str) -> str:
    job = call(api, "GET", f"/apis/batch/v1/namespaces/{ns}/jobs/{name}").body
    conds = {c["type"]: c["status"] for c in job.get("status", {}).get("conditions") or []}
    return next((t for t in ("Complete", "Failed") if conds.get(t) == "True"), "")


def test_job_completes_or_fails_from_pod_phase(
    kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator
) -> None:
    """A Job whose pod exits 0 is Complete; one whose pod fails past backoffLimit is Failed."""
    ns = kube_namespace
    call(kube_api, "POST", f"/apis/batch/v1/namespaces/{ns}/jobs", _job("pass", 0))
    call(kube_api, "POST", f"/apis/batch/v1/namespaces/{ns}/jobs", _job("fail", 1))
    assert wait_for(lambda: _job_condition(kube_api, ns, "pass"), what="job pass") == "Complete"
    assert wait_for(lambda: _job_condition(kube_api, ns, "fail"), what="job fail") == "Failed"
    job = call(kube_api, "GET", f"/apis/batch/v1/namespaces/{ns}/jobs/pass").body
    assert job["status"]["succeeded"] == 1


def test_a_job_past_its_active_deadline_fails_and_its_pod_goes(
    kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator
) -> None:
    """activeDeadlineSeconds: the Job is Failed (DeadlineExceeded) and its pod deleted."""
    ns = kube_namespace
    job = _job("slow", 0)
    job["spec"]["activeDeadlineSeconds"] = 1
    job["spec"]["template"]["spec"]["containers"][0]["command"] = ["sleep", "60"]
    call(kube_api, "POST", f"/apis/batch/v1/namespaces/{ns}/jobs", job)
    assert wait_for(lambda: _job_condition(kube_api, ns, "slow"), what="job slow") == "Failed"
    body = call(kube_api, "GET", f"/apis/batch/v1/namespaces/{ns}/jobs/slow").body
    failed = [c for c in body["status"]["conditions"] if c["type"] == "Failed"]
    assert [c["reason"] for c in failed] == ["DeadlineExceeded"]

    def pods() -> list[dict[str, Any]]:
        query = {"labelSelector": "job-name=slow"}
        items: list[dict[str, Any]] = call(
            kube_api, "GET", f"/api/v1/namespaces/{ns}/pods", query=query
        ).body["items"]
        return items

    wait_for(lambda: not pods(), what="the pod deleted")


CLIENT = (
    "import os, urllib.request\n"
    "print(urllib.request.urlopen(os.environ['URL'], timeout=5).read().decode())\n"
)


def test_cluster_ip_forwards_to_ready_pod(
    kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator
) -> None:
    """A Service ClusterIP reaches a local pod once it is ready, from the host and from pods."""
    ns = kube_namespace
    call(
        kube_api,
        "POST",
        f"/apis/apps/v1/namespaces/{ns}/deployments",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "echo"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "echo"}},
                "template": {
                    "metadata": {"labels": {"app": "echo"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "srv",
                                "image": LOCAL_IMAGE,
                                "command": http_server(),
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "env": [
                                    {
                                        "name": "POD_IP",
                                        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                    }
                                ],
                                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                            }
                        ]
                    },
                },
            },
        },
    )
    svc = call(
        kube_api,
        "POST",
        f"/api/v1/namespaces/{ns}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "echo"},
            "spec": {
                "selector": {"app": "echo"},
                "ports": [{"name": "web", "port": 18080, "targetPort": "http"}],
            },
        },
    ).body
    ip = svc["spec"]["clusterIP"]

    def fetch() -> str:
        try:
            with urllib.request.urlopen(f"http://{ip}:18080/", timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            return ""

    assert wait_for(fetch, timeout=30, interval=0.2, what="service answers").startswith("echo-")
    env = [{"name": "URL", "value": f"http://{ip}:18080/"}]
    call(kube_api, "POST", f"/api/v1/namespaces/{ns}/pods", _pod("client", CLIENT, env))
    phase = wait_for(lambda: _phase(kube_api, ns, "client"), what="client finished")
    out = kube_simulator.logs(ns, "client", "main")
    assert phase == "Succeeded" and out.startswith("echo-"), out


CALLER = (
    "import os, socket, sys, urllib.request\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', int(os.environ['LOOPBACK_PORT'])), timeout=5)\n"
    "    sys.exit(3)  # the host's loopback answered: the pod shares the host's network\n"
    "except ConnectionRefusedError:\n"
    "    pass\n"
    "url = f\"http://{os.environ['HOST_IP']}:{os.environ['PORT']}/report\"\n"
    "urllib.request.urlopen(url, timeout=5).read()\n"
)


def test_pods_reach_the_host_at_host_ip_only(
    kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator
) -> None:
    """A pod reaches a server on the host at its status.hostIP, and not the host's loopback."""
    calls: list[tuple[str, str]] = []

    class Report(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            calls.append((self.path, self.client_address[0]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    host = http.server.ThreadingHTTPServer((kube_simulator.host_ip, 0), Report)
    thread = threading.Thread(target=host.serve_forever, daemon=True)
    thread.start()
    loopback = socket.create_server(("127.0.0.1", 0))
    loopback.setblocking(False)
    env = [
        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "PORT", "value": str(host.server_address[1])},
        {"name": "LOOPBACK_PORT", "value": str(loopback.getsockname()[1])},
    ]
    try:
        ns = kube_namespace
        call(kube_api, "POST", f"/api/v1/namespaces/{ns}/pods", _pod("caller", CALLER, env))
        phase = wait_for(lambda: _phase(kube_api, ns, "caller"), what="caller finished")
        assert phase == "Succeeded", kube_simulator.logs(ns, "caller", "main")
        ip = call(kube_api, "GET", f"/api/v1/namespaces/{ns}/pods/caller").body["status"]
        assert ip["hostIP"] == kube_simulator.host_ip
        assert [path for path, _ in calls] == ["/report"]
        assert ipaddress.ip_address(calls[0][1]) in kube_simulator.pod_subnet
        with pytest.raises(BlockingIOError):
            loopback.accept()
    finally:
        host.shutdown()
        host.server_close()
        thread.join()
        loopback.close()


def _manual_service(api: client.ApiClient, ns: str, name: str) -> str:
    """Create a selector-less Service on port 18081; return its ClusterIP."""
    svc = call(
        api,
        "POST",
        f"/api/v1/namespaces/{ns}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"ports": [{"port": 18081, "targetPort": 9}]},
        },
    ).body
    return str(svc["spec"]["clusterIP"])


def _endpoint(api: client.ApiClient, ns: str, name: str, address: str) -> None:
    """Give Service name one ready endpoint, address:9, by an EndpointSlice of its own."""
    ans = call(
        api,
        "POST",
        f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "", "port": 9, "protocol": "TCP"}],
        },
    )
    assert ans.status == 201, ans.body


def _listened(ip: str) -> bool:
    try:
        socket.create_connection((ip, 18081), timeout=2).close()
    except ConnectionRefusedError:
        return False
    return True


def test_cluster_ip_never_dials_outside_the_pod_subnet(
    kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator
) -> None:
    """An endpoint outside the simulator's /24 (here another session's) is never forwarded to."""
    other = PodNetwork.create(binary("ip"), binary("nsenter"))
    try:
        ns = kube_namespace
        theirs = _manual_service(kube_api, ns, "theirs")
        _endpoint(kube_api, ns, "theirs", other.pod_ips[-1])
        ours = _manual_service(kube_api, ns, "ours")
        _endpoint(kube_api, ns, "ours", kube_simulator.network.pod_ips[-1])
        wait_for(lambda: _listened(ours), what="the proxy forwarding to our /24")
        # The proxy's view that opened our listener held theirs, created first.
        assert not _listened(theirs)
    finally:
        other.close()


def _listened_in_pods(sim: Simulator, ip: str) -> bool:
    connect = f"import socket; socket.create_connection(({ip!r}, 18081), timeout=2)"
    return (
        subprocess.run(
            sim.network.command([sys.executable, "-c", connect]), capture_output=True, check=False
        ).returncode
        == 0
    )


def test_cluster_ip_held_elsewhere_is_listened_on_once_free(
    kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator
) -> None:
    """A ClusterIP:port another process holds on the host (another session's) is taken later."""
    ns = kube_namespace
    ip = _manual_service(kube_api, ns, "held")
    with socket.create_server((ip, 18081)):
        _endpoint(kube_api, ns, "held", kube_simulator.network.pod_ips[-1])
        # The proxy tries the host before the pod namespace, so it has failed on the host now.
        wait_for(lambda: _listened_in_pods(kube_simulator, ip), what="the pods' listener")
    wait_for(lambda: _listened(ip), what="the host listener, once the port is free")
