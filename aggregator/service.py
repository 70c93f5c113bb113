"""The aggregator process: tunnel endpoint, cluster registry, assignment, pulls and the API.

It wires the parts together and owns the fleet's live state (one ClusterView per defined
cluster, mutated only on the event loop). It never dials into a managed cluster: every
request to an agent goes through the tunnel that agent opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import json
import logging
import signal
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from kubeprober import __version__
from kubeprober.aggregator import auth, board
from kubeprober.aggregator.assigner import Assigner, AssignSettings
from kubeprober.aggregator.federation import Federation, OwnFamily
from kubeprober.aggregator.fleet import (
    STATES,
    ClusterView,
    Filters,
    rendered_entry,
    unified_status,
    unified_status_bytes,
)
from kubeprober.aggregator.kube import KubeModeSettings
from kubeprober.aggregator.openapi import OPENAPI
from kubeprober.aggregator.puller import Puller, PullSettings
from kubeprober.aggregator.registry import Fleet, load_file
from kubeprober.aggregator.tokens import TokenStore
from kubeprober.aggregator.tunnel_server import TunnelServer, TunnelServerSettings
from kubeprober.http_log import SERVER_LOG
from kubeprober.tunnel import TunnelError
from kubeprober.tunnel.http_client import MAX_BODY

if TYPE_CHECKING:  # the client is imported only when Kubernetes mode runs
    from kubeprober.aggregator.kube.mode import KubeRegistry

log = logging.getLogger(__name__)
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
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
    """Seconds without a good pull after which a cluster is Offline: three pull intervals,
    so one slow pull does not flap it."""
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


@dataclass
class CachedBody:
    """A rendered response body and, once asked for, its gzip."""

    made_at: float = float("-inf")
    """``time.monotonic()`` when it was rendered."""
    body: bytes = b""
    gzipped: bytes | None = None


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
        self.puller: Puller | None = None
        self.ready = False
        self.status_cache = CachedBody()
        self._own_metrics: tuple[dict[str, dict[str, float]], dict[str, int]] | None = None
        """What refresh_own_metrics last filed, to skip unchanged scrapes."""
        self._file_stamp: tuple[int, int] | None = None
        self.kube: KubeRegistry | None = None
        self.operators: auth.OperatorTokensFile | None = None
        """The --operator-tokens file, re-read by the reload loop; None: the run API is off."""
        """Kubernetes mode's registry (set by run_aggregator); None in file mode."""

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
        await asyncio.gather(*(self.push_assignment(v) for v in self.views.values() if v.connected))

    async def push_assignment(self, view: ClusterView) -> None:
        """PUT the cluster's assignment through its tunnel, unless it has it or must wait."""
        await self.assigner.push(view, self.fleet.assignment(view.name))

    async def _connected(self, cluster: str) -> None:
        view = self.views.get(cluster)
        if view is None:
            return
        view.connected = True
        view.assignment_revision = None  # the agent may have restarted: send it again
        self.assigner.forget(cluster)
        await self.push_assignment(view)
        if self.puller is not None:
            self.puller.poke(cluster)

    async def _disconnected(self, cluster: str) -> None:
        self.agents.forget(cluster)
        view = self.views.get(cluster)
        if view is not None:
            view.connected = False
            view.pull_ok = False

    async def _event(self, cluster: str, event: Mapping[str, Any]) -> None:
        if self.puller is not None:
            self.puller.poke(cluster)

    def status(self, filters: Filters | None = None) -> dict[str, Any]:
        """The unified /status document."""
        return unified_status(self.views.values(), ttl=self.settings.offline_after, filters=filters)

    def refresh_own_metrics(self) -> None:
        """Bring the aggregator's own series up to date before a scrape (only if changed).

        An Offline cluster's agent series leave the federation here; they come back with
        its next good pull.
        """
        now = time.time()
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        own_by_cluster: dict[str, dict[str, float]] = {}
        for view in self.views.values():
            state = view.state(now=now, ttl=self.settings.offline_after)
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


AGGREGATOR = web.AppKey("aggregator", Aggregator)
KUBE_START_WAIT = 5.0
"""Seconds Kubernetes mode waits for its first fleet before listening anyway (not ready)."""
STATUS_MAX_AGE = 1.0
"""Seconds a rendered /status is reused: a thousand readers cost one rendering a second,
and data is at most a second older than the last pull."""


