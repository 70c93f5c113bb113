"""kube-proxy stand-in: a loopback TCP forwarder per Service ClusterIP and port.

ClusterIPs live in 127.0.101.0/24; all of 127/8 is loopback on Linux, so binding a ClusterIP
needs no privileges beyond the port. Each is listened on twice: on the host's loopback, for
tests, and on the pod namespace's, for pods. Connections go to the ready endpoints' pod IPs,
through the veth; endpoints outside the simulator's pod /24 are never dialled, so no traffic
leaves the machine whatever an EndpointSlice says. A Service without ready endpoints is not
listened on, so connecting is refused, as kube-proxy's REJECT rule does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import socket
import threading
from typing import Any

from kubernetes import client

from .netns import PodNetwork

log = logging.getLogger(__name__)

SERVICE_CIDR = ipaddress.ip_network("127.0.101.0/24")
Backend = tuple[str, int]


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
        # Both owned by the proxy loop thread.
        self.backends: dict[Backend, list[Backend]] = {}
        # ClusterIP:port -> where ("host" or "pods") -> its listener
        self.servers: dict[Backend, dict[str, asyncio.Server]] = {}
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
                wanted = await asyncio.to_thread(self._desired)
                await self._apply(wanted)
            except Exception as exc:  # an API outage keeps the last known forwarding
                log.debug("service proxy: %s", exc)
            await asyncio.sleep(self.interval)

    def _desired(self) -> dict[Backend, list[Backend]]:
        """Return ClusterIP:port -> ready pod IP:port, from Services and EndpointSlices."""
        svcs = self.api.sanitize_for_serialization(self.core.list_service_for_all_namespaces())
        slices = self.api.sanitize_for_serialization(
            self.disc.list_endpoint_slice_for_all_namespaces()
        )
        by_svc: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for s in slices.get("items") or []:
            name = (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
            if name:
                by_svc.setdefault((s["metadata"]["namespace"], name), []).append(s)
        out: dict[Backend, list[Backend]] = {}
        for svc in svcs.get("items") or []:
            ip = svc.get("spec", {}).get("clusterIP")
            try:
                if not ip or ipaddress.ip_address(ip) not in SERVICE_CIDR:
                    continue
            except ValueError:
                continue
            key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
            for sp in svc["spec"].get("ports") or []:
                if sp.get("protocol", "TCP") != "TCP":
                    continue
                targets: list[Backend] = []
                for s in by_svc.get(key, []):
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
                    out[(ip, int(sp["port"]))] = targets
        return out

    def _ours(self, address: str) -> bool:
        try:
            return ipaddress.ip_address(address) in self.network.subnet
        except ValueError:
            return False

    def _all_servers(self) -> list[asyncio.Server]:
        return [srv for servers in self.servers.values() for srv in servers.values()]

    async def _apply(self, wanted: dict[Backend, list[Backend]]) -> None:
        self.backends = wanted
        for key in list(self.servers):
            if key not in wanted:
                for srv in self.servers.pop(key).values():
                    srv.close()
        for key in wanted:
            bound = self.servers.setdefault(key, {})
            for where, listen in (("host", socket.create_server), ("pods", self.network.listen)):
                if where in bound:
                    continue
                try:
                    sock = listen(key)
                except OSError as exc:  # e.g. in use by another session: tried again next poll
                    log.warning("cannot listen on %s:%s (%s): %s", key[0], key[1], where, exc)
                    continue
                bound[where] = await asyncio.start_server(
                    lambda r, w, k=key: self._accept(r, w, k), sock=sock
                )

    def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: Backend
    ) -> None:
        task = asyncio.get_running_loop().create_task(
            self._forward(reader, writer, key), name=f"sim-proxy-{key[0]}:{key[1]}"
        )
        self._conns.add(task)
        task.add_done_callback(self._conns.discard)

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: Backend
    ) -> None:
        targets = self.backends.get(key) or []
        try:
            if not targets:
                return
            host, port = targets[next(self._rr) % len(targets)]
            try:
                up_r, up_w = await asyncio.open_connection(host, port)
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
