"""The cluster simulator: nodes, scheduler, kubelet and kube-proxy stand-ins on this machine.

It is only an API client, so it works unchanged against the test server and a real
kube-apiserver. Pods get IPs in a network namespace of its own (:mod:`.netns`); ClusterIPs are
forwarded on loopback; :meth:`Simulator.start_dns` adds a cluster DNS (:mod:`.clusterdns`).
Start one per session (the ``kube_simulator`` fixture) and keep it
running until namespaces are deleted: bound pods wait for its kubelet to confirm their end.
"""

from __future__ import annotations

import ipaddress
import sys
import tempfile
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
from kubernetes import config

from .clusterdns import ClusterDns
from .kubelet import LOCAL_IMAGE, UNPULLABLE_IMAGE, Kubelet
from .netns import NetnsUnavailable, PodNetwork
from .proxy import ServiceProxy

_HTTP_SERVER = (
    "import http.server, os, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = os.environ['HOSTNAME'].encode()\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.HTTPServer((os.environ['POD_IP'], int(sys.argv[1])), H).serve_forever()\n"
)


def http_server(port: int = 8080) -> list[str]:
    """Return a local container's command: an HTTP server at ``$POD_IP:port`` answering every
    GET with 200 and the pod's name (the container needs ``POD_IP`` from ``status.podIP``)."""
    return [sys.executable, "-c", _HTTP_SERVER, str(port)]


__all__ = [
    "LOCAL_IMAGE",
    "UNPULLABLE_IMAGE",
    "ClusterDns",
    "NetnsUnavailable",
    "Simulator",
    "http_server",
]


class Simulator:
    """Kubelet + kube-proxy stand-ins for one cluster."""

    def __init__(self, kubeconfig: Path, *, ip: str, nsenter: str, nodes: int = 1) -> None:
        """Set up the pod network (raises :class:`NetnsUnavailable`); ``ip``, ``nsenter``: paths."""
        self.network = PodNetwork.create(ip, nsenter)
        self._tmp = tempfile.TemporaryDirectory(prefix="kube-sim-")
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.kubelet = Kubelet(self.api, Path(self._tmp.name), self.network, nodes=nodes)
        self.proxy = ServiceProxy(self.api, self.network)
        self.dns = ClusterDns(self.api, self.network)
        self.proxy.subscribers.append(self.dns)

    @property
    def nodes(self) -> list[str]:
        """Return the names of the simulated nodes."""
        return self.kubelet.nodes

    @property
    def host_ip(self) -> str:
        """Return the host's address as pods see it (their ``status.hostIP``)."""
        return self.network.host_ip

    @property
    def pod_subnet(self) -> ipaddress.IPv4Network:
        """Return the /24 pod IPs come from."""
        return self.network.subnet

    def start(self) -> None:
        """Register nodes and start the kubelet and proxy threads."""
        self.kubelet.start()
        self.proxy.start()

    def start_dns(self, *, timeout: float = 30.0) -> ClusterDns:
        """Deploy the cluster DNS (once) and return it when every replica answers, directly
        and through the ClusterIP; raise TimeoutError after ``timeout`` seconds."""
        ip = self.dns.deploy()
        deadline = time.monotonic() + timeout
        while not self._dns_answers(ip):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"cluster DNS not serving within {timeout:g}s: Service {ip}, "
                    f"replicas served {sorted(self.dns.serving)}"
                )
            time.sleep(0.1)
        return self.dns

    def _dns_answers(self, service_ip: str) -> bool:
        if len(self.dns.serving) < self.dns.replicas:
            return False
        query = dns.message.make_query("kubernetes.default.svc.cluster.local", "A")
        for server in (service_ip, *self.dns.serving):
            try:
                if dns.query.udp(query, server, timeout=0.5).rcode() != dns.rcode.NOERROR:
                    return False
            except (dns.exception.DNSException, OSError):
                return False
        return True

    def stop(self) -> None:
        """Stop everything, kill local processes, remove nodes."""
        self.dns.remove()
        self.proxy.stop()
        self.kubelet.stop()
        self.api.close()
        self.network.close()
        self._tmp.cleanup()

    def logs(self, namespace: str, pod: str, container: str) -> str:
        """Return the output of a local container."""
        return self.kubelet.logs(namespace, pod, container)
