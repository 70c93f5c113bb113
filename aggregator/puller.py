"""Pull every agent through its tunnel: ``/status`` and ``/metrics``, on notice and on a beat.

A cluster is pulled on connect and right after each change notice its agent sends on the
`events` stream; once its agent has sent one on the current session, the beat is only a safety
net every ``full_interval``, so steady-state work follows what changed, not how many clusters
are held. A cluster whose agent has sent none (an agent that never sends any) or whose last
pull failed is pulled every ``interval``. Each pull has its own timeout and concurrency is
bounded, so one slow cluster never delays the others. A failed pull keeps the cluster's last
data (it turns stale when the cluster goes Offline).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubeprober.aggregator.federation import Federation, IngestReport
from kubeprober.aggregator.views import REPORT_FIELDS, ClusterView
from kubeprober.interning import interned
from kubeprober.tunnel import SessionClosed, TunnelError
from kubeprober.tunnel.http.client import AgentClient, decode_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PullSettings:
    """How often and how patiently agents are pulled."""

    interval: float = 15.0
    """Seconds between pulls of a cluster whose agent has sent no change notice on its
    session, or whose last pull failed: Prometheus' usual scrape interval, so data is as
    fresh as the scrapes that read it."""
    full_interval: float = 60.0
    """Seconds between safety-net pulls of a cluster whose agent announces its changes (it is
    pulled on each notice): picks up what changes without a notice (durations, counters)
    and anything a lost notice missed."""
    timeout: float = 10.0
    """Seconds one cluster's pull may take before it counts as failed."""
    concurrency: int = 64
    """Pulls in flight at once. A pull through a tunnel takes milliseconds, so 64 finish a
    2,000-cluster round well inside the interval, while the answers held at once stay
    bounded (at most twice this many times the aggregator's ``max_answer``)."""
    debounce: float = 0.5
    """Seconds to gather change notices before pulling, so a burst makes one pull."""


