"""Simulated nodes: registration with Ready conditions and Lease heartbeats.

Kept apart from the pod lifecycle: a real node controller marks nodes NotReady (and evicts
their pods) when Leases in ``kube-node-lease`` stop being renewed, which this prevents.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)

MERGE = "application/merge-patch+json"


def ts() -> str:
    """Return the current Kubernetes timestamp."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Nodes:
    """Registers the simulated nodes and keeps their Leases fresh."""

    def __init__(
        self, api: client.ApiClient, names: list[str], stopped: threading.Event, *, address: str
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.coord = client.CoordinationV1Api(api)
        self.names = names
        self.stopped = stopped
        self.address = address

    def register(self) -> None:
        """Create (or refresh) every node as Ready."""
        for name in self.names:
            self._register(name)

    def remove(self) -> None:
        """Delete the nodes (pod GC then removes pods left on them)."""
        for name in self.names:
            try:
                self.core.delete_node(name)
            except ApiException as exc:
                log.debug("delete node %s: %s", name, exc)

    def heartbeat(self) -> None:
        """Renew node Leases every 10 s until stopped."""
        while not self.stopped.is_set():
            for name in self.names:
                try:
                    self._renew(name)
                except Exception as exc:  # an API outage must not kill the heartbeat
                    log.debug("lease %s: %s", name, exc)
            self.stopped.wait(10)

    def _register(self, name: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "kubeprober.io/simulated": "true",
                },
            },
        }
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.core.patch_node_status(name, self._node_status(), _content_type=MERGE)

    def _node_status(self) -> dict[str, Any]:
        now = ts()
        conds = [
            {
                "type": t,
                "status": "False",
                "reason": f"KubeletHas{r}",
                "message": f"kubelet has {r.lower()}",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
            for t, r in (
                ("MemoryPressure", "SufficientMemory"),
                ("DiskPressure", "NoDiskPressure"),
                ("PIDPressure", "SufficientPID"),
            )
        ]
        conds.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "kubelet is posting ready status (simulated)",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
        )
        res = {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"}
        return {
            "status": {
                "capacity": res,
                "allocatable": res,
                "conditions": conds,
                "addresses": [
                    {"type": "InternalIP", "address": self.address},
                    {"type": "Hostname", "address": "localhost"},
                ],
                "nodeInfo": {
                    "kubeletVersion": "v1.33.0-sim",
                    "kubeProxyVersion": "v1.33.0-sim",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "containerRuntimeVersion": "sim://1.0",
                    "osImage": "simulated",
                    "kernelVersion": os.uname().release,
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            }
        }

    def _renew(self, name: str) -> None:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}
        try:
            self.coord.patch_namespaced_lease(
                name, "kube-node-lease", {"spec": spec}, _content_type=MERGE
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coord.create_namespaced_lease(
                "kube-node-lease",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": name},
                    "spec": spec,
                },
            )

    # -- pods -----------------------------------------------------------------------------
