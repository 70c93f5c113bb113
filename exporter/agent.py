"""The agent process without Kubernetes: probe files in, metrics and ``/status`` out.

It wires the store, scheduler, metrics and HTTP app, reloads changed probe files without a
restart, saves results to ``--state-dir`` and shuts down cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from kubeprober import __version__
from kubeprober.exporter.api_proxy import ApiProxy, ApiProxyMode, ApiProxySettings
from kubeprober.exporter.assignment import Assignment, merge
from kubeprober.exporter.discovery import Discovery
from kubeprober.exporter.exec_policy import ExecNamespaces
from kubeprober.exporter.http import AgentState, make_app, make_runner
from kubeprober.exporter.kube.access import ProberAccess
from kubeprober.exporter.kube.containers import ContainerSettings
from kubeprober.exporter.kube.mode import KubeMode, KubeSettings
from kubeprober.exporter.metrics import AgentMetrics
from kubeprober.exporter.persist import StateFile, dump
from kubeprober.exporter.probe_files import ProbeFiles
from kubeprober.exporter.runner import run_probe
from kubeprober.exporter.scheduler import Scheduler, SchedulerSettings
from kubeprober.exporter.status import AgentFacts, config_errors_by_probe, probe_view
from kubeprober.exporter.store import ResultStore, TargetSet, Transition
from kubeprober.exporter.tunnel_client import TunnelClient, TunnelClientSettings
from kubeprober.http_server import CappedSite, default_max_connections
from kubeprober.kube.api import KubeApi
from kubeprober.kube.passthrough import Passthrough
from kubeprober.probers import registry
from kubeprober.probers.probe import DEFAULT_NAMESPACE, MAX_FILE_BYTES, Probe
from kubeprober.probers.result import CheckResult

log = logging.getLogger(__name__)
NOTIFY_INTERVAL = 1.0
"""Seconds between change notices to the aggregator: a busy agent sends one, not hundreds."""


@dataclass(frozen=True)
class AgentSettings:
    """How the agent runs; the CLI fills it from flags."""

    probes: Path | None
    """Probe manifests to run; None runs in Kubernetes mode (Probe CRs)."""
    max_probe_file_bytes: int = MAX_FILE_BYTES
    """A larger probe file is refused as a whole (its Probes keep their previous version)."""
    state_dir: Path | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    """8080 is the agent's documented port; 0 picks a free one and prints it."""
    max_connections: int | None = None
    """Connections held at once on the listen address; None is half the descriptor limit, so
    a flood of idle connections cannot take the descriptors probes need."""
    cluster: str = "local"
    reload_interval: float = 2.0
    """Seconds between looks for changed probe files: edits apply within this delay."""
    save_interval: float = 1.0
    """Seconds between saves of changed results: a crash loses at most this much."""
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    aggregator: str | None = None
    """``wss://host/`` of the aggregator to dial; None runs standalone."""
    token_file: Path | None = None
    aggregator_ca: Path | None = None
    insecure: bool = False
    """Allow ws:// to a non-loopback aggregator (the token would travel in clear)."""
    accept_remote_exec: bool = False
    """Run exec probes the aggregator assigns (off: see exporter.assignment)."""
    tunnel: TunnelClientSettings = field(default_factory=TunnelClientSettings)
    """Reconnect backoff and session timers (pings, dead-peer deadline) of the tunnel."""
    api_proxy: ApiProxyMode = ApiProxyMode.OFF
    """Kubernetes mode: whether the aggregator may reach this cluster's API (exporter.api_proxy)."""
    kubeconfig: Path | None = None
    """Kubernetes mode: this kubeconfig, else the in-cluster service account."""
    namespace: str | None = None
    """Kubernetes mode: the namespace whose Probes run (default: the context's or the pod's)."""
    all_namespaces: bool = False
    exec_namespaces: ExecNamespaces = field(default_factory=ExecNamespaces)
    """Kubernetes mode: namespaces whose Probes may run commands (see exporter.exec_policy)."""
    containers: ContainerSettings = field(default_factory=ContainerSettings)
    """Kubernetes mode: how container probes run (their namespace is set at start)."""


