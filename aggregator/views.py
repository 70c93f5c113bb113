"""Each cluster's view (ClusterView), and the unified ``/status`` built from the views.

Each agent reports its own ``/status`` (one cluster); the fleet keeps the last report per
cluster with its connection facts and merges them into the unified document of
docs/contracts.md.

Summaries count checks by their last status, and checks without a result as ``pending``; a
summary's status is the worst status counted, null when nothing has a result. An offline
cluster keeps its last results, marked ``stale`` and counted as they are (so the counts say
what the probes listed say), but its summary status, and that of each layer with checks, is
UNKNOWN: its agent is away, so none of those results may still hold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from multidict import MultiMapping

from kubeprober.probers.probe import LAYERS
from kubeprober.probers.result import rfc3339
from kubeprober.probers.status import BY_SEVERITY, Status

State = Literal["Online", "Offline", "Pending"]
STATES: tuple[State, ...] = ("Online", "Offline", "Pending")


@dataclass
class ClusterView:
    """One cluster as the aggregator sees it. Owned by the aggregator's event loop."""

    name: str
    display_name: str = ""
    maintenance: bool = False
    connected: bool = False
    """Whether its tunnel session is up right now."""
    last_seen: float | None = None
    """Unix time of the last successful pull or message from its agent."""
    report: dict[str, Any] | None = None
    """The ``clusters[0]`` entry of the agent's last ``/status``."""
    assignment_revision: int | None = None
    """The assignment revision the agent last acknowledged."""
    revision: int = 0
    """Bumped by :meth:`pulled` (``report`` and ``last_seen`` change only there), so
    renderings and status comparisons can be reused while it stays."""
    rendered: tuple[tuple[object, ...], bytes, dict[str, Any]] | None = field(
        default=None, repr=False, compare=False
    )
    """Cache of this cluster's /status entry as JSON, with its summary."""
    pull_ok: bool = False
    """Whether the last pull worked (``kubeprober_agent_up``)."""
    pull_error: str = ""
    pull_duration: float | None = None

    def pulled(self, report: dict[str, Any] | None, *, at: float) -> None:
        """Take a good pull's ``report``, made at unix time ``at``: a new revision."""
        self.report, self.last_seen, self.pull_ok, self.pull_error = report, at, True, ""
        self.revision += 1

    def state(self, *, now: float, ttl: float) -> State:
        """Online while connected and its last pull worked or it was seen within ``ttl``
        seconds; Pending if never seen.

        A good last pull keeps a connected cluster Online however old: agents that announce
        their changes are pulled only on notice and every safety-net period, and a live
        session has heard its agent within the tunnel's dead-peer timeout.
        """
        if self.last_seen is None:
            return "Pending"
        if self.connected and (self.pull_ok or now - self.last_seen <= ttl):
            return "Online"
        return "Offline"


@dataclass(frozen=True)
class Filters:
    """``/status`` query: filters, each a set of accepted values (empty meaning all), and
    whether each check's recent history is wanted (one cluster's, fetched from its agent)."""

    clusters: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    layers: frozenset[str] = frozenset()
    history: bool = False
    held: bool = False
    """Kubernetes mode: only the clusters this replica holds (what replicas ask each other)."""

    @classmethod
    def from_query(cls, query: MultiMapping[str]) -> Filters:
        """Parse ``?cluster=a,b&status=ERROR&status=WARN&layer=middleware&history=1``;
        ValueError if bad.

        A key given several times, or several values separated by commas, accepts each.
        ``history=1`` needs exactly one cluster: each agent keeps its own.
        """

        def values(key: str) -> frozenset[str]:
            return frozenset(v for given in query.getall(key, ()) for v in given.split(",") if v)

        statuses = frozenset(s.upper() for s in values("status"))
        bad = statuses - {s.value for s in Status}
        if bad:
            raise ValueError(
                f"status: unknown value {sorted(bad)[0]!r} (known: "
                f"{', '.join(s.value for s in Status)})"
            )
        layers = values("layer")
        if layers - set(LAYERS):
            raise ValueError(
                f"layer: unknown value {sorted(layers - set(LAYERS))[0]!r} "
                f"(known: {', '.join(LAYERS)})"
            )
        clusters = values("cluster")
        history = query.getall("history", [])
        if history and history != ["1"]:
            raise ValueError(f"history: expected 1, got {','.join(history)!r}")
        if history and len(clusters) != 1:
            raise ValueError("history=1 needs exactly one cluster=NAME: each agent keeps its own")
        held = query.getall("held", [])
        if held and held != ["1"]:
            raise ValueError(f"held: expected 1, got {','.join(held)!r}")
        return cls(clusters, statuses, layers, history=bool(history), held=bool(held))


