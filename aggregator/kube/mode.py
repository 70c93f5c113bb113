"""Kubernetes mode wired for the aggregator: the fleet from the API in, Cluster status out.

Exists so ``aggregator.service`` needs one object for the whole mode: :meth:`load` for its
reload loop and a status-writer task between :meth:`start` and :meth:`stop`. It must not
let an API failure escape: a failed load is logged and the caller keeps its last fleet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from kubeprober.aggregator.fleet import ClusterView
from kubeprober.aggregator.kube import KubeModeSettings, source, status
from kubeprober.aggregator.kube.api import KubeApi, KubeError, Permission
from kubeprober.aggregator.kube.source import FleetSource
from kubeprober.aggregator.kube.status import StatusWriter
from kubeprober.aggregator.registry import Fleet

log = logging.getLogger(__name__)
PERMISSIONS: tuple[Permission, ...] = (*source.PERMISSIONS, *status.PERMISSIONS)
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
        self.source = FleetSource(api)
        self.writer = StatusWriter(api, views, ttl=ttl, settings=self.settings)
        self.loaded = False
        """Whether a fleet was ever loaded (readiness)."""
        self._failing = False
        self._task: asyncio.Task[None] | None = None

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

    async def load(self) -> Fleet | None:
        """Return the fleet if it changed; None if unchanged or the API failed (logged)."""
        try:
            fleet = await self.source.load()
        except KubeError as exc:
            if not self._failing:  # once per outage, not every reload
                log.error("cannot read the fleet, keeping the current one: %s", exc)
            self._failing = True
            return None
        if self._failing:
            log.info("reading the fleet from the API works again")
        self._failing = False
        self.writer.observe(self.source.statuses)
        self.loaded = True
        return fleet

    async def start(self) -> None:
        """Start writing Cluster status in the background."""
        self._task = asyncio.create_task(self._guarded(), name="cluster-status-writer")

    async def stop(self) -> None:
        """Stop the writer (cancel, then wait) and close the API client."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.api.close()

    async def _guarded(self) -> None:
        try:
            await self.writer.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the Cluster status writer crashed; status is no longer written")