class Agent:
    """The running agent's parts, and what the aggregator may ask of them (``Control``)."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        kube: ProberAccess | None = None,
        api: KubeApi | None = None,
    ) -> None:
        """``namespace`` is the agent's own: where probes the aggregator assigns run;
        ``kube`` the Kubernetes API for probers and ``api`` the one checks discover their
        targets in (Kubernetes mode)."""
        self.settings = settings
        self.store = ResultStore()
        self.state_file = StateFile(settings.state_dir) if settings.state_dir else None
        self.assignment = Assignment(
            accept_remote_exec=settings.accept_remote_exec,
            state_dir=settings.state_dir,
            namespace=namespace,
        )
        self.tunnel: TunnelClient | None = None
        self.metrics = AgentMetrics(
            self.store,
            version=__version__,
            tunnel_connected=lambda: self.tunnel.connected if self.tunnel else None,
            probe_files=lambda: self.files.files_ok if self.files is not None else {},
            status_lag=lambda: self.kube.statuses.behind() if self.kube is not None else None,
        )
        self.scheduler = Scheduler(
            self.store,
            registry.probers(),
            settings=settings.scheduler,
            observe_lag=self.metrics.scheduler_lag.observe,
            on_record=self._recorded,
            kube=kube,
            containers=self._run_container,
        )
        self.files = (
            ProbeFiles(settings.probes, max_bytes=settings.max_probe_file_bytes)
            if settings.probes
            else None
        )
        self.discovery = Discovery(api, self._targets_found)
        self.kube: KubeMode | None = None
        self.local: list[Probe] = []
        self.changed = asyncio.Event()
        """Set when results change, so the aggregator hears of it (see _notify_loop)."""
        self.state = AgentState(store=self.store, registry=self.metrics.registry, facts=self.facts)

    async def _run_container(self, probe: Probe) -> dict[str, CheckResult]:
        """Run a container probe as a Job (Kubernetes mode; elsewhere run_probe says why not)."""
        if self.kube is None:
            return await run_probe(probe, {}, asyncio.Semaphore(1))
        return await self.kube.containers.run(probe)

    def _recorded(self, key: tuple[str, str], transitions: list[Transition]) -> None:
        if transitions:
            self.changed.set()
        if self.kube is not None:
            self.kube.on_record(key, transitions)

    def _targets_found(self, key: tuple[str, str], check: str, targets: TargetSet) -> None:
        added = self.store.set_targets(key, check, targets)
        self.scheduler.targets_added(key, added)
        self.changed.set()
        if self.kube is not None:
            self.kube.statuses.mark(key)

    def set_local(self, probes: list[Probe]) -> None:
        """Replace the cluster's own probes (from files or Probe CRs) and apply."""
        self.local = probes
        self.apply()

    def facts(self) -> AgentFacts:
        """What /status says about this agent."""
        cluster = self.kube.facts if self.kube is not None else None
        return AgentFacts(
            cluster=self.settings.cluster,
            version=__version__,
            kubernetes_version=cluster.kubernetes_version if cluster else None,
            node_count=cluster.node_count if cluster else None,
            assignment_revision=self.assignment.revision,
            # served only in Kubernetes mode with an aggregator (run_agent)
            api_proxy=(
                self.settings.api_proxy.value
                if self.kube is not None and self.settings.aggregator
                else ApiProxyMode.OFF.value
            ),
            config_errors=self.files.errors if self.files is not None else (),
        )

    def apply(self) -> None:
        """Run local plus assigned probes, following the objects their checks discover."""
        probes = merge(self.local, self.assignment)
        self.scheduler.apply(probes)
        self.discovery.apply(probes)

    def assign(self, body: object) -> dict[str, Any]:
        """Take an assignment from the aggregator (tunnel only)."""
        self.assignment.apply(body)
        self.apply()  # may refuse more: an assigned name a local Probe already has
        self.changed.set()
        return self.assignment.report()

    async def run_now(self, namespace: str, name: str) -> dict[str, Any]:
        """Run one probe now and return its /status view (tunnel only)."""
        await self.scheduler.run_now((namespace, name))
        state = self.store.get((namespace, name))
        if state is None:  # removed while it ran
            raise KeyError((namespace, name))
        return probe_view(
            state, config_errors_by_probe(self.facts().config_errors).get(state.probe.key)
        )