REPORT_FIELDS = (
    "agentVersion",
    "kubernetesVersion",
    "nodeCount",
    "assignmentRevision",
    "apiProxy",
    "configErrors",
    "probes",
)
"""What :func:`cluster_entry` reads of an agent's report: all a view keeps of it."""


def cluster_entry(view: ClusterView, *, now: float, ttl: float) -> dict[str, Any]:
    """Build one cluster's entry of the unified document."""
    state = view.state(now=now, ttl=ttl)
    report = view.report or {}
    stale = state != "Online"
    # Shallow copies: only "stale" differs from the agent's report, which is never mutated;
    # an agent from before targets lists none.
    probes = [{"targets": [], **probe, "stale": stale} for probe in report.get("probes", [])]
    # One pass over the checks: this runs for every cluster after every pull.
    total = dict.fromkeys(_COUNTED, 0)
    layers: dict[str, dict[str | None, int]] = {
        layer: dict.fromkeys(_COUNTED, 0) for layer in LAYERS
    }
    for probe in probes:
        in_layer = layers.get(str(probe.get("layer")))
        for check in probe.get("checks", ()):
            status = check.get("status")
            # null is pending; a status this version does not know counts as UNKNOWN.
            counted = None if status is None else status if status in total else "UNKNOWN"
            total[counted] += 1
            if in_layer is not None:
                in_layer[counted] += 1
    offline = state == "Offline"
    summary = _summary(total)
    if offline:  # whatever its last results say, they may no longer hold
        summary["status"] = Status.UNKNOWN.value
    return {
        "name": view.name,
        "displayName": view.display_name or view.name,
        "state": state,
        "maintenance": view.maintenance,
        "lastSeen": rfc3339(view.last_seen),
        "agentVersion": report.get("agentVersion"),
        "kubernetesVersion": report.get("kubernetesVersion"),
        "nodeCount": report.get("nodeCount"),
        "assignmentRevision": report.get("assignmentRevision", view.assignment_revision),
        "apiProxy": report.get("apiProxy"),
        "summary": summary,
        "layers": {layer: _summary(counts, stale=offline) for layer, counts in layers.items()},
        "configErrors": report.get("configErrors", []),
        "probes": probes,
    }


_VALUES = tuple(s.value for s in Status)
_COUNTED: tuple[str | None, ...] = (*_VALUES, None)
"""Keys of a count: the five statuses, and None for checks without a result (pending)."""
_WORST_FIRST = tuple(s.value for s in BY_SEVERITY)


def _summary(counts: Mapping[str | None, int], *, stale: bool = False) -> dict[str, Any]:
    """``{status, total, pending, byStatus}``: the worst status counted, else null.

    ``stale`` summaries (an offline cluster's layers) with any check are UNKNOWN.
    """
    by_status = {s: counts[s] for s in _VALUES}
    total = sum(counts.values())
    status = next((s for s in _WORST_FIRST if by_status[s]), None)
    if stale and total:
        status = Status.UNKNOWN.value
    return {"status": status, "total": total, "pending": counts[None], "byStatus": by_status}


