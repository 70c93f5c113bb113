"""The agent in Kubernetes mode: Probes from the cluster in; conditions, ProbeStatus and
Events out.

Exists to wire the kube layer's parts to the agent core in one place: restore the store
from ProbeStatus, then watch Probes and hand the scheduler each new probe set, set
conditions, and write results and transitions as they come (:meth:`KubeMode.on_record`).
It must not run probes or serve HTTP (the agent does), and nothing here may stop probing
when the API server fails: every write is queued and retried in the background.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kubeprober.exporter import discovery
from kubeprober.exporter.exec_policy import ExecNamespaces
from kubeprober.exporter.kube import (
    conditions,
    containers,
    events,
    facts,
    restore,
    statuses,
    watching,
)
from kubeprober.exporter.kube.conditions import ConditionSettings, ConditionWriter
from kubeprober.exporter.kube.containers import ContainerRunner, ContainerSettings
from kubeprober.exporter.kube.events import EventRecorder, EventSettings
from kubeprober.exporter.kube.statuses import StatusSettings, StatusWriter
from kubeprober.exporter.kube.watching import ProbeWatcher, WatchSettings
from kubeprober.exporter.reports import RunDesk
from kubeprober.exporter.store import ResultStore, Transition
from kubeprober.kube.api import KubeApi
from kubeprober.kube.errors import Forbidden, Invalid, KubeError, NotFound
from kubeprober.kube.resources import Permission
from kubeprober.kube.watching import Key
from kubeprober.pacing import Backoff, BackoffSettings
from kubeprober.probers.probe import Probe
from kubeprober.tasks import spawn, stop

log = logging.getLogger(__name__)

PERMISSIONS: tuple[Permission, ...] = (
    *watching.PERMISSIONS,
    *conditions.PERMISSIONS,
    *statuses.PERMISSIONS,
    *restore.PERMISSIONS,
    *events.PERMISSIONS,
    *facts.PERMISSIONS,
    *containers.PERMISSIONS,
    *discovery.PERMISSIONS,
)
"""Every grant the agent's Kubernetes mode needs: ``manifests/managed/rbac/`` gives just these."""


@dataclass(frozen=True)
class KubeSettings:
    """How the agent works with the cluster."""

    namespace: str | None = None
    """The one namespace whose Probes run; None means all namespaces (``--all-namespaces``)."""
    exec_namespaces: ExecNamespaces = field(default_factory=ExecNamespaces)
    """Namespaces whose Probes may run commands (``--exec-namespaces``); none by default."""
    backoff: BackoffSettings = field(default_factory=BackoffSettings)
    """Retries of the watch and of the start-up restore."""
    statuses: StatusSettings = field(default_factory=StatusSettings)
    conditions: ConditionSettings = field(default_factory=ConditionSettings)
    events: EventSettings = field(default_factory=EventSettings)
    containers: ContainerSettings = field(default_factory=ContainerSettings)
    facts_interval: float = 60.0
    """Seconds between reads of the Kubernetes version and node count: they change rarely."""


class KubeMode:
    """Runs the watch, the restore and the writers as named tasks between start and stop."""

    def __init__(
        self,
        api: KubeApi,
        store: ResultStore,
        apply: Callable[[list[Probe]], None],
        *,
        runs: RunDesk | None = None,
        settings: KubeSettings | None = None,
        observe_write_lag: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        """``runs`` are the agent's container probe runs waiting for reports (its /report)."""
        self.settings = settings or KubeSettings()
        self._api = api
        self._store = store
        self._apply = apply
        self.watcher = ProbeWatcher(
            api,
            self._changed,
            settings=WatchSettings(
                self.settings.namespace, self.settings.backoff, self.settings.exec_namespaces
            ),
        )
        self.conditions = ConditionWriter(
            api, self.watcher.entries.get, settings=self.settings.conditions
        )
        self.statuses = StatusWriter(
            api,
            store,
            self.watcher.ref,
            settings=self.settings.statuses,
            observe_lag=observe_write_lag,
        )
        self.events = EventRecorder(api, self.watcher.ref, settings=self.settings.events)
        self.containers = ContainerRunner(
            api, runs or RunDesk(), self.watcher.ref, settings=self.settings.containers
        )
        self.synced = asyncio.Event()
        """Set once the first list of Probes is applied: the agent is then ready."""
        self._tasks: list[asyncio.Task[None]] = []
        self.facts = facts.ClusterFacts()
        """The cluster's version and node count, for the agent's /status (read every minute)."""

    async def start(self) -> None:
        """Start the background tasks; returns at once (see :attr:`synced`)."""
        self._tasks = [
            spawn(self._follow_probes(), "kube-probes"),
            spawn(self.conditions.run(), "kube-conditions"),
            spawn(self.statuses.run(), "kube-statuses"),
            spawn(self.events.run(), "kube-events"),
            spawn(self._read_facts(), "kube-facts"),
        ]

    async def stop(self) -> None:
        """Cancel the tasks and wait for them; unwritten results are dropped."""
        await stop(self._tasks)
        self._tasks = []

    def on_record(self, key: Key, transitions: Sequence[Transition]) -> None:
        """Take note of a finished run: write its ProbeStatus and Events soon. Never waits."""
        self.statuses.mark(key)
        if transitions:
            self.events.record(transitions)

    async def _read_facts(self) -> None:
        while True:
            self.facts = await facts.read(self._api, self.facts)
            await asyncio.sleep(self.settings.facts_interval)

    async def _follow_probes(self) -> None:
        await self._restore()
        await self.watcher.run()

    async def _restore(self) -> None:
        """Load ProbeStatus into the store before any probe runs; retry while the API is away."""
        backoff = Backoff(self.settings.backoff)
        while True:
            try:
                restored = await restore.load(self._api, namespace=self.settings.namespace)
            except (Forbidden, Invalid, NotFound) as exc:
                # Retrying will not help; starting fresh only costs the alert history.
                log.error("cannot restore results from ProbeStatus (%s); starting fresh", exc)
                return
            except KubeError as exc:
                delay = backoff.next_delay()
                log.warning("restoring from ProbeStatus failed: %s; retry in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            self._store.restore(restored.states)
            self.statuses.seed(restored.objects)
            return

    def _changed(self, keys: set[Key]) -> None:
        self._apply(self.watcher.probes())
        self.conditions.update(keys)
        for key in keys:
            # A new Probe shows as Pending at once; a suspend or an edit changes the view
            # even without a run. Unchanged views are skipped by the writer without a request.
            if self._store.get(key) is not None:
                self.statuses.mark(key)
        self.synced.set()
