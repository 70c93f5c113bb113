"""The unified /status document (docs/contracts.md): cluster states, staleness, filters."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import MultiDict

from kubeprober.aggregator.views import ClusterView, Filters, unified_status
from tests.status_contract import (
    CHECK_KEYS,
    CLUSTER_KEYS,
    PROBE_KEYS,
    RFC3339_UTC,
    SUMMARY_KEYS,
    pending_check,
)

NOW = 1_800_000_000.0
TTL = 45.0
LAYERS = ("application", "middleware", "kubernetes", "infrastructure")
STATUSES = ("PASS", "INFO", "WARN", "ERROR", "UNKNOWN")
Query = dict[str, str] | list[tuple[str, str]]
"""A query string's pairs; a list when a key repeats."""
# The Cluster's spec fields the aggregator adds for the board.
EXTRA_CLUSTER_KEYS = {"displayName", "maintenance"}


def check(name: str, status: str | None) -> dict[str, Any]:
    """One check as an agent reports it; None: pending, no result yet."""
    if status is None:
        return pending_check(name)
    return {
        "name": name,
        "status": status,
        "pending": False,
        "message": "" if status == "PASS" else f"{name} is {status}",
        "lastRun": "2027-01-15T08:00:00Z",
        "durationSeconds": 0.01,
        "consecutiveFailures": 0 if status == "PASS" else 2,
        "lastTransitionTime": "2027-01-15T07:00:00Z",
    }


def probe(name: str, layer: str, *statuses: str | None) -> dict[str, Any]:
    """One probe view as an agent reports it, with one check per status (None: pending)."""
    checks = [check(f"c{i}", s) for i, s in enumerate(statuses)]
    ran = [s for s in statuses if s is not None]
    order = ("PASS", "INFO", "UNKNOWN", "WARN", "ERROR")
    worst = max(ran, key=order.index) if ran else None
    return {
        "namespace": "default",
        "name": name,
        "layer": layer,
        "status": worst,
        "message": "",
        "lastRun": "2027-01-15T08:00:00Z",
        "nextRun": "2027-01-15T08:00:30Z",
        "stale": False,
        "configError": None,
        "checks": checks,
    }


def report(*probes: dict[str, Any], revision: int | None = 7) -> dict[str, Any]:
    """The one cluster entry of an agent's /status."""
    return {
        "name": "ignored",
        "state": "Online",
        "lastSeen": "2027-01-15T08:00:00Z",
        "agentVersion": "0.1.0",
        "kubernetesVersion": "v1.33.1",
        "nodeCount": 3,
        "assignmentRevision": revision,
        "summary": {},
        "layers": {},
        "configErrors": [],
        "probes": list(probes),
    }


def view(
    name: str,
    *probes: dict[str, Any],
    connected: bool = True,
    age: float | None = 1.0,
    pull_ok: bool | None = None,
) -> ClusterView:
    """A cluster last pulled well ``age`` seconds ago (None: never) reporting ``probes``; its
    last pull worked (``pull_ok``) unless told otherwise or disconnected."""
    return ClusterView(
        name,
        connected=connected,
        last_seen=None if age is None else NOW - age,
        report=report(*probes) if age is not None else None,
        pull_ok=connected if pull_ok is None else pull_ok,
    )


def by_status(**counts: int) -> dict[str, int]:
    """A full byStatus map."""
    return {s: counts.get(s, 0) for s in STATUSES}


def fleet() -> list[ClusterView]:
    """Three clusters: moon healthy with a WARN, mars with an ERROR, venus offline."""
    return [
        view(
            "moon",
            probe("dns", "kubernetes", "PASS", "PASS"),
            probe("cert", "infrastructure", "WARN"),
        ),
        view(
            "mars", probe("db", "middleware", "ERROR", "PASS"), probe("web", "application", "PASS")
        ),
        view("venus", probe("web", "application", "PASS"), connected=False),
    ]


def test_config_errors_pass_through_to_the_unified_document() -> None:
    broken = {"file": "/etc/probes/db.yaml", "message": "invalid YAML at line 3, column 1: x"}
    db = {**probe("db", "middleware", "PASS"), "configError": broken}
    moon = view("moon", db)
    assert moon.report is not None
    moon.report["configErrors"] = [broken]
    older = view("mars", probe("web", "application", "PASS"))
    assert older.report is not None
    del older.report["configErrors"]  # an agent from before config errors were reported
    doc = unified_status([moon, older], ttl=TTL, now=NOW)
    entries = {c["name"]: c for c in doc["clusters"]}
    assert entries["moon"]["configErrors"] == [broken]
    assert entries["moon"]["probes"][0]["configError"] == broken
    assert entries["mars"]["configErrors"] == []


