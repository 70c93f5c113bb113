"""The agent's ``/status`` document: the unified shape of docs/contracts.md, holding one cluster.

The aggregator merges these documents as they are, so the shape here is a contract.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubeprober.exporter.probe_files import ConfigError
from kubeprober.exporter.store import CheckState, ProbeState, ResultStore, TargetSet
from kubeprober.probers.probe import LAYERS
from kubeprober.probers.result import CheckResult, rfc3339
from kubeprober.probers.status import Status, Summary, worst


@dataclass(frozen=True)
class AgentFacts:
    """What the agent says about itself and its cluster."""

    cluster: str
    version: str
    kubernetes_version: str | None = None
    node_count: int | None = None
    assignment_revision: int | None = None
    api_proxy: str = "off"
    """What operators may do with the cluster's API through the aggregator: off, read, write."""
    config_errors: tuple[ConfigError, ...] = ()
    """Probe files, or Probes in them, that did not load (file mode)."""


def check_view(name: str, check: CheckState, probe: ProbeState) -> dict[str, Any]:
    """One check as JSON; a check without a result yet is pending, with no status."""
    r = check.result
    if r is None:
        message = "suspended, never ran" if probe.probe.suspend else "no result yet"
        return {
            "name": name,
            "status": None,
            "pending": True,
            "message": message,
            "lastRun": None,
            "durationSeconds": None,
            "consecutiveFailures": 0,
            "lastTransitionTime": None,
        }
    return {
        "name": name,
        "status": r.status.value,
        "pending": False,
        "message": r.message,
        "lastRun": rfc3339(r.started_at),
        "durationSeconds": round(r.duration, 6),
        "consecutiveFailures": check.consecutive_failures,
        "lastTransitionTime": rfc3339(check.last_transition),
    }


def probe_view(state: ProbeState, config_error: ConfigError | None = None) -> dict[str, Any]:
    """One probe as JSON: its checks, and the worst status of those that ran with its message.

    A probe none of whose checks has run yet has no status (null). ``config_error`` is why
    the probe runs a previous version of its definition, if it does.
    """
    checks = [check_view(n, c, state) for n, c in state.checks.items()]
    status = worst(Status(c["status"]) for c in checks if not c["pending"])
    message = ""
    if status is not None and status is not Status.PASS:
        failing = next(c for c in checks if c["status"] == status.value)
        message = f"{failing['name']}: {failing['message']}"
    if state.probe.suspend:
        message = f"suspended; {message}" if message else "suspended"
    return {
        "namespace": state.probe.namespace,
        "name": state.probe.name,
        "layer": state.probe.layer,
        "status": None if status is None else status.value,
        "message": message,
        "lastRun": rfc3339(state.last_run),
        "nextRun": rfc3339(state.next_run),
        "stale": False,
        "configError": _config_error(config_error) if config_error else None,
        "checks": checks,
        "targets": [targets_view(name, t) for name, t in state.targets.items()],
    }


def targets_view(check: str, targets: TargetSet) -> dict[str, Any]:
    """A check with ``targets:`` as JSON: how many run (each listed in ``checks`` as
    ``<check>/<target>``), how many the cap left out, and why there are none if it says."""
    return {
        "check": check,
        "total": len(targets.runs),
        "leftOut": targets.left_out,
        "message": targets.message,
    }


def config_errors_by_probe(errors: tuple[ConfigError, ...]) -> dict[tuple[str, str], ConfigError]:
    """Index config errors by the probes they keep at a previous version (the first wins)."""
    return {key: e for e in reversed(errors) for key in e.kept}


def _config_error(error: ConfigError) -> dict[str, str]:
    return {"file": error.file, "message": error.message}


def passed(probe: dict[str, Any]) -> str:
    """Checks of a probe view that passed (PASS or INFO), like ``5/6``, for ProbeStatus."""
    checks = probe["checks"]
    good = sum(c["status"] in (Status.PASS.value, Status.INFO.value) for c in checks)
    return f"{good}/{len(checks)}"


def status_document(
    store: ResultStore, facts: AgentFacts, *, now: float | None = None
) -> dict[str, Any]:
    """Build the agent's ``/status``: one cluster, counted over checks."""
    now = time.time() if now is None else now
    kept = config_errors_by_probe(facts.config_errors)
    probes = [probe_view(state, kept.get(state.probe.key)) for state in store]
    all_checks = [(p["layer"], _status(c)) for p in probes for c in p["checks"]]
    summary = Summary.of(s for _, s in all_checks).to_json()
    layers = {
        layer: Summary.of(s for lay, s in all_checks if lay == layer).to_json() for layer in LAYERS
    }
    cluster = {
        "name": facts.cluster,
        "state": "Online",
        "lastSeen": rfc3339(now),
        "agentVersion": facts.version,
        "kubernetesVersion": facts.kubernetes_version,
        "nodeCount": facts.node_count,
        "assignmentRevision": facts.assignment_revision,
        "apiProxy": facts.api_proxy,
        "summary": summary,
        "layers": layers,
        "configErrors": [_config_error(e) for e in facts.config_errors],
        "probes": probes,
    }
    return {"generatedAt": rfc3339(now), "summary": summary, "clusters": [cluster]}


History = Mapping[tuple[str, str, str], Iterable[CheckResult]]
"""Each check's last results, oldest first, by (namespace, probe, check)."""


def histories(store: ResultStore) -> History:
    """Take every check's last results: on the event loop, which owns the store; the results
    themselves never change, so they may be rendered elsewhere."""
    return {
        (*state.probe.key, name): tuple(check.history)
        for state in store
        for name, check in state.checks.items()
    }


def add_histories(doc: dict[str, Any], history: History) -> None:
    """Give each check of a status document its ``history`` (``/status?history=1``): at most
    20 results, oldest first, each ``{startedAt, status, durationSeconds, message}``."""
    for cluster in doc["clusters"]:
        for probe in cluster["probes"]:
            for check in probe["checks"]:
                check["history"] = [
                    {
                        "startedAt": rfc3339(r.started_at),
                        "status": r.status.value,
                        "durationSeconds": round(r.duration, 6),
                        "message": r.message,
                    }
                    for r in history.get((probe["namespace"], probe["name"], check["name"]), ())
                ]


def _status(check: dict[str, Any]) -> Status | None:
    return None if check["pending"] else Status(check["status"])
