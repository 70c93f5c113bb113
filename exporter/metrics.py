"""The agent's Prometheus metrics, rendered fresh from the result store at every scrape.

A custom collector on a registry of the agent's own (never the global one), so a removed
probe's series disappear at the next scrape. Names and labels are a contract (docs/contracts.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from kubeprober.exporter.store import ResultStore
from kubeprober.probers.status import Status

PREFIX = "kubeprober_"
CHECK_LABELS = ["namespace", "probe", "check", "layer"]
PROBE_LABELS = ["namespace", "probe", "layer"]
# Scheduling lag is milliseconds when healthy, seconds when the agent is overloaded.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StoreCollector(Collector):
    """Yields every check and probe family from the store's current contents."""

    def __init__(
        self,
        store: ResultStore,
        *,
        version: str,
        tunnel_connected: Callable[[], bool | None],
        probe_files: Callable[[], Mapping[str, bool]],
        status_lag: Callable[[], float | None] = lambda: None,
    ) -> None:
        self._store = store
        self._version = version
        self._tunnel_connected = tunnel_connected
        self._probe_files = probe_files
        self._status_lag = status_lag

    def collect(self) -> Iterator[Metric]:
        """Build the families for one scrape."""
        g = GaugeMetricFamily
        success = g(
            PREFIX + "check_success",
            "1 if the check's last run found the target working (PASS, INFO or WARN), else 0.",
            labels=CHECK_LABELS,
        )
        status = g(
            PREFIX + "check_status",
            "1 for the check's current status, 0 for the others (all 0 before its first result).",
            labels=[*CHECK_LABELS, "status"],
        )
        duration = g(
            PREFIX + "check_duration_seconds",
            "How long the check's last run took.",
            labels=CHECK_LABELS,
        )
        phase = g(
            PREFIX + "check_phase_duration_seconds",
            "Time the check's last run spent per phase.",
            labels=[*CHECK_LABELS, "phase"],
        )
        last_run = g(
            PREFIX + "check_last_run_timestamp_seconds",
            "When the check last ran.",
            labels=CHECK_LABELS,
        )
        last_ok = g(
            PREFIX + "check_last_success_timestamp_seconds",
            "When the check last succeeded (absent if never).",
            labels=CHECK_LABELS,
        )
        failures = g(
            PREFIX + "check_consecutive_failures",
            "Runs in a row that ended ERROR or UNKNOWN.",
            labels=CHECK_LABELS,
        )
        runs = CounterMetricFamily(
            PREFIX + "check_runs",
            "Check runs by resulting status.",
            labels=[*CHECK_LABELS, "status"],
        )
        certs = g(
            PREFIX + "certificate_expiry_timestamp_seconds",
            "When the certificate a check saw expires.",
            labels=[*CHECK_LABELS, "target"],
        )
        interval = g(
            PREFIX + "probe_interval_seconds",
            "Seconds between runs (for cron, the gap between the next two).",
            labels=PROBE_LABELS,
        )
        skipped = CounterMetricFamily(
            PREFIX + "probe_skipped_runs",
            "Runs skipped because the previous run was still going.",
            labels=PROBE_LABELS,
        )
        targets = g(
            PREFIX + "check_targets",
            "Targets a check with targets runs (each labelled target in the check families).",
            labels=CHECK_LABELS,
        )
        left_out = g(
            PREFIX + "check_targets_left_out",
            "Targets found beyond the check's cap (targets.max), not run.",
            labels=CHECK_LABELS,
        )
        # Scrapes render in a thread: take the probe list once; each check's result is an
        # immutable record read once, so a concurrent run never tears a series.
        for state in list(self._store):
            p = state.probe
            plabels = [p.namespace, p.name, p.layer]
            if state.interval is not None:
                interval.add_metric(plabels, state.interval)
            skipped.add_metric(plabels, state.skipped_runs)
            for check_name, target_set in list(state.targets.items()):
                clabels = [p.namespace, p.name, check_name, p.layer]
                targets.add_metric(clabels, len(target_set.runs))
                left_out.add_metric(clabels, target_set.left_out)
            for name, check in list(state.checks.items()):
                # A target's run is named <check>/<target> (check names hold no "/"): its
                # series carry the check's name and a target label.
                check_name, _, target = name.partition("/")
                labels = {
                    "namespace": p.namespace,
                    "probe": p.name,
                    "check": check_name,
                    "layer": p.layer,
                }
                if target:
                    labels["target"] = target
                for s in Status:
                    _add(runs, {**labels, "status": s.value}, check.runs[s])
                r = check.result
                # The five status series are always there so alerts can count on them; a
                # pending check (no result yet) has all five at 0, as it has no status.
                current = r.status if r else None
                for s in Status:
                    _add(status, {**labels, "status": s.value}, 1.0 if s is current else 0.0)
                if r is None:
                    continue
                _add(success, labels, 1.0 if r.status.is_success else 0.0)
                _add(duration, labels, r.duration)
                for phase_name, seconds in sorted(r.phases.items()):
                    _add(phase, {**labels, "phase": phase_name}, seconds)
                _add(last_run, labels, r.started_at)
                if check.last_success is not None:
                    _add(last_ok, labels, check.last_success)
                _add(failures, labels, check.consecutive_failures)
                if target and r.certificates:
                    # One target, one series: the certificate that expires first.
                    _add(certs, labels, min(r.certificates.values()))
                elif not target:
                    for cert_target, expiry in sorted(r.certificates.items()):
                        _add(certs, {**labels, "target": cert_target}, expiry)
        info = g(PREFIX + "agent_info", "The agent's version.", labels=["version"])
        info.add_metric([self._version], 1.0)
        connected = g(
            PREFIX + "agent_tunnel_connected",
            "1 while the tunnel to the aggregator is up (absent when no aggregator is configured).",
        )
        up = self._tunnel_connected()
        if up is not None:
            connected.add_metric([], 1.0 if up else 0.0)
        lag = g(
            PREFIX + "probestatus_lag_seconds",
            "Seconds the oldest result not yet written to its ProbeStatus has waited: 0 when all "
            "are current, growing while the API server is away (Kubernetes mode only).",
        )
        behind = self._status_lag()
        if behind is not None:
            lag.add_metric([], behind)
        reloaded = g(
            PREFIX + "config_last_reload_successful",
            "1 if the probe file's last load applied every Probe in it; 0 if it did not parse "
            "or a Probe in it is invalid (what ran before keeps running).",
            labels=["file"],
        )
        for file, ok in sorted(self._probe_files().items()):
            reloaded.add_metric([file], 1.0 if ok else 0.0)
        yield from (
            success,
            status,
            duration,
            phase,
            last_run,
            last_ok,
            failures,
            runs,
            certs,
            targets,
            left_out,
            interval,
            skipped,
            info,
            connected,
            lag,
            reloaded,
        )


def _add(family: Metric, labels: dict[str, str], value: float) -> None:
    """Add one series: checks with targets have one label more than plain checks."""
    suffix = "_total" if family.type == "counter" else ""
    family.samples.append(Sample(family.name + suffix, labels, value))


class AgentMetrics:
    """The agent's registry: the store collector plus the scheduler-lag histogram."""

    def __init__(
        self,
        store: ResultStore,
        *,
        version: str,
        tunnel_connected: Callable[[], bool | None] = lambda: None,
        probe_files: Callable[[], Mapping[str, bool]] = dict,
        status_lag: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            StoreCollector(
                store,
                version=version,
                tunnel_connected=tunnel_connected,
                probe_files=probe_files,
                status_lag=status_lag,
            )
        )
        self.scheduler_lag = Histogram(
            PREFIX + "scheduler_lag_seconds",
            "How late probe runs, and targets' runs within them, started against their plan.",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