async def run_agent(
    settings: AgentSettings,
    *,
    on_listening: Callable[[str], None] = lambda url: None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set), then shut down cleanly.

    Raises FileNotFoundError for a missing probe file and KubeError when no Kubernetes
    configuration can be loaded, before anything listens.
    """
    if settings.probes is not None and not settings.probes.exists():
        raise FileNotFoundError(f"--probes {settings.probes}: no such file or directory")
    api = KubeApi.load(settings.kubeconfig) if settings.probes is None else None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # The agent's own namespace, where assigned probes run: the one whose Probes it runs (with
    # --all-namespaces, the context's or the pod's); default in file mode.
    home = (settings.namespace or api.namespace) if api is not None else DEFAULT_NAMESPACE
    agent = Agent(
        settings,
        namespace=home,
        kube=ProberAccess(api) if api is not None else None,
        api=api,
    )
    if api is not None:
        namespace = None if settings.all_namespaces else home
        agent.kube = KubeMode(
            api,
            agent.store,
            agent.set_local,
            runs=agent.state.runs,
            settings=KubeSettings(
                namespace=namespace,
                exec_namespaces=settings.exec_namespaces,
                containers=replace(settings.containers, agent_namespace=home),
            ),
        )
        log.info("exec checks of Probe objects run in namespaces: %s", settings.exec_namespaces)
    if agent.state_file is not None:
        agent.store.restore(agent.state_file.load())
    agent.assignment.load()
    runner = make_runner(agent.state)
    await runner.setup()
    site = CappedSite(
        runner,
        settings.host,
        settings.port,
        max_connections=settings.max_connections or default_max_connections(),
    )
    background: list[asyncio.Task[None]] = []
    try:
        await site.start()
        on_listening(_url(runner))
        if agent.kube is not None:
            agent.kube.containers.listening(_url(runner))
        if agent.kube is not None:
            await agent.kube.start()
            background.append(asyncio.create_task(_ready_when_synced(agent), name="kube-ready"))
        else:
            assert agent.files is not None  # file mode
            agent.set_local(agent.files.reload() or [])
            agent.state.ready = True
            background.append(asyncio.create_task(_reload_loop(agent), name="probe-file-reload"))
        if agent.state_file is not None:
            background.append(
                asyncio.create_task(
                    _save_loop(agent.state_file, agent.store, settings), name="state-save"
                )
            )
        if settings.aggregator:
            proxy = None
            if api is not None and settings.api_proxy is not ApiProxyMode.OFF:
                proxy_settings = ApiProxySettings(
                    namespace=home, write=settings.api_proxy is ApiProxyMode.WRITE
                )
                passthrough = Passthrough(api.configuration, user=proxy_settings.user)
                proxy = ApiProxy(passthrough, settings.cluster, proxy_settings).app
                log.info(
                    "the aggregator may reach this cluster's API as %s (%s)",
                    proxy_settings.user,
                    "reads and writes" if proxy_settings.write else "reads only",
                )
            agent.tunnel = TunnelClient(
                settings.aggregator,
                make_app(agent.state, control=agent),
                token_file=settings.token_file or "",
                ca_file=settings.aggregator_ca,
                insecure=settings.insecure,
                settings=settings.tunnel,
                api_proxy=proxy,
            )
            await agent.tunnel.start()
            background.append(asyncio.create_task(_notify_loop(agent), name="tunnel-notify"))
        await stop.wait()
        log.info("shutting down")
    finally:
        agent.state.ready = False
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if agent.tunnel is not None:
            await agent.tunnel.close()
        await agent.scheduler.stop()
        await agent.discovery.stop()
        if agent.kube is not None:
            await agent.kube.stop()
        if api is not None:
            await api.close()
        if agent.state_file is not None:
            agent.state_file.write(dump(agent.store))
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


async def _ready_when_synced(agent: Agent) -> None:
    assert agent.kube is not None
    agent.state.not_ready_reason = "Probes not listed from the Kubernetes API yet"
    await agent.kube.synced.wait()
    agent.state.ready = True


async def _reload_loop(agent: Agent) -> None:
    assert agent.files is not None
    while True:
        await asyncio.sleep(agent.settings.reload_interval)
        try:
            probes = agent.files.reload()
        except Exception:
            log.exception("reloading %s failed; keeping the current probes", agent.files.path)
            continue
        if probes is not None:
            agent.set_local(probes)
            agent.changed.set()  # config errors may have come or gone with no result changing


async def _notify_loop(agent: Agent) -> None:
    """Tell the aggregator results changed, at most once per NOTIFY_INTERVAL."""
    while True:
        await agent.changed.wait()
        agent.changed.clear()
        if agent.tunnel is not None:
            await agent.tunnel.notify({"type": "changed", "revision": agent.store.revision})
        await asyncio.sleep(NOTIFY_INTERVAL)


async def _save_loop(state_file: StateFile, store: ResultStore, settings: AgentSettings) -> None:
    saved = store.revision
    while True:
        await asyncio.sleep(settings.save_interval)
        if store.revision == saved:
            continue
        try:
            # Snapshot on the loop (the store is not thread-safe), write in a thread.
            await asyncio.to_thread(state_file.write, dump(store))
            saved = store.revision
        except OSError as exc:
            log.error("saving results to %s failed: %s", state_file.path, exc)
