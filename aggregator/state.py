"""The aggregator's live state: the fleet, one ClusterView per cluster, and what changes it.

:class:`Aggregator` takes the fleet from its source (the clusters file or the API), pushes each
connected cluster its assignment, and keeps the aggregator's own metric series. It is mutated
only on the event loop. It never dials into a managed cluster: every request to an agent goes
through the tunnel that agent opened. Its HTTP API is in :mod:`.api`, the process around it in
:mod:`.process`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from kubeprober import __version__
from kubeprober.aggregator import auth
from kubeprober.aggregator.assigner import Assigner, AssignSettings
from kubeprober.aggregator.board.links import BoardLinks
from kubeprober.aggregator.federation import Federation, OwnFamily
from kubeprober.aggregator.kube import KubeModeSettings
from kubeprober.aggregator.puller import Puller, PullSettings, cluster_report
from kubeprober.aggregator.registry import Fleet, load_file
from kubeprober.aggregator.tokens import TokenStore
from kubeprober.aggregator.tunnel_server import TunnelServer, TunnelServerSettings
from kubeprober.aggregator.views import STATES, ClusterView, Filters, rendered_entry, unified_status
from kubeprober.tunnel.http.client import MAX_BODY

if TYPE_CHECKING:  # the client is imported only when Kubernetes mode runs
    from kubeprober.aggregator.kube.mode import KubeRegistry

log = logging.getLogger(__name__)
OWN = (
    OwnFamily("kubeprober_agent_up", "1 if the last pull of the cluster's agent worked."),
    OwnFamily(
        "kubeprober_agent_last_seen_timestamp_seconds",
        "When the cluster's agent was last pulled successfully.",
    ),
    OwnFamily(
        "kubeprober_agent_pull_duration_seconds",
        "How long the last pull of the cluster's agent took.",
    ),
    OwnFamily("kubeprober_cluster_maintenance", "1 while the cluster is in maintenance."),
    OwnFamily(
        "kubeprober_federation_dropped_series_total",
        "Series of the cluster's agent left out of /metrics: over --max-series-per-cluster, "
        "or in a family that clashes with another.",
        "counter",
    ),
)


@dataclass(frozen=True)
class AggregatorSettings:
    """How the aggregator runs; the CLI fills it from flags."""

    clusters_file: Path | None = None
    """File mode: the clusters file. None means Kubernetes mode (``kube``)."""
    kube: KubeModeSettings | None = None
    """Kubernetes mode: Cluster, Secret and Probe objects from the API; status written back."""
    host: str = "0.0.0.0"
    port: int = 8088
    """8088 is the aggregator's documented port; 0 picks a free one and prints it."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    read_token_file: Path | None = None
    """When set, /status and /metrics need this token (or an operator token)."""
    operator_tokens_file: Path | None = None
    """``name: sha256`` lines of the tokens that may run probes; None turns the run API off."""
    pull: PullSettings = field(default_factory=PullSettings)
    assign: AssignSettings = field(default_factory=AssignSettings)
    offline_after: float = 45.0
    """Seconds after its last good pull a connected cluster whose pulls fail turns Offline:
    three short pull intervals, so one slow pull does not flap it."""
    reload_interval: float = 2.0
    """Seconds between looks at the clusters file (or lists of the Cluster objects):
    assignments reach agents within 5 s."""
    tunnel: TunnelServerSettings = field(default_factory=TunnelServerSettings)
    max_answer: int = MAX_BODY
    """Bytes of an agent's answer the aggregator reads; a bigger one fails that pull. With
    ``pull.concurrency`` it bounds the memory a pull round may take."""
    max_series_per_cluster: int = 50_000
    """Series one cluster may add to /metrics: some 3,000 checks' worth (~16 series each);
    beyond it whole families are left out and counted in
    kubeprober_federation_dropped_series_total."""
    max_history_requests: int = 8
    """Histories (``/status?cluster=NAME&history=1``) asked of agents at once; beyond it a
    request is answered 503 at once, so readers can neither pile up answers (each up to
    ``max_answer``) nor take pull slots: people open clusters a few at a time."""
    max_connections: int | None = None
    """Connections held at once (agents' tunnels included); None is half the descriptor
    limit, so a flood of idle connections cannot take the descriptors pulls need."""
    status_max_age: float = 1.0
    """Seconds a rendering of the unfiltered ``/status`` is served before the next reader
    starts another: a thousand readers cost one rendering a second."""
    status_serve_stale: float = 10.0
    """Age up to which a rendering is still served while the next is made, so readers never
    wait for one (in Kubernetes mode it asks every peer replica); older (after a quiet
    spell), readers wait for the new rendering."""
    board_links: BoardLinks = field(default_factory=BoardLinks)
    """Base URLs the board links checks to (their Grafana panel, their runbook); none by
    default, since only the operator knows where those live."""