async def get_status(request: web.Request) -> web.Response:
    """Serve the unified status, filtered by ``?cluster=&status=&layer=``."""
    try:
        filters = Filters.from_query(request.query)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    agg = request.app[AGGREGATOR]
    unknown = sorted(filters.clusters - agg.views.keys())
    if unknown:
        return web.json_response({"error": f"unknown cluster {unknown[0]!r}"}, status=404)
    if filters != Filters():
        body = json.dumps(agg.status(filters), separators=(",", ":")).encode()
        return web.Response(body=body, content_type="application/json")
    # The common case: one rendering (and one gzip) serves every reader for a second.
    cached = agg.status_cache
    now = time.monotonic()
    if now - cached.made_at > STATUS_MAX_AGE:
        body = unified_status_bytes(agg.views.values(), ttl=agg.settings.offline_after)
        cached = agg.status_cache = CachedBody(now, body)
    headers = {"Content-Type": "application/json", "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        if cached.gzipped is None:
            cached.gzipped = gzip.compress(cached.body, compresslevel=1)
        return web.Response(body=cached.gzipped, headers={**headers, "Content-Encoding": "gzip"})
    return web.Response(body=cached.body, headers=headers)


async def get_metrics(request: web.Request) -> web.Response:
    """Serve the federated exposition (text 0.0.4), narrowed by ``match[]``."""
    agg = request.app[AGGREGATOR]
    agg.refresh_own_metrics()
    try:
        body = agg.federation.render(request.query.getall("match[]", []))
    except ValueError as exc:
        return web.Response(status=400, text=f"bad match[]: {exc}\n")
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def post_run(request: web.Request) -> web.Response:
    """Run a probe now on a cluster, through its tunnel, and answer with the result."""
    agg = request.app[AGGREGATOR]
    cluster = request.match_info["cluster"]
    key = (request.match_info["namespace"], request.match_info["name"])
    auth.log.info("operator %s runs %s/%s on cluster %s", request[auth.OPERATOR], *key, cluster)
    view = agg.views.get(cluster)
    if view is None:
        return web.json_response({"error": f"no cluster {cluster}"}, status=404)
    if not view.connected:
        return web.json_response({"error": f"cluster {cluster} is not connected"}, status=503)
    # Decoded from the request's path, so encoded again: "a b" must not break the request line.
    namespace, name = (quote(part, safe="") for part in key)
    path = f"/v1/run/{namespace}/{name}"
    try:
        async with asyncio.timeout(300):
            reply = await agg.agents.request(cluster, "POST", path)
    except (TunnelError, TimeoutError) as exc:
        return web.json_response({"error": f"cluster {cluster}: {exc}"}, status=502)
    return web.Response(body=reply.body, status=reply.status, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    """Answer while the process is alive."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Answer 200 once the cluster registry is loaded."""
    if request.app[AGGREGATOR].ready:
        return web.Response(text="ok\n")
    return web.Response(status=503, text="not ready: cluster registry not loaded\n")


async def openapi(request: web.Request) -> web.Response:
    """Describe the HTTP API."""
    return web.json_response(OPENAPI)


def make_app(
    agg: Aggregator,
    *,
    read_token: str | None = None,
    operators: auth.OperatorTokensFile | None = None,
) -> web.Application:
    """Build the aggregator's application."""
    app = web.Application(middlewares=[auth.guard(read_token, operators)])
    app[AGGREGATOR] = agg
    agg.tunnel.add_routes(app)
    app.router.add_get("/status", get_status)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_post("/api/v1/clusters/{cluster}/probes/{namespace}/{name}/run", post_run)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
    board.add_routes(app)
    return app


GC_THRESHOLDS = (50_000, 20, 100)
"""The aggregator process's garbage-collector thresholds (CPython's default: 700, 10, 10)."""


def tune_gc() -> None:
    """Collect garbage less often than CPython would by default, for the aggregator's heap.

    The aggregator keeps a few hundred long-lived objects per cluster (sessions, streams,
    tasks, reports) and replaces each cluster's report on every pull. With the default
    thresholds that churn set off one or two full collections per pull round, each walking
    the whole heap: at 2,000 clusters 0.5-0.9 s of a 2 s round (bench/fleet.py prints the
    collections). A young generation of 50,000 objects lets a round's short-lived objects die
    by reference count before a collection promotes them, and a full collection waits for 100
    middle-generation passes; cyclic garbage is still collected, only later.
    """
    gc.set_threshold(*GC_THRESHOLDS)


async def run_aggregator(
    settings: AggregatorSettings,
    *,
    on_listening: Callable[[str], None] = lambda url: None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``), then close every session and shut down."""
    agg = Aggregator(settings)
    if settings.kube is None:
        agg.reload()  # a missing or broken file fails here, before anything listens
        agg.ready = True
    read_token = None
    if settings.read_token_file is not None:
        read_token = settings.read_token_file.read_text().strip()
        if not read_token:  # an empty token must not silently turn the guard off
            raise ValueError(f"read token file {settings.read_token_file} is empty")
    operators = None
    if settings.operator_tokens_file is not None:
        operators = agg.operators = auth.OperatorTokensFile(settings.operator_tokens_file)
    exposed = auth.open_reads_warning(settings.host, read_token=read_token)
    if exposed:
        log.warning("%s", exposed)
    if operators is None:
        log.info("the run API is off: no --operator-tokens file")
    tls = None
    if settings.tls_cert is not None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(settings.tls_cert, settings.tls_key)
        except ssl.SSLError:  # OpenSSL says only "PEM lib": name the files instead
            raise ValueError(
                f"TLS certificate {settings.tls_cert} and key {settings.tls_key}: not a PEM "
                "certificate chain and its private key"
            ) from None
    if settings.kube is not None:
        from kubeprober.aggregator.kube.mode import (
            KubeRegistry,  # the client's import costs a second
        )

        agg.kube = KubeRegistry.connect(
            settings.kube, lambda: agg.views.values(), ttl=settings.offline_after
        )
        await agg.kube.start()
        # An API server that is away (or slow) now is no reason not to start: serve, not
        # ready yet; the watches keep trying and the reload loop takes the fleet when listed.
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KUBE_START_WAIT):
                    await agg.kube.wait_loaded()
        except BaseException:  # cancelled before serving: the watches must not outlive us
            await agg.kube.stop()
            raise
        await agg.refresh()
        agg.ready = agg.kube.loaded
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    puller = agg.connect_puller()
    runner = web.AppRunner(
        make_app(agg, read_token=read_token, operators=operators),
        handle_signals=False,
        access_log=None,
        logger=SERVER_LOG,
    )
    await runner.setup()
    tasks: list[asyncio.Task[None]] = []
    try:
        await web.TCPSite(runner, settings.host, settings.port, ssl_context=tls).start()
        host, port = runner.addresses[0][:2]
        scheme = "https" if tls else "http"
        on_listening(f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}")
        tasks = [
            asyncio.create_task(puller.run_rounds(), name="pull-rounds"),
            asyncio.create_task(puller.run_pokes(), name="pull-pokes"),
            asyncio.create_task(_reload_loop(agg), name="clusters-reload"),
        ]
        await stop.wait()
        log.info("shutting down")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()  # sends GoAway on every tunnel session (tunnel on_shutdown)
        agg.agents.close()
        if agg.kube is not None:
            await agg.kube.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _reload_loop(agg: Aggregator) -> None:
    while True:
        await asyncio.sleep(agg.settings.reload_interval)
        try:
            await agg.refresh()
        except (OSError, ValueError) as exc:
            log.error("clusters file unusable, keeping the current fleet: %s", exc)
        if agg.operators is not None:
            try:
                agg.operators.reload()
            except (OSError, ValueError) as exc:
                log.error("operator tokens unusable, keeping the current ones: %s", exc)
        if agg.kube is not None:
            agg.ready = agg.ready or agg.kube.loaded
        # A cluster taken out of the file loses its token, so its session must end too;
        # if it comes back, its agent reconnects and is registered (and assigned) afresh.
        for name in agg.tunnel.clusters:
            session = agg.tunnel.session(name)
            if name not in agg.views and session is not None:
                log.info("cluster %s is no longer defined: closing its tunnel", name)
                await session.close()
        # Also retries pushes that failed: a cluster without the current revision gets it.
        await agg.push_assignments()