def _fleet_summary(summaries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Add up the clusters' summaries: counts summed, status the worst cluster status."""
    counts = dict.fromkeys(_COUNTED, 0)
    statuses = set()
    for summary in summaries:
        for status, n in summary["byStatus"].items():
            counts[status] += n
        counts[None] += summary["pending"]
        statuses.add(summary["status"])
    fleet = _summary(counts)
    fleet["status"] = next((s for s in _WORST_FIRST if s in statuses), None)
    return fleet


def unified_status(
    views: Iterable[ClusterView],
    *,
    ttl: float,
    filters: Filters | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Merge every cluster into the unified ``/status`` document.

    Summaries always cover whole clusters; filters only narrow which clusters and probes
    are listed, so a filtered view never hides that a cluster is unhealthy.
    """
    now = time.time() if now is None else now
    filters = filters or Filters()
    entries = [cluster_entry(v, now=now, ttl=ttl) for v in sorted(views, key=lambda v: v.name)]
    fleet = _fleet_summary(e["summary"] for e in entries)
    shown = []
    for entry in entries:
        if filters.clusters and entry["name"] not in filters.clusters:
            continue
        entry["probes"] = shown_probes(entry, filters)
        shown.append(entry)
    return {"generatedAt": rfc3339(now), "summary": fleet, "clusters": shown}


def shown_probes(entry: Mapping[str, Any], filters: Filters) -> list[dict[str, Any]]:
    """The probes of a cluster entry that ``filters``' statuses and layers let through."""
    return [
        p
        for p in entry.get("probes") or []
        if (not filters.statuses or _listed_status(p) in filters.statuses)
        and (not filters.layers or p.get("layer") in filters.layers)
    ]


def _listed_status(probe: Mapping[str, Any]) -> Any:
    # A stale probe's last status may no longer hold: it is filtered as it is counted.
    return Status.UNKNOWN.value if probe.get("stale") else probe.get("status")


def rendered_entry(view: ClusterView, *, now: float, ttl: float) -> tuple[bytes, dict[str, Any]]:
    """Return the cluster's entry as JSON bytes and its summary, cached per change."""
    state = view.state(now=now, ttl=ttl)
    key = (view.revision, state, view.maintenance, view.display_name, view.assignment_revision)
    if view.rendered is None or view.rendered[0] != key:
        entry = cluster_entry(view, now=now, ttl=ttl)
        data = json.dumps(entry, separators=(",", ":")).encode()
        view.rendered = (key, data, entry["summary"])
    return view.rendered[1], view.rendered[2]


def unified_status_bytes(
    views: Iterable[ClusterView], *, ttl: float, now: float | None = None
) -> bytes:
    """The unfiltered unified document as JSON, joined from per-cluster cached entries.

    The same document as :func:`unified_status` without filters; a cluster's entry is
    rendered once per pull or state change, so many readers cost only a join.
    """
    now = time.time() if now is None else now
    return spliced_document(
        ((v.name, *rendered_entry(v, now=now, ttl=ttl)) for v in views), now=now
    )


def spliced_document(
    parts: Iterable[tuple[str, bytes, Mapping[str, Any]]],
    *,
    now: float,
    listed: Iterable[tuple[str, bytes]] | None = None,
) -> bytes:
    """The unified document as JSON, joined from each cluster's (name, entry as JSON,
    summary): no entry is encoded again, however many clusters. A filtered document lists
    ``listed`` (name, entry as JSON) instead; its summary still covers every part."""
    ordered = sorted(parts, key=lambda part: part[0])
    summary = _fleet_summary(s for _, _, s in ordered)
    head = json.dumps({"generatedAt": rfc3339(now), "summary": summary}, separators=(",", ":"))
    if listed is None:
        entries = [d for _, d, _ in ordered]
    else:
        entries = [d for _, d in sorted(listed, key=lambda part: part[0])]
    return head[:-1].encode() + b',"clusters":[' + b",".join(entries) + b"]}"


def entry_lines(views: Iterable[ClusterView], *, ttl: float, filters: Filters) -> bytes:
    """Clusters' entries, one JSON object a line (``/status?held=1``, what replicas ask each
    other), by name; unfiltered, each is its cached rendering."""
    now = time.time()
    ordered = sorted(views, key=lambda v: v.name)
    if replace(filters, held=False) == Filters():
        lines = [rendered_entry(v, now=now, ttl=ttl)[0] for v in ordered]
    else:
        doc = unified_status(ordered, ttl=ttl, filters=filters, now=now)
        lines = [json.dumps(e, separators=(",", ":")).encode() for e in doc["clusters"]]
    return b"".join(line + b"\n" for line in lines)


def valid_summary(summary: Any) -> bool:
    """Whether ``summary`` (another replica's) is a cluster summary this version can add up."""
    if not isinstance(summary, dict):
        return False
    by_status, pending = summary.get("byStatus"), summary.get("pending")
    return (
        isinstance(by_status, dict)
        and all(k in _VALUES and type(n) is int and n >= 0 for k, n in by_status.items())
        and type(pending) is int
        and pending >= 0
        and summary.get("status") in (*_VALUES, None)
    )