class Aggregator:
    """The fleet's live state and what changes it."""

    def __init__(self, settings: AggregatorSettings) -> None:
        self.settings = settings
        self.fleet = Fleet()
        self.views: dict[str, ClusterView] = {}
        self.federation = Federation(OWN, max_series=settings.max_series_per_cluster)
        self.tunnel = TunnelServer(
            TokenStore(),
            settings.tunnel,
            on_connect=self._connected,
            on_disconnect=self._disconnected,
            on_event=self._event,
        )
        self.agents = self.tunnel.client(
            user_agent=f"kubeprober-aggregator/{__version__}", max_body=settings.max_answer
        )
        """HTTP to the agents, through their tunnels."""
        self.assigner = Assigner(self.agents, settings.assign)
        self.history_slots = asyncio.Semaphore(settings.max_history_requests)
        """Taken by each history request while it waits for its agent."""
        self.puller: Puller | None = None
        self.ready = False
        self._own_metrics: tuple[dict[str, dict[str, float]], dict[str, int]] | None = None
        """What refresh_own_metrics last filed, to skip unchanged scrapes."""
        self._file_stamp: tuple[int, int] | None = None
        self.kube: KubeRegistry | None = None
        """Kubernetes mode's registry (set by run_aggregator); None in file mode."""
        self.operators: auth.OperatorTokensFile | None = None
        """The --operator-tokens file, re-read by the reload loop; None: the run API is off."""

    def reload(self) -> bool:
        """Re-read the clusters file if it changed; return whether it did."""
        path = self.settings.clusters_file
        if path is None:
            raise ValueError("no clusters file: Kubernetes mode reloads with refresh()")
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._file_stamp:
            return False
        self._file_stamp = stamp
        self.apply_fleet(load_file(path), where=f"clusters file {path}")
        return True

    async def refresh(self) -> bool:
        """Take the fleet from its source (the file or the API) if it changed; say if it did."""
        if self.kube is None:
            return self.reload()
        fleet = await self.kube.load()  # None also when the API is away: the fleet stays
        if fleet is None:
            return False
        self.apply_fleet(fleet, where=self.kube.where)
        return True

    def apply_fleet(self, fleet: Fleet, *, where: str) -> None:
        """Make ``fleet`` the current one: tokens, views of new clusters, none of old ones."""
        for error in fleet.errors:
            log.error("%s", error)
        self.fleet = fleet
        self.tunnel.tokens = fleet.tokens
        for name in list(self.views):
            if name not in fleet.clusters:
                del self.views[name]
                self.federation.remove(name)
        for name, spec in fleet.clusters.items():
            view = self.views.setdefault(name, ClusterView(name))
            view.display_name, view.maintenance = spec.display_name, spec.maintenance
        log.info(
            "%s: %d clusters, %d probes, %d errors",
            where,
            len(fleet.clusters),
            len(fleet.probes),
            len(fleet.errors),
        )

    def connect_puller(self) -> Puller:
        """Create the puller."""
        self.puller = Puller(
            self.views,
            self.agents,
            self.federation,
            settings=self.settings.pull,
            on_pulled=self._pulled,
        )
        return self.puller

    def _pulled(self, view: ClusterView) -> None:
        # Render the cluster's /status entry now, so readers only ever join cached bytes.
        rendered_entry(view, now=time.time(), ttl=self.settings.offline_after)

    async def push_assignments(self) -> None:
        """Send each connected cluster its assignment if the agent lacks that revision."""
        # Tasks only for those due: this runs every reload, over thousands of clusters.
        await asyncio.gather(
            *(
                self.push_assignment(v)
                for v in self.views.values()
                if v.connected and self.assigner.due(v, self.fleet.assignment(v.name)["revision"])
            )
        )

    async def push_assignment(self, view: ClusterView) -> None:
        """PUT the cluster's assignment through its tunnel, unless it has it or must wait."""
        await self.assigner.push(view, self.fleet.assignment(view.name))

    async def _connected(self, cluster: str) -> None:
        view = self.views.get(cluster)
        if view is None:
            return
        view.connected = True
        view.assignment_revision = None  # the agent may have restarted: send it again
        if self.kube is not None:
            await self.kube.replicas.claim(cluster)
        self.assigner.forget(cluster)
        await self.push_assignment(view)
        if self.puller is not None:
            self.puller.poke(cluster)

    async def _disconnected(self, cluster: str) -> None:
        self.agents.forget(cluster)
        if self.puller is not None:
            self.puller.forget(cluster)
        view = self.views.get(cluster)
        if view is not None:
            view.connected = False
            view.pull_ok = False

    async def _event(self, cluster: str, event: Mapping[str, Any]) -> None:
        if self.puller is not None:
            self.puller.noticed(cluster)

    async def status_with_history(self, filters: Filters) -> dict[str, Any]:
        """The unified document of ``filters``' one cluster, asked of its agent now, with each
        check's recent history; raise TunnelError, TimeoutError or ValueError if it fails.

        The answer is used for this document only: the cluster's view keeps its pulled report,
        so the fleet's document never carries histories.
        """
        (name,) = filters.clusters
        async with asyncio.timeout(self.settings.pull.timeout):
            reply = await self.agents.get(name, "/status?history=1")
        if reply.status != 200:
            raise ValueError(f"/status?history=1 answered {reply.status} {reply.reason}")
        fresh = dataclasses.replace(
            self.views[name], report=cluster_report(reply.json()), rendered=None
        )
        views = [fresh if v.name == name else v for v in self.views.values()]
        return unified_status(views, ttl=self.settings.offline_after, filters=filters)

    def refresh_own_metrics(self) -> None:
        """Bring the aggregator's own series up to date before a scrape (only if changed).

        An Offline cluster's agent series leave the federation here; they come back with
        its next good pull.
        """
        now = time.time()
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        own_by_cluster: dict[str, dict[str, float]] = {}
        replicas = self.kube.replicas if self.kube is not None else None
        held = replicas.held() if replicas is not None else set()
        orphans = replicas.orphans() if replicas is not None and replicas.leader else set()
        for view in self.views.values():
            state = view.state(now=now, ttl=self.settings.offline_after)
            if replicas is not None and view.name not in held:
                # Another replica exports it; the leader alone speaks for one held by nobody
                # alive, so an agent-down alert can fire while it is away.
                self.federation.forget_agent(view.name)
                if view.name not in orphans:
                    own_by_cluster[view.name] = {}
                    continue
                last_seen = replicas.last_seen(view.name) or view.last_seen
                state = "Offline" if last_seen is not None else "Pending"
                counts[state] += 1
                own_by_cluster[view.name] = {
                    "kubeprober_agent_up": 0.0,
                    "kubeprober_cluster_maintenance": 1.0 if view.maintenance else 0.0,
                }
                if last_seen is not None:
                    own_by_cluster[view.name]["kubeprober_agent_last_seen_timestamp_seconds"] = (
                        last_seen
                    )
                continue
            counts[state] += 1
            if state == "Offline":
                # Its last check_success 1 must not outlive it, or no alert on check failures
                # could fire while it is away; agent_up 0 and last_seen stay for alerts.
                self.federation.forget_agent(view.name)
            own = own_by_cluster[view.name] = {
                "kubeprober_agent_up": 1.0 if view.pull_ok and view.connected else 0.0,
                "kubeprober_cluster_maintenance": 1.0 if view.maintenance else 0.0,
                "kubeprober_federation_dropped_series_total": float(
                    self.federation.dropped_series.get(view.name, 0)
                ),
            }
            if view.last_seen is not None:
                own["kubeprober_agent_last_seen_timestamp_seconds"] = view.last_seen
            if view.pull_duration is not None:
                own["kubeprober_agent_pull_duration_seconds"] = view.pull_duration
        # Comparing is a millisecond; re-filing 2,000 clusters' series is tens of them.
        if (own_by_cluster, counts) == self._own_metrics:
            return
        self._own_metrics = (own_by_cluster, counts)
        self.federation.set_own_many(own_by_cluster)
        registry = CollectorRegistry(auto_describe=False)
        clusters = Gauge("kubeprober_clusters", "Clusters by state.", ["state"], registry=registry)
        for name, n in counts.items():
            clusters.labels(name).set(n)
        info = Gauge(
            "kubeprober_aggregator_info", "The aggregator's version.", ["version"],
            registry=registry,
        )  # fmt: skip
        info.labels(__version__).set(1)
        self.federation.set_extra(generate_latest(registry))
