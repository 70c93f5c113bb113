"""Cluster DNS stand-in: the ``kube-dns`` Service, CoreDNS-like replicas and what they answer.

Probers check cluster DNS through its Service and through each of its endpoints, so the
simulator needs a DNS whose replicas are real endpoints: :meth:`ClusterDns.deploy` creates the
Service ``kube-system/kube-dns`` (53/UDP and 53/TCP) and a Deployment ``coredns`` whose pods the
kubelet stand-in "runs" (their image is never pulled). Their IPs reach EndpointSlices through
the cluster's own EndpointSlice controller, and for each endpoint address in the simulator's
/24 this module serves DNS at that address inside the pod namespace; the kube-proxy stand-in
forwards the ClusterIP to them like any Service. Records come from the proxy's poll of
Services and EndpointSlices, as CoreDNS's ``kubernetes`` plugin answers them:

- ``<service>.<namespace>.svc.cluster.local``: A, the ClusterIP (a headless Service: its ready
  endpoints' addresses); an ExternalName Service: a CNAME to its external name;
- ``<a-b-c-d>.<namespace>.pod.cluster.local``: A ``a.b.c.d`` (CoreDNS's ``pods insecure``);
- other names in ``cluster.local``: NXDOMAIN; names outside it are looked up in :attr:`hosts`,
  the stand-in for an upstream resolver (nothing leaves the machine): NXDOMAIN when absent.

One replica can be broken on purpose (:meth:`fault`), so a probe can be shown to name it.
It must not write anything but its two objects, nor serve outside the pod namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import struct
import threading
from typing import Any, Literal, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from kubernetes import client

from ..rawapi import call
from .netns import PodNetwork
from .proxy import SERVICE_CIDR, Snapshot

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"
SERVICE = "kube-dns"
DEPLOYMENT = "coredns"
LABELS = {"k8s-app": "kube-dns"}
IMAGE = "registry.k8s.io/coredns/coredns:v1.11.3"
DOMAIN = "cluster.local"
PORT = 53
TTL = 5  # CoreDNS's kubernetes plugin default
Fault = Literal["servfail", "silent"]


class ClusterDns:
    """The cluster DNS: its objects, one server per replica endpoint, the records they answer."""

    def __init__(self, api: client.ApiClient, network: PodNetwork, *, replicas: int = 2) -> None:
        self.api = api
        self.network = network
        self.replicas = replicas
        self.zone = dns.name.from_text(DOMAIN)
        self.hosts: dict[str, str] = {}
        """Names outside cluster.local and their IPv4 address: the upstream's answers. Any
        thread may set or delete single entries."""
        self.service_ip = ""
        """The kube-dns ClusterIP, once :meth:`deploy` returned."""
        self.serving: frozenset[str] = frozenset()
        """Replica addresses being served; replaced whole by the proxy loop, read anywhere."""
        self._faults: dict[str, Fault] = {}  # replica address -> fault; single-entry writes
        self._lock = threading.Lock()  # deploy() from several tests' threads
        # Owned by the proxy loop: the last poll and each replica's UDP transport and TCP server.
        self._snapshot = Snapshot([], [])
        self._servers: dict[str, tuple[asyncio.DatagramTransport, asyncio.Server]] = {}

    # -- objects --------------------------------------------------------------------------

    def deploy(self) -> str:
        """Create the kube-dns Service and the coredns Deployment unless they exist; return
        the ClusterIP. A Service already there (another tool's cluster DNS) is kept as it is."""
        with self._lock:
            if not self.service_ip:
                self.service_ip = self._service()
                self._deployment()
            return self.service_ip

    def _service(self) -> str:
        path = f"/api/v1/namespaces/{NAMESPACE}/services"
        # A random ClusterIP in the upper half: sessions side by side share the host's
        # loopback, and their test servers hand out ClusterIPs from the bottom up.
        hosts = list(SERVICE_CIDR.hosts())
        candidates = random.sample(hosts[len(hosts) // 2 :], 20)
        for ip in candidates:
            body = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": SERVICE, "labels": LABELS},
                "spec": {
                    "selector": LABELS,
                    "clusterIP": str(ip),
                    "ports": [
                        {"name": "dns", "port": PORT, "protocol": "UDP", "targetPort": PORT},
                        {"name": "dns-tcp", "port": PORT, "protocol": "TCP", "targetPort": PORT},
                    ],
                },
            }
            ans = call(self.api, "POST", path, body)
            if ans.status == 201:
                return str(ans.body["spec"]["clusterIP"])
            if ans.status == 409:
                return str(call(self.api, "GET", f"{path}/{SERVICE}").body["spec"]["clusterIP"])
            if ans.status != 422:  # 422: that ClusterIP is taken, try another
                raise RuntimeError(f"create Service {NAMESPACE}/{SERVICE}: {ans.status} {ans.body}")
        raise RuntimeError(f"no free ClusterIP for {NAMESPACE}/{SERVICE} in {candidates}")

    def _deployment(self) -> None:
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": DEPLOYMENT, "labels": LABELS},
            "spec": {
                "replicas": self.replicas,
                "selector": {"matchLabels": LABELS},
                "template": {
                    "metadata": {"labels": LABELS},
                    "spec": {
                        "containers": [
                            {
                                "name": "coredns",
                                "image": IMAGE,
                                "ports": [
                                    {"name": "dns", "containerPort": PORT, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": PORT, "protocol": "TCP"},
                                ],
                            }
                        ]
                    },
                },
            },
        }
        ans = call(self.api, "POST", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", body)
        if ans.status not in (201, 409):
            raise RuntimeError(f"create Deployment {NAMESPACE}/{DEPLOYMENT}: {ans.status}")

    def remove(self) -> None:
        """Delete the Deployment and the Service (if :meth:`deploy` ran); errors are ignored."""
        if not self.service_ip:
            return
        for path in (
            f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}",
            f"/api/v1/namespaces/{NAMESPACE}/services/{SERVICE}",
        ):
            with contextlib.suppress(Exception):
                call(self.api, "DELETE", path)

    def fault(self, address: str, kind: Fault | None) -> None:
        """Make the replica at ``address`` answer SERVFAIL, or nothing; None heals it."""
        if kind is None:
            self._faults.pop(address, None)
        else:
            self._faults[address] = kind

    # -- serving (the proxy loop) -----------------------------------------------------------

    async def update(self, snapshot: Snapshot) -> None:
        """Take the poll's records and serve exactly the replica endpoints in our /24."""
        self._snapshot = snapshot
        wanted = set()
        for s in snapshot.slices_of(NAMESPACE, SERVICE):
            for ep in s.get("endpoints") or []:
                wanted.update(a for a in ep.get("addresses") or [] if self._ours(a))
        for address in set(self._servers) - wanted:
            await self._stop(address)
        for address in wanted - set(self._servers):
            try:
                self._servers[address] = await self._serve(address)
            except OSError as exc:
                log.warning("cluster DNS cannot serve at %s: %s", address, exc)
        self.serving = frozenset(self._servers)

    async def close(self) -> None:
        """Stop every replica's server."""
        for address in list(self._servers):
            await self._stop(address)
        self.serving = frozenset()

    def _ours(self, address: str) -> bool:
        try:
            return ipaddress.ip_address(address) in self.network.subnet
        except ValueError:
            return False

    async def _serve(self, address: str) -> tuple[asyncio.DatagramTransport, asyncio.Server]:
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self, address), sock=self.network.datagram((address, PORT))
        )
        try:
            tcp = await asyncio.start_server(
                lambda r, w: self._stream(r, w, address), sock=self.network.listen((address, PORT))
            )
        except OSError:
            udp.close()
            raise
        return udp, tcp

    async def _stop(self, address: str) -> None:
        udp, tcp = self._servers.pop(address)
        udp.close()
        tcp.close()
        await tcp.wait_closed()

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str
    ) -> None:
        try:
            while True:
                (size,) = struct.unpack("!H", await reader.readexactly(2))
                reply = self.reply(await reader.readexactly(size), address)
                if reply is None:
                    continue
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    # -- answers --------------------------------------------------------------------------

    def reply(self, wire: bytes, address: str) -> bytes | None:
        """Return the answer the replica at ``address`` gives to a query (None: silence)."""
        fault = self._faults.get(address)
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if fault == "silent":
            return None
        response = dns.message.make_response(query)
        if fault == "servfail" or len(query.question) != 1:
            response.set_rcode(dns.rcode.SERVFAIL if fault else dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        rcode, answer = self._lookup(question.name, question.rdtype)
        if question.name.is_subdomain(self.zone):
            response.flags |= dns.flags.AA
        response.set_rcode(rcode)
        if answer is not None:
            response.answer.append(answer)
        return response.to_wire()

    def _lookup(self, name: dns.name.Name, rdtype: int) -> tuple[int, dns.rrset.RRset | None]:
        if not name.is_subdomain(self.zone):
            address = self.hosts.get(name.to_text(omit_final_dot=True).lower())
            if address is None:
                return dns.rcode.NXDOMAIN, None
            return dns.rcode.NOERROR, _rrset(name, rdtype, "A", [address])
        labels = [label.decode().lower() for label in name.relativize(self.zone).labels]
        if len(labels) == 3 and labels[2] == "pod":
            try:
                address = str(ipaddress.IPv4Address(labels[0].replace("-", ".")))
            except ValueError:
                return dns.rcode.NXDOMAIN, None
            return dns.rcode.NOERROR, _rrset(name, rdtype, "A", [address])
        if len(labels) == 3 and labels[2] == "svc":
            svc = self._service_named(labels[1], labels[0])
            if svc is not None:
                return dns.rcode.NOERROR, self._service_records(name, rdtype, svc)
        return dns.rcode.NXDOMAIN, None

    def _service_named(self, namespace: str, name: str) -> dict[str, Any] | None:
        return next(
            (
                s
                for s in self._snapshot.services
                if s["metadata"]["namespace"] == namespace and s["metadata"]["name"] == name
            ),
            None,
        )

    def _service_records(
        self, name: dns.name.Name, rdtype: int, svc: dict[str, Any]
    ) -> dns.rrset.RRset | None:
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            target = spec.get("externalName", "").rstrip(".") + "."
            return _rrset(name, rdtype, "CNAME", [target], any_type=True)
        if spec.get("clusterIP") not in (None, "", "None"):
            return _rrset(name, rdtype, "A", [spec["clusterIP"]])
        meta = svc["metadata"]
        ready = [
            a
            for s in self._snapshot.slices_of(meta["namespace"], meta["name"])
            for ep in s.get("endpoints") or []
            if (ep.get("conditions") or {}).get("ready", True) is not False
            for a in ep.get("addresses") or []
        ]
        return _rrset(name, rdtype, "A", sorted(set(ready)))


def _rrset(
    name: dns.name.Name, rdtype: int, kind: str, values: list[str], *, any_type: bool = False
) -> dns.rrset.RRset | None:
    """Return the records of type ``kind`` if the question asks for them (a CNAME answers any
    type), None otherwise: the name exists but has no such records (NODATA)."""
    if not values or (rdtype != dns.rdatatype.from_text(kind) and not any_type):
        return None
    return dns.rrset.from_text_list(name, TTL, dns.rdataclass.IN, kind, values)


class _Udp(asyncio.DatagramProtocol):
    """One replica's UDP socket; answers each datagram where it came from."""

    def __init__(self, owner: ClusterDns, address: str) -> None:
        self.owner = owner
        self.address = address
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        reply = self.owner.reply(data, self.address)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)
