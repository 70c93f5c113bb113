"""The cluster simulator: local pod processes, Job completion, ClusterIP forwarding."""

from __future__ import annotations

import sys
import urllib.request
from typing import Any

from kubernetes import client

from tests.harness.rawapi import call
from tests.harness.simulator import LOCAL_IMAGE, Simulator
from tests.harness.waiting import wait_for

SCRIPT = (
    "import os, sys; print(os.environ['GREETING'], os.environ['POD_IP'], "
    "os.environ['FROM_CM']); sys.exit(int(os.environ['CODE']))"
)


def _pod(name: str, code: int) -> dict[str, Any]:
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
                    "command": [sys.executable, "-c", SCRIPT],
                    "env": [
                        {"name": "CODE", "value": str(code)},
                        {"name": "GREETING", "value": "hello-$(CODE)"},
                        {
                            "name": "POD_IP",
                            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                        },
                        {
                            "name": "FROM_CM",
                            "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "k"}},
                        },
                    ],
                }
            ],
        },
    }


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
    call(kube_api, "POST", f"/api/v1/namespaces/{ns}/pods", _pod("ok", 0))
    call(kube_api, "POST", f"/api/v1/namespaces/{ns}/pods", _pod("bad", 3))
    assert wait_for(lambda: _phase(kube_api, ns, "ok"), what="ok finished") == "Succeeded"
    assert wait_for(lambda: _phase(kube_api, ns, "bad"), what="bad finished") == "Failed"
    pod = call(kube_api, "GET", f"/api/v1/namespaces/{ns}/pods/bad").body
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 3
    ok = call(kube_api, "GET", f"/api/v1/namespaces/{ns}/pods/ok").body
    out = kube_simulator.logs(ns, "ok", "main").split()
    assert out[:2] == ["hello-0", ok["status"]["podIP"]]
    assert out[2] == "from-configmap"


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


SERVER = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = os.environ['HOSTNAME'].encode()\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.HTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n"
)


def test_cluster_ip_forwards_to_ready_pod(
    kube_api: client.ApiClient, kube_namespace: str, kube_simulator: Simulator
) -> None:
    """A Service ClusterIP on loopback reaches a local pod once it passes readiness."""
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
                                "command": [sys.executable, "-c", SERVER],
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