def test_document_has_the_design_shape() -> None:
    doc = unified_status(fleet(), ttl=TTL, now=NOW)
    assert set(doc) == {"generatedAt", "summary", "clusters"}
    assert RFC3339_UTC.fullmatch(doc["generatedAt"])
    assert [c["name"] for c in doc["clusters"]] == ["mars", "moon", "venus"]
    for entry in doc["clusters"]:
        assert CLUSTER_KEYS <= set(entry) <= CLUSTER_KEYS | EXTRA_CLUSTER_KEYS
        assert RFC3339_UTC.fullmatch(entry["lastSeen"])
        assert (entry["agentVersion"], entry["kubernetesVersion"], entry["nodeCount"]) == (
            "0.1.0",
            "v1.33.1",
            3,
        )
        assert entry["assignmentRevision"] == 7
        assert tuple(entry["layers"]) == LAYERS
        for summary in (entry["summary"], *entry["layers"].values()):
            assert set(summary) == SUMMARY_KEYS
            assert tuple(summary["byStatus"]) == STATUSES
            assert summary["total"] == sum(summary["byStatus"].values()) + summary["pending"]
        for p in entry["probes"]:
            assert set(p) == PROBE_KEYS
            for c in p["checks"]:
                assert set(c) == CHECK_KEYS


def test_summaries_count_checks_per_cluster_layer_and_fleet() -> None:
    doc = unified_status(fleet(), ttl=TTL, now=NOW)
    mars, moon, venus = doc["clusters"]
    assert moon["summary"] == summary("WARN", PASS=2, WARN=1)
    assert moon["layers"]["kubernetes"] == summary("PASS", PASS=2)
    assert moon["layers"]["middleware"] == summary(None)  # no checks: not PASS
    assert mars["summary"]["status"] == "ERROR"
    assert mars["layers"]["middleware"]["byStatus"] == by_status(PASS=1, ERROR=1)
    # Offline: its last result counted as it is, the cluster UNKNOWN.
    assert venus["summary"] == summary("UNKNOWN", PASS=1)
    # The fleet adds the counts up; its status is the worst cluster's.
    assert doc["summary"] == summary("ERROR", PASS=5, WARN=1, ERROR=1)


def summary(status: str | None, pending: int = 0, **counts: int) -> dict[str, Any]:
    """A whole ``{status, total, pending, byStatus}`` object."""
    return {
        "status": status,
        "total": sum(counts.values()) + pending,
        "pending": pending,
        "byStatus": by_status(**counts),
    }


def test_pending_checks_are_counted_apart_and_roll_up_to_null() -> None:
    moon = view(
        "moon",
        probe("dns", "kubernetes", None, None),
        probe("cert", "infrastructure", "WARN", None),
    )
    mars = view("mars")  # online, no checks at all
    doc = unified_status([moon, mars], ttl=TTL, now=NOW)
    (mars_entry, moon_entry) = doc["clusters"]
    assert moon_entry["summary"] == summary("WARN", 3, WARN=1)
    assert moon_entry["layers"]["kubernetes"] == summary(None, 2)
    assert moon_entry["layers"]["infrastructure"] == summary("WARN", 1, WARN=1)
    assert mars_entry["summary"] == summary(None)
    assert doc["summary"] == summary("WARN", 3, WARN=1)
    only_pending = unified_status(
        [view("moon", probe("dns", "kubernetes", None))], ttl=TTL, now=NOW
    )
    assert only_pending["summary"] == summary(None, 1)


@pytest.mark.parametrize(
    ("connected", "age", "pull_ok", "state"),
    [
        pytest.param(True, 1.0, True, "Online", id="connected-fresh"),
        # Pulled on notice and every --full-pull-interval: a good pull holds however old.
        pytest.param(True, TTL * 10, True, "Online", id="connected-quiet"),
        pytest.param(True, TTL, False, "Online", id="connected-failing-at-ttl"),
        pytest.param(True, TTL + 1, False, "Offline", id="connected-failing-past-ttl"),
        pytest.param(False, 1.0, False, "Offline", id="disconnected"),
        pytest.param(True, None, False, "Pending", id="connected-never-pulled"),
        pytest.param(False, None, False, "Pending", id="never-seen"),
    ],
)
def test_state(connected: bool, age: float | None, pull_ok: bool, state: str) -> None:
    v = view(
        "moon", probe("dns", "kubernetes", "PASS"), connected=connected, age=age, pull_ok=pull_ok
    )
    (entry,) = unified_status([v], ttl=TTL, now=NOW)["clusters"]
    assert entry["state"] == state
    if state == "Pending":
        assert entry["lastSeen"] is None
        assert entry["probes"] == []
        assert entry["summary"] == summary(None)  # never heard of: nothing checked


@pytest.mark.parametrize(
    ("connected", "age"),
    [pytest.param(False, 1.0, id="disconnected"), pytest.param(True, TTL + 5, id="failing")],
)
def test_offline_cluster_keeps_results_stale_and_is_unknown(connected: bool, age: float) -> None:
    v = view(
        "moon",
        probe("dns", "kubernetes", "PASS", "PASS"),
        probe("db", "middleware", "ERROR"),
        connected=connected,
        age=age,
        pull_ok=False,
    )
    (entry,) = unified_status([v], ttl=TTL, now=NOW)["clusters"]
    assert entry["state"] == "Offline"
    # The last results are kept as reported, only marked stale.
    assert [(p["name"], p["status"], p["stale"]) for p in entry["probes"]] == [
        ("dns", "PASS", True),
        ("db", "ERROR", True),
    ]
    assert [c["status"] for c in entry["probes"][0]["checks"]] == ["PASS", "PASS"]
    # Counted as the probes listed say (no contradiction), but UNKNOWN: they may not hold.
    assert entry["summary"] == summary("UNKNOWN", PASS=2, ERROR=1)
    assert entry["layers"]["kubernetes"] == summary("UNKNOWN", PASS=2)
    assert entry["layers"]["middleware"] == summary("UNKNOWN", ERROR=1)
    assert entry["layers"]["application"] == summary(None)  # nothing there to doubt