class Puller:
    """Keeps each connected cluster's report and metrics fresh."""

    def __init__(
        self,
        views: dict[str, ClusterView],
        agents: AgentClient,
        federation: Federation,
        *,
        settings: PullSettings,
        on_pulled: Callable[[ClusterView], None] = lambda _: None,
    ) -> None:
        self._views = views
        self._agents = agents
        self._federation = federation
        self.settings = settings
        self._on_pulled = on_pulled
        self._limit = asyncio.Semaphore(settings.concurrency)
        self._pending: set[str] = set()
        self._poked = asyncio.Event()
        self._capped: set[str] = set()
        """Clusters whose last pull passed the series cap (to log changes only)."""
        self._announcing: set[str] = set()
        """Clusters whose agent sent a change notice on its current session."""
        self._pulled_at: dict[str, float] = {}
        """Monotonic time each cluster's last pull started."""
        self._in_flight: set[str] = set()
        """Clusters being pulled now (a round skips them)."""
        self._tick = min(settings.interval, settings.full_interval)
        self.last_round: float | None = None
        """Seconds the last round to finish (the pulls that were due) took."""

    def poke(self, cluster: str) -> None:
        """Pull ``cluster`` soon (after a connect)."""
        self._pending.add(cluster)
        self._poked.set()

    def noticed(self, cluster: str) -> None:
        """Pull ``cluster`` soon, and from now on count on its notices (until it reconnects)."""
        self._announcing.add(cluster)
        self.poke(cluster)

    def forget(self, cluster: str) -> None:
        """Drop what was known of ``cluster``'s session (it disconnected)."""
        self._announcing.discard(cluster)
        self._pulled_at.pop(cluster, None)

    def due(self, view: ClusterView, now: float) -> bool:
        """Whether the beat pulls ``view`` at ``now``: connected, no pull of it in flight, and
        its period has passed."""
        if not view.connected or view.name in self._in_flight:
            return False
        quiet = view.name not in self._announcing or not view.pull_ok
        period = self.settings.interval if quiet else self.settings.full_interval
        last = self._pulled_at.get(view.name)
        # Half a tick of slack: a cluster pulled one tick ago is due now, not a tick later.
        return last is None or now - last >= period - self._tick / 2

    async def run_rounds(self) -> None:
        """Start a round of the connected clusters that are due every ``min(interval,
        full_interval)``, on the beat: a round never waits for the one before it, so an agent
        that does not answer holds up its own cluster only, for at most ``timeout``."""
        async with asyncio.TaskGroup() as rounds:
            while True:
                start = time.monotonic()
                due = [v for v in self._views.values() if self.due(v, start)]
                if due:
                    rounds.create_task(self._round(due, start), name="pull-round")
                await asyncio.sleep(max(0.0, self._tick - (time.monotonic() - start)))

    async def _round(self, due: list[ClusterView], start: float) -> None:
        await asyncio.gather(*(self.pull(v) for v in due))
        # Compress what the round changed now, in a thread, so a gzip scrape only joins.
        await asyncio.to_thread(self._federation.compress)
        self.last_round = time.monotonic() - start

    async def run_pokes(self) -> None:
        """Pull poked clusters, gathering notices for ``debounce`` seconds first."""
        while True:
            await self._poked.wait()
            await asyncio.sleep(self.settings.debounce)
            self._poked.clear()
            names, self._pending = self._pending, set()
            views = [self._views[n] for n in names if n in self._views]
            await asyncio.gather(*(self.pull(v) for v in views if v.connected))

    async def pull(self, view: ClusterView) -> bool:
        """Fetch one cluster's ``/status`` and ``/metrics``; return whether both worked."""
        self._pulled_at[view.name] = time.monotonic()
        self._in_flight.add(view.name)
        try:
            return await self._pull(view)
        finally:
            self._in_flight.discard(view.name)

    async def _pull(self, view: ClusterView) -> bool:
        async with self._limit:
            start = time.monotonic()
            try:
                async with asyncio.timeout(self.settings.timeout):
                    report = cluster_report(decode_json(await self._get(view.name, "/status")))
                    metrics = await self._get(view.name, "/metrics")
                filed = self._federation.ingest(view.name, metrics)
            except (TunnelError, TimeoutError, ValueError) as exc:  # ExpositionError too
                view.pull_ok = False
                view.pull_error = _describe(exc, self.settings.timeout)
                # A session that ended (an agent stopping, a link lost) is the tunnel's news,
                # logged there at the level it deserves; here it only explains the miss.
                level = logging.INFO if isinstance(exc, SessionClosed) else logging.WARNING
                log.log(level, "pull of cluster %s failed: %s", view.name, view.pull_error)
                return False
            finally:
                view.pull_duration = time.monotonic() - start
            self._note_capped(view.name, filed)
            view.pulled(report, at=time.time())
            self._on_pulled(view)
            return True

    def _note_capped(self, cluster: str, report: IngestReport) -> None:
        """Log when a cluster starts or stops passing the series cap (not every pull)."""
        capped = bool(report.capped)
        if capped == (cluster in self._capped):
            return
        if capped:
            self._capped.add(cluster)
            log.warning(
                "cluster %s sends more than %s series: %d left out of /metrics (families %s; "
                "see kubeprober_federation_dropped_series_total)",
                cluster,
                self._federation.max_series,
                report.dropped_series,
                ", ".join(report.capped[:5]) + (", ..." if len(report.capped) > 5 else ""),
            )
        else:
            self._capped.discard(cluster)
            log.info("cluster %s is within the series cap again", cluster)

    async def _get(self, cluster: str, path: str) -> bytes:
        reply = await self._agents.get(cluster, path)
        if reply.status != 200:
            raise ValueError(f"{path} answered {reply.status} {reply.reason}")
        return reply.body


def cluster_report(doc: Any) -> dict[str, Any]:
    """The one cluster entry of an agent's /status, checked enough to merge safely, with only
    what the aggregator reads of it (its summaries are counted again here) and interned: a
    replica keeps one per cluster it holds."""
    try:
        (entry,) = doc["clusters"]
    except (TypeError, KeyError, ValueError):
        raise ValueError("/status is not a one-cluster status document") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("probes"), list):
        raise ValueError("/status cluster entry has no probes list")
    return interned({k: entry[k] for k in REPORT_FIELDS if k in entry})


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g}s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
