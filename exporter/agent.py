"""The agent process without Kubernetes: probe files in, metrics and ``/status`` out.

It wires the store, scheduler, metrics and HTTP app, reloads changed probe files without a
restart, saves results to ``--state-dir`` and shuts down cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from exporter.http import AgentState, make_app
from exporter.metrics import AgentMetrics
from exporter.persist import StateFile, dump
from exporter.scheduler import Scheduler, SchedulerSettings
from exporter.status import AgentFacts
from exporter.store import ResultStore
from kubeprober import __version__
from probers import registry
from probers.probe import Probe, load_path, probe_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentSettings:
    """How the agent runs; the CLI fills it from flags."""

    probes: Path
    state_dir: Path | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    """8080 is the agent's documented port; 0 picks a free one and prints it."""
    cluster: str = "local"
    reload_interval: float = 2.0
    """Seconds between looks for changed probe files: edits apply within this delay."""
    save_interval: float = 1.0
    """Seconds between saves of changed results: a crash loses at most this much."""
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)


class ProbeFiles:
    """Loads probe files when they change, keeping the last good version of a broken Probe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fingerprint: tuple[tuple[str, int, int], ...] | None = None
        self._current: dict[tuple[str, str], Probe] = {}

    def _scan(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        for file in probe_files(self.path):
            with contextlib.suppress(OSError):
                st = file.stat()
                out.append((str(file), st.st_mtime_ns, st.st_size))
        return tuple(out)

    def reload(self) -> list[Probe] | None:
        """Return the new probe set if the files changed since the last call, else None."""
        fingerprint = self._scan()
        if fingerprint == self._fingerprint:
            return None
        self._fingerprint = fingerprint
        result = load_path(self.path)
        probes = {p.key: p for p in result.probes}
        for error in result.errors:
            kept = error.key is not None and error.key in self._current
            if kept and error.key is not None:
                probes[error.key] = self._current[error.key]
            log.error("invalid probe %s%s", error, "; keeping its previous version" if kept else "")
        added = probes.keys() - self._current.keys()
        removed = self._current.keys() - probes.keys()
        changed = {k for k in probes.keys() & self._current.keys() if probes[k] != self._current[k]}
        log.info(
            "loaded %d probes from %s (%d added, %d changed, %d removed, %d invalid)",
            len(probes),
            self.path,
            len(added),
            len(changed),
            len(removed),
            len(result.errors),
        )
        self._current = probes
        return list(probes.values())


async def run_agent(
    settings: AgentSettings,
    *,
    on_listening: Callable[[str], None] = lambda url: None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set), then shut down cleanly."""
    if not settings.probes.exists():
        raise FileNotFoundError(f"--probes {settings.probes}: no such file or directory")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    store = ResultStore()
    state_file = StateFile(settings.state_dir) if settings.state_dir else None
    if state_file is not None:
        store.restore(state_file.load())
    metrics = AgentMetrics(store, version=__version__)
    scheduler = Scheduler(
        store,
        registry.probers(),
        settings=settings.scheduler,
        observe_lag=metrics.scheduler_lag.observe,
    )
    facts = AgentFacts(cluster=settings.cluster, version=__version__)
    state = AgentState(store=store, registry=metrics.registry, facts=lambda: facts)
    runner = web.AppRunner(make_app(state), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    background: list[asyncio.Task[None]] = []
    try:
        await site.start()
        on_listening(_url(runner))
        files = ProbeFiles(settings.probes)
        scheduler.apply(files.reload() or [])
        state.ready = True
        background.append(
            asyncio.create_task(_reload_loop(files, scheduler, settings), name="probe-file-reload")
        )
        if state_file is not None:
            background.append(
                asyncio.create_task(_save_loop(state_file, store, settings), name="state-save")
            )
        await stop.wait()
        log.info("shutting down")
    finally:
        state.ready = False
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await scheduler.stop()
        if state_file is not None:
            state_file.write(dump(store))
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


async def _reload_loop(files: ProbeFiles, scheduler: Scheduler, settings: AgentSettings) -> None:
    while True:
        await asyncio.sleep(settings.reload_interval)
        try:
            probes = files.reload()
        except Exception:
            log.exception("reloading %s failed; keeping the current probes", files.path)
            continue
        if probes is not None:
            scheduler.apply(probes)


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
