"""kube-proxy stand-in: a loopback forwarder per Service ClusterIP, port and protocol.

ClusterIPs live in 127.0.101.0/24; all of 127/8 is loopback on Linux, so binding a ClusterIP
needs no privileges beyond the port. Each is listened on twice: on the host's loopback, for
tests, and on the pod namespace's, for pods. Connections go to the ready endpoints' pod IPs,
through the veth; endpoints outside the simulator's pod /24 are never dialled, so no traffic
leaves the machine whatever an EndpointSlice says. A Service without ready endpoints is not
listened on, so connecting is refused, as kube-proxy's REJECT rule does. UDP ports are
forwarded per client, as conntrack does: a client's datagrams keep going to the endpoint its
first one went to (while it stays ready), and the endpoint's replies come back from the
ClusterIP. Each poll's Services and EndpointSlices are also handed to whoever subscribed
(the cluster DNS), so the API is listed once per poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol, cast

from kubernetes import client

from .netns import PodNetwork

log = logging.getLogger(__name__)

SERVICE_CIDR = ipaddress.ip_network("127.0.101.0/24")
Backend = tuple[str, int]
Frontend = tuple[str, str, int]
"""A Service port as kube-proxy sees it: protocol (TCP or UDP), ClusterIP, port."""
# A UDP client that has sent nothing for this long starts afresh (conntrack's UDP timeout).
UDP_FLOW_IDLE = 30.0


@dataclass(frozen=True)
class Snapshot:
    """Every Service and EndpointSlice as one poll listed them (plain JSON)."""

    services: list[dict[str, Any]]
    slices: list[dict[str, Any]]

    def slices_of(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Return the EndpointSlices of Service namespace/name."""
        return [
            s
            for s in self.slices
            if s["metadata"]["namespace"] == namespace
            and (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == name
        ]


class Subscriber(Protocol):
    """Something served from the Services the proxy polls (the cluster DNS), on its loop."""

    async def update(self, snapshot: Snapshot) -> None:
        """Take one poll's Services and EndpointSlices."""

    async def close(self) -> None:
        """Stop serving; the proxy is shutting down."""


class ServiceProxy:
    """Polls Services and EndpointSlices and keeps one listener per ClusterIP:port."""

    def __init__(
        self, api: client.ApiClient, network: PodNetwork, *, interval: float = 0.25
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.disc = client.DiscoveryV1Api(api)
        self.api = api
        self.network = network
        self.interval = interval
        self.loop = asyncio.new_event_loop()
        # All owned by the proxy loop thread.
        self.backends: dict[Frontend, list[Backend]] = {}
        # Frontend -> where ("host" or "pods") -> its TCP server or UDP transport
        self.servers: dict[Frontend, dict[str, asyncio.Server | _Datagrams]] = {}
        self.subscribers: list[Subscriber] = []
        self._rr = itertools.count()
        self._thread = threading.Thread(target=self._run, name="sim-kube-proxy", daemon=True)
        self._task: asyncio.Task[None] | None = None
        self._conns: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Start the proxy thread."""
        self._thread.start()

    def stop(self) -> None:
        """Close every listener and connection and join the thread."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(15)
        self.loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._task = self.loop.create_task(self._poll(), name="sim-kube-proxy-poll")
        self.loop.run_forever()

    async def _shutdown(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for subscriber in self.subscribers:
            await subscriber.close()
        for srv in self._all_servers():
            srv.close()
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        for srv in self._all_servers():
            await srv.wait_closed()
        self.servers.clear()

    async def _poll(self) -> None:
        while True:
            try:
                snapshot = await asyncio.to_thread(self._list)
                await self._apply(self._desired(snapshot))
                for subscriber in self.subscribers:
                    await subscriber.update(snapshot)
            except Exception as exc:  # an API outage keeps the last known forwarding
                log.debug("service proxy: %s", exc)
            await asyncio.sleep(self.interval)

    def _list(self) -> Snapshot:
        svcs = self.api.sanitize_for_serialization(self.core.list_service_for_all_namespaces())
        slices = self.api.sanitize_for_serialization(
            self.disc.list_endpoint_slice_for_all_namespaces()
        )
        return Snapshot(svcs.get("items") or [], slices.get("items") or [])

    def _desired(self, snapshot: Snapshot) -> dict[Frontend, list[Backend]]:
        """Return protocol, ClusterIP and port -> ready pod IP:port."""
        out: dict[Frontend, list[Backend]] = {}
        for svc in snapshot.services:
            ip = svc.get("spec", {}).get("clusterIP")
            try:
                if not ip or ipaddress.ip_address(ip) not in SERVICE_CIDR:
                    continue
            except ValueError:
                continue
            slices = snapshot.slices_of(svc["metadata"]["namespace"], svc["metadata"]["name"])
            for sp in svc["spec"].get("ports") or []:
                protocol = sp.get("protocol", "TCP")
                if protocol not in ("TCP", "UDP"):
                    continue
                targets: list[Backend] = []
                for s in slices:
                    port = next(
                        (
                            p.get("port")
                            for p in s.get("ports") or []
                            if (p.get("name") or "") == (sp.get("name") or "")
                        ),
                        None,
                    )
                    if port is None:
                        continue
                    for ep in s.get("endpoints") or []:
                        if (ep.get("conditions") or {}).get("ready", True) is False:
                            continue
                        targets.extend(
                            (a, int(port)) for a in ep.get("addresses") or [] if self._ours(a)
                        )
                if targets:
                    out[(protocol, ip, int(sp["port"]))] = targets
        return out

    def _ours(self, address: str) -> bool:
        try:
            return ipaddress.ip_address(address) in self.network.subnet
        except ValueError:
            return False

    def _all_servers(self) -> list[asyncio.Server | _Datagrams]:
        return [srv for servers in self.servers.values() for srv in servers.values()]

    def pick(self, key: Frontend) -> Backend | None:
        """Return the next ready endpoint of a frontend, round robin; None without one."""
        targets = self.backends.get(key) or []
        return targets[next(self._rr) % len(targets)] if targets else None

    async def _apply(self, wanted: dict[Frontend, list[Backend]]) -> None:
        self.backends = wanted
        for key in list(self.servers):
            if key not in wanted:
                for srv in self.servers.pop(key).values():
                    srv.close()
        for key, targets in wanted.items():
            bound = self.servers.setdefault(key, {})
            for where in ("host", "pods"):
                if where in bound:
                    srv = bound[where]
                    if isinstance(srv, _Datagrams):
                        srv.expire(targets)
                    continue
                try:
                    bound[where] = await self._listen(key, where)
                except OSError as exc:  # e.g. in use by another session: tried again next poll
                    log.warning("cannot listen on %s:%s/%s (%s): %s", *key[1:], key[0], where, exc)

    async def _listen(self, key: Frontend, where: str) -> asyncio.Server | _Datagrams:
        protocol, ip, port = key
        if protocol == "UDP":
            if where == "host":
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    sock.bind((ip, port))
                except OSError:
                    sock.close()
                    raise
            else:
                sock = self.network.datagram((ip, port))
            datagrams = _Datagrams(self, key)
            await self.loop.create_datagram_endpoint(lambda: datagrams, sock=sock)
            return datagrams
        listen = socket.create_server if where == "host" else self.network.listen
        return await asyncio.start_server(
            lambda r, w: self._accept(r, w, key), sock=listen((ip, port))
        )

    def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: Frontend
    ) -> None:
        task = asyncio.get_running_loop().create_task(
            self._forward(reader, writer, key), name=f"sim-proxy-{key[1]}:{key[2]}"
        )
        self._conns.add(task)
        task.add_done_callback(self._conns.discard)

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: Frontend
    ) -> None:
        target = self.pick(key)
        try:
            if target is None:
                return
            try:
                up_r, up_w = await asyncio.open_connection(*target)
            except OSError:
                return
            try:
                await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
            finally:
                up_w.close()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await up_w.wait_closed()
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (ConnectionError, OSError):
        pass


@dataclass
class _Flow:
    """One UDP client's conntrack entry: its socket to the endpoint it was given."""

    upstream: socket.socket
    backend: Backend
    last_used: float


class _Datagrams(asyncio.DatagramProtocol):
    """One UDP ClusterIP:port; owned by the proxy loop. Its flows live until idle or stale."""

    def __init__(self, proxy: ServiceProxy, key: Frontend) -> None:
        self.proxy = proxy
        self.key = key
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: dict[Backend, _Flow] = {}  # by client address
        self._closed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed.set()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        client_addr = (str(addr[0]), int(addr[1]))
        flow = self.flows.get(client_addr)
        if flow is None:
            backend = self.proxy.pick(self.key)
            if backend is None:
                return
            upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            upstream.setblocking(False)
            try:
                upstream.connect(backend)
            except OSError:
                upstream.close()
                return
            flow = self.flows[client_addr] = _Flow(upstream, backend, time.monotonic())
            self.proxy.loop.add_reader(upstream.fileno(), self._reply, client_addr, flow)
        flow.last_used = time.monotonic()
        with contextlib.suppress(OSError):
            flow.upstream.send(data)

    def _reply(self, client_addr: Backend, flow: _Flow) -> None:
        try:
            data = flow.upstream.recv(65536)
        except OSError:  # e.g. the endpoint's port is closed (ICMP unreachable)
            return
        if self.transport is not None:
            self.transport.sendto(data, client_addr)

    def expire(self, targets: list[Backend]) -> None:
        """Forget flows idle too long or whose endpoint is no longer ready."""
        now = time.monotonic()
        for client_addr, flow in list(self.flows.items()):
            if flow.backend not in targets or now - flow.last_used > UDP_FLOW_IDLE:
                self._drop(client_addr)

    def _drop(self, client_addr: Backend) -> None:
        flow = self.flows.pop(client_addr)
        self.proxy.loop.remove_reader(flow.upstream.fileno())
        flow.upstream.close()

    def close(self) -> None:
        """Stop listening and drop every flow."""
        for client_addr in list(self.flows):
            self._drop(client_addr)
        if self.transport is not None:
            self.transport.close()

    async def wait_closed(self) -> None:
        """Return once the listening socket is closed."""
        if self.transport is not None:
            await self._closed.wait()