def test_online_probes_are_not_stale_and_views_are_not_mutated() -> None:
    views = fleet()
    doc = unified_status(views, ttl=TTL, now=NOW)
    assert all(not p["stale"] for c in doc["clusters"][:2] for p in c["probes"])
    assert all(p["stale"] for p in doc["clusters"][2]["probes"])
    assert views[2].report is not None
    assert all(not p["stale"] for p in views[2].report["probes"])  # the kept report is untouched


def test_empty_fleet_has_no_status() -> None:
    doc = unified_status([], ttl=TTL, now=NOW)
    assert doc["clusters"] == []
    assert doc["summary"] == summary(None)


@pytest.mark.parametrize(
    ("query", "clusters", "statuses", "layers"),
    [
        pytest.param({}, set(), set(), set(), id="none"),
        pytest.param({"cluster": "moon"}, {"moon"}, set(), set(), id="cluster"),
        pytest.param({"cluster": "moon,mars"}, {"moon", "mars"}, set(), set(), id="clusters"),
        pytest.param({"status": "error"}, set(), {"ERROR"}, set(), id="status-any-case"),
        pytest.param({"status": "WARN,ERROR"}, set(), {"WARN", "ERROR"}, set(), id="statuses"),
        pytest.param({"layer": "middleware"}, set(), set(), {"middleware"}, id="layer"),
        pytest.param({"cluster": "", "status": ""}, set(), set(), set(), id="empty-values"),
        pytest.param(
            [("status", "ERROR"), ("status", "warn"), ("cluster", "moon"), ("cluster", "mars")],
            {"moon", "mars"},
            {"WARN", "ERROR"},
            set(),
            id="repeated-keys",
        ),
    ],
)
def test_filters_parse(
    query: Query, clusters: set[str], statuses: set[str], layers: set[str]
) -> None:
    f = Filters.from_query(MultiDict(query))
    assert (set(f.clusters), set(f.statuses), set(f.layers)) == (clusters, statuses, layers)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        pytest.param({"status": "BROKEN"}, ["status", "BROKEN", "PASS"], id="status"),
        pytest.param({"status": "PASS,nope"}, ["status", "NOPE"], id="one-bad-status"),
        pytest.param({"layer": "network"}, ["layer", "network", "middleware"], id="layer"),
        pytest.param({"layer": "Middleware"}, ["layer", "Middleware"], id="layer-case"),
    ],
)
def test_filters_reject_unknown_values(query: dict[str, str], words: list[str]) -> None:
    with pytest.raises(ValueError) as raised:
        Filters.from_query(MultiDict(query))
    for word in words:
        assert word in str(raised.value)


@pytest.mark.parametrize(
    ("query", "listed"),
    [
        pytest.param(
            {},
            {"mars": {"db", "web"}, "moon": {"dns", "cert"}, "venus": {"web"}},
            id="all",
        ),
        pytest.param({"cluster": "moon"}, {"moon": {"dns", "cert"}}, id="cluster"),
        pytest.param({"cluster": "pluto"}, {}, id="unknown-cluster"),
        pytest.param(
            {"status": "ERROR,WARN"},
            {"mars": {"db"}, "moon": {"cert"}, "venus": set()},
            id="status",
        ),
        pytest.param(
            {"layer": "application"},
            {"mars": {"web"}, "moon": set(), "venus": {"web"}},
            id="layer",
        ),
        pytest.param(
            {"status": "UNKNOWN"},
            {"mars": set(), "moon": set(), "venus": {"web"}},
            id="offline-is-unknown",
        ),
        pytest.param(
            {"cluster": "mars,venus", "layer": "application", "status": "PASS"},
            {"mars": {"web"}, "venus": set()},
            id="combined",
        ),
    ],
)
def test_filters_narrow_the_listing_but_not_the_summaries(
    query: dict[str, str], listed: dict[str, set[str]]
) -> None:
    full = unified_status(fleet(), ttl=TTL, now=NOW)
    doc = unified_status(fleet(), ttl=TTL, now=NOW, filters=Filters.from_query(MultiDict(query)))
    assert {c["name"]: {p["name"] for p in c["probes"]} for c in doc["clusters"]} == listed
    assert doc["summary"] == full["summary"]
    whole = {c["name"]: (c["summary"], c["layers"]) for c in full["clusters"]}
    for entry in doc["clusters"]:
        assert (entry["summary"], entry["layers"]) == whole[entry["name"]]
