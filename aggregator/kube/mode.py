"""Kubernetes mode wired for the aggregator: the fleet from the API in, Cluster status out.

Exists so ``aggregator.process`` needs one object for the whole mode: between :meth:`start`
and :meth:`stop` it follows the fleet's objects and writes Cluster status in background
tasks, and :meth:`load` hands the reload loop a new fleet when one was built. It must not
let an API failure escape: the watches retry on their own (logging each failure) and the
caller keeps its last fleet meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from kubeprober.aggregator.kube import KubeModeSettings, replicas, source, status
from kubeprober.aggregator.kube.peers import Peers
from kubeprober.aggregator.kube.replicas import Replicas
from kubeprober.aggregator.kube.source import FleetSource
from kubeprober.aggregator.kube.status import StatusWriter
from kubeprober.aggregator.registry import Fleet
from kubeprober.aggregator.views import ClusterView
from kubeprober.kube.api import KubeApi
from kubeprober.kube.errors import KubeError
from kubeprober.kube.resources import Permission
from kubeprober.kube.watching import Mirror
from kubeprober.tasks import spawn, stop

log = logging.getLogger(__name__)
PERMISSIONS: tuple[Permission, ...] = (
    *source.PERMISSIONS,
    *status.PERMISSIONS,
    *replicas.PERMISSIONS,
)
"""Every grant the aggregator's Kubernetes mode needs: its Role must give exactly these."""


class KubeRegistry:
    """The Cluster objects of one namespace as the aggregator's registry."""

    def __init__(
        self,
        api: KubeApi,
        views: Callable[[], Iterable[ClusterView]],
        *,
        ttl: float,
        settings: KubeModeSettings | None = None,
    ) -> None:
        self.api = api
        self.settings = settings or KubeModeSettings()
        self.source = FleetSource(api, backoff=self.settings.backoff)
        self.replicas = Replicas(api, self.source.clusters, self.settings)
        self.peers = Peers(self.replicas, timeout=self.settings.peer_timeout)
        self.writer = StatusWriter(
            api, views, ttl=ttl, settings=self.settings, replicas=self.replicas
        )
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def connect(
        cls,
        settings: KubeModeSettings,
        views: Callable[[], Iterable[ClusterView]],
        *,
        ttl: float,
    ) -> KubeRegistry:
        """Build from a kubeconfig or the pod's account; a bad config raises ValueError."""
        try:
            api = KubeApi.load(settings.kubeconfig, namespace=settings.namespace)
        except KubeError as exc:
            raise ValueError(str(exc)) from exc
        return cls(api, views, ttl=ttl, settings=settings)

    @property
    def where(self) -> str:
        """Name the fleet's origin for logs."""
        return f"Cluster objects in namespace {self.api.namespace}"

    @property
    def mirrors(self) -> tuple[Mirror, ...]:
        """What the registry follows: the fleet's objects and the replicas' Leases."""
        return (*self.source.mirrors, self.replicas.leases)

    @property
    def loaded(self) -> bool:
        """Whether every one of :attr:`mirrors` was listed once (readiness: until the Leases
        are, a cluster held by another replica looks held by no live one)."""
        return all(m.watch.synced.is_set() for m in self.mirrors)

    async def wait_loaded(self) -> None:
        """Wait until every one of :attr:`mirrors` was listed once."""
        await asyncio.gather(*(m.watch.synced.wait() for m in self.mirrors))

    async def load(self) -> Fleet | None:
        """Return the fleet if it changed since the last call; None otherwise."""
        if not self.source.changed.is_set():
            return None
        fleet = self.source.build()
        self.writer.observe(self.source.statuses())
        return fleet

    async def start(self) -> None:
        """Follow the fleet's objects and the replicas' Leases, and write Cluster status, in
        the background; :meth:`join` the replicas once listening."""
        self._tasks = [
            *(
                spawn(m.watch.run(), f"fleet-watch-{m.watch.selection.resource.plural}")
                for m in self.mirrors
            ),
            spawn(self._write_statuses(), "cluster-status-writer"),
        ]

    def join(self, address: str) -> None:
        """Renew this replica's Lease (naming ``address`` unless one was set) and try to lead."""
        self.replicas.address = self.replicas.address or address
        self._tasks.append(spawn(self.replicas.run(), "replica-leases"))
        self._tasks.append(spawn(self.replicas.release(), "replica-orphans"))

    async def _write_statuses(self) -> None:
        # Seeded with what the Clusters hold, so a restart rewrites nothing that is current.
        await self.wait_loaded()
        self.writer.observe(self.source.statuses())
        await self.writer.run()

    async def stop(self) -> None:
        """Stop the watches and the writer (cancel, then wait), leave the replicas, and close
        the API client."""
        await stop(self._tasks)
        self._tasks = []
        await self.peers.close()
        if self.replicas.address:
            await self.replicas.leave()
        await self.api.close()
