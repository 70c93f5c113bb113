"""The agent's HTTP API served on 127.0.0.1: /status shape, /metrics negotiation, probes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from kubeprober.exporter.http import AgentState, make_app
from kubeprober.exporter.metrics import AgentMetrics
from kubeprober.exporter.status import AgentFacts, status_document
from kubeprober.exporter.store import ResultStore
from kubeprober.probers.result import CheckResult, rfc3339
from kubeprober.probers.status import Status
from tests.exporter.fakes import check, make_probe
from tests.status_contract import CHECK_KEYS, CLUSTER_KEYS, PROBE_KEYS, RFC3339_UTC, SUMMARY_KEYS

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z

WEB = make_probe("web", (check("home"), check("login")), interval=30)
DB = make_probe("db", (check("tcp"),), namespace="team-a", layer="middleware")
NODES = make_probe("nodes", (check("ready"),), layer="kubernetes", suspend=True)
FACTS = AgentFacts(
    cluster="moon", version="1.2.3", kubernetes_version="v1.33.1", node_count=3,
    assignment_revision=7,
)  # fmt: skip


def filled_store() -> ResultStore:
    """Web: PASS and ERROR; db: PASS then WARN; nodes: suspended, never ran."""
    store = ResultStore()
    store.set_probes([WEB, DB, NODES])
    store.set_schedule(WEB.key, next_run=T0 + 30, interval=30)
    store.record(
        WEB.key,
        {
            "home": CheckResult(Status.PASS, "", T0, 0.1234567),
            "login": CheckResult(Status.ERROR, "HTTP 500 from /login", T0, 0.5),
        },
        duration=0.5,
    )
    store.record(DB.key, {"tcp": CheckResult(Status.PASS, "", T0 - 60, 0.01)}, duration=0.01)
    store.record(DB.key, {"tcp": CheckResult(Status.WARN, "slow", T0, 1.5)}, duration=1.5)
    return store


@pytest.fixture
async def agent() -> AsyncIterator[tuple[TestClient[Any, Any], AgentState]]:
    """Serve the agent app on 127.0.0.1, port 0."""
    store = filled_store()
    metrics = AgentMetrics(store, version="1.2.3", tunnel_connected=lambda: None)
    state = AgentState(store=store, registry=metrics.registry, facts=lambda: FACTS)
    async with TestClient(TestServer(make_app(state), host="127.0.0.1", port=0)) as client:
        yield client, state


async def get_status(client: TestClient[Any, Any]) -> dict[str, Any]:
    """GET /status and return the document."""
    response = await client.get("/status")
    assert response.status == 200
    assert response.content_type == "application/json"
    doc: dict[str, Any] = await response.json()
    return doc


def assert_summary(
    summary: dict[str, Any], status: str | None, total: int, pending: int = 0, **counts: int
) -> None:
    """Check one ``{status, total, pending, byStatus}`` object."""
    assert set(summary) == SUMMARY_KEYS
    assert summary["status"] == status
    assert summary["total"] == total
    assert summary["pending"] == pending
    assert summary["byStatus"] == {s.value: counts.get(s.value, 0) for s in Status}


async def test_status_document_shape(agent: tuple[TestClient[Any, Any], AgentState]) -> None:
    client, _ = agent
    doc = await get_status(client)
    assert set(doc) == {"generatedAt", "summary", "clusters"}
    assert len(doc["clusters"]) == 1
    cluster = doc["clusters"][0]
    assert set(cluster) == CLUSTER_KEYS
    assert set(cluster["layers"]) == {"application", "middleware", "kubernetes", "infrastructure"}
    for summary in [doc["summary"], cluster["summary"], *cluster["layers"].values()]:
        assert set(summary) == SUMMARY_KEYS
    for probe in cluster["probes"]:
        assert set(probe) == PROBE_KEYS, f"extra or missing keys: {set(probe) ^ PROBE_KEYS}"
        for c in probe["checks"]:
            assert set(c) == CHECK_KEYS


async def test_status_document_values(agent: tuple[TestClient[Any, Any], AgentState]) -> None:
    client, _ = agent
    doc = await get_status(client)
    cluster = doc["clusters"][0]
    assert {k: cluster[k] for k in ("name", "state", "agentVersion")} == {
        "name": "moon",
        "state": "Online",
        "agentVersion": "1.2.3",
    }
    assert cluster["kubernetesVersion"] == "v1.33.1"
    assert cluster["nodeCount"] == 3
    assert cluster["assignmentRevision"] == 7
    assert cluster["lastSeen"] == doc["generatedAt"]
    # Counted over checks: PASS, ERROR, WARN, and the never-run check as pending.
    assert_summary(doc["summary"], "ERROR", 4, 1, PASS=1, ERROR=1, WARN=1)
    assert cluster["summary"] == doc["summary"]
    layers = cluster["layers"]
    assert_summary(layers["application"], "ERROR", 2, PASS=1, ERROR=1)
    assert_summary(layers["middleware"], "WARN", 1, WARN=1)
    # Nothing has a result: no status, whether a check is pending or there is none at all.
    assert_summary(layers["kubernetes"], None, 1, 1)
    assert_summary(layers["infrastructure"], None, 0)

    probes = {(p["namespace"], p["name"]): p for p in cluster["probes"]}
    assert list(probes) == [("default", "nodes"), ("default", "web"), ("team-a", "db")]
    web = probes[("default", "web")]
    assert web["layer"] == "application"
    assert web["status"] == "ERROR"
    assert web["message"] == "login: HTTP 500 from /login"
    assert web["lastRun"] == "2027-01-15T08:00:00Z"
    assert web["nextRun"] == "2027-01-15T08:00:30Z"
    assert web["stale"] is False
    home, login = web["checks"]
    assert home == {
        "name": "home",
        "status": "PASS",
        "pending": False,
        "message": "",
        "lastRun": "2027-01-15T08:00:00Z",
        "durationSeconds": pytest.approx(0.123457),
        "consecutiveFailures": 0,
        "lastTransitionTime": "2027-01-15T08:00:00Z",
    }
    assert login["status"] == "ERROR"
    assert login["consecutiveFailures"] == 1
    db = probes[("team-a", "db")]
    assert (db["status"], db["message"], db["layer"]) == ("WARN", "tcp: slow", "middleware")
    assert db["checks"][0]["lastTransitionTime"] == "2027-01-15T08:00:01Z"  # 1.5 s run, floor
    nodes = probes[("default", "nodes")]
    assert nodes["status"] is None
    assert nodes["message"] == "suspended"
    assert nodes["lastRun"] is None
    assert nodes["nextRun"] is None
    never = nodes["checks"][0]
    assert never["status"] is None
    assert never["pending"] is True
    assert never["message"] == "suspended, never ran"
    assert never["lastRun"] is None
    assert never["durationSeconds"] is None


async def test_every_time_is_rfc3339_utc(agent: tuple[TestClient[Any, Any], AgentState]) -> None:
    client, _ = agent
    doc = await get_status(client)
    cluster = doc["clusters"][0]
    times = [doc["generatedAt"], cluster["lastSeen"]]
    for probe in cluster["probes"]:
        times += [probe["lastRun"], probe["nextRun"]]
        times += [t for c in probe["checks"] for t in (c["lastRun"], c["lastTransitionTime"])]
    present = [t for t in times if t is not None]
    assert len(present) >= 9
    for t in present:
        assert RFC3339_UTC.match(t), t
    generated = datetime.fromisoformat(doc["generatedAt"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - generated).total_seconds()) < 5


async def test_every_non_pass_has_a_message(agent: tuple[TestClient[Any, Any], AgentState]) -> None:
    client, _ = agent
    doc = await get_status(client)
    for probe in doc["clusters"][0]["probes"]:
        assert probe["status"] == "PASS" or probe["message"], probe
        for c in probe["checks"]:
            assert c["status"] == "PASS" or c["message"], c


async def test_status_follows_the_store(agent: tuple[TestClient[Any, Any], AgentState]) -> None:
    client, state = agent
    state.store.set_probes([DB])
    doc = await get_status(client)
    assert [p["name"] for p in doc["clusters"][0]["probes"]] == ["db"]
    assert_summary(doc["summary"], "WARN", 1, WARN=1)


def test_empty_agent_document() -> None:
    doc = status_document(ResultStore(), AgentFacts(cluster="c", version="v"), now=T0)
    assert doc["generatedAt"] == "2027-01-15T08:00:00Z"
    cluster = doc["clusters"][0]
    assert cluster["probes"] == []
    assert (cluster["kubernetesVersion"], cluster["nodeCount"]) == (None, None)
    assert cluster["assignmentRevision"] is None
    assert_summary(doc["summary"], None, 0)  # nothing checked is not PASS


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (None, None),
        (0.0, "1970-01-01T00:00:00Z"),
        (T0, "2027-01-15T08:00:00Z"),
        (T0 + 0.999, "2027-01-15T08:00:00Z"),
    ],
)
def test_rfc3339(ts: float | None, text: str | None) -> None:
    assert rfc3339(ts) == text


async def test_metrics_text_by_default(agent: tuple[TestClient[Any, Any], AgentState]) -> None:
    client, _ = agent
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = await response.text()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"kubeprober_check_status", "kubeprober_check_runs", "kubeprober_agent_info"} <= names
    assert 'probe="web"' in text
    assert "# EOF" not in text


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text",
        "application/openmetrics-text; version=1.0.0",
        # What Prometheus itself sends.
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
        "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ],
)
async def test_metrics_openmetrics_when_asked(
    agent: tuple[TestClient[Any, Any], AgentState], accept: str
) -> None:
    client, _ = agent
    response = await client.get("/metrics", headers={"Accept": accept})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith(
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    )
    text = await response.text()
    assert text.endswith("# EOF\n")
    names = {f.name for f in parse_openmetrics(text)}  # type: ignore[no-untyped-call]
    assert "kubeprober_check_runs" in names


async def test_healthz(agent: tuple[TestClient[Any, Any], AgentState]) -> None:
    client, _ = agent
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.text() == "ok\n"


async def test_readyz_503_then_200(agent: tuple[TestClient[Any, Any], AgentState]) -> None:
    client, state = agent
    response = await client.get("/readyz")
    assert response.status == 503
    assert await response.text() == "not ready: probes not loaded yet\n"
    state.not_ready_reason = "loading /etc/probes"
    assert await (await client.get("/readyz")).text() == "not ready: loading /etc/probes\n"
    state.ready = True
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.text() == "ok\n"


async def test_served_on_loopback(agent: tuple[TestClient[Any, Any], AgentState]) -> None:
    client, _ = agent
    assert client.host == "127.0.0.1"
    assert client.port and client.port > 0
    # Read each body so every connection goes back to the pool before the client closes.
    # The control routes exist only on the tunnel's agent target, never on the listen address.
    for method, path, code in (
        ("GET", "/nope", 404),
        ("POST", "/status", 405),
        ("PUT", "/v1/assignment", 404),
        ("POST", "/v1/run/default/web", 404),
    ):
        async with client.request(method, path) as response:
            await response.read()
            assert response.status == code


async def test_history_is_listed_only_when_asked(
    agent: tuple[TestClient[Any, Any], AgentState],
) -> None:
    client, _ = agent
    plain = await get_status(client)
    response = await client.get("/status", params={"history": "1"})
    assert response.status == 200
    with_history = await response.json()
    assert "\n " not in await response.text()  # compact: it is the large one

    def checks(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        return {
            (p["name"], c["name"]): c for p in doc["clusters"][0]["probes"] for c in p["checks"]
        }

    assert all(set(c) == CHECK_KEYS for c in checks(plain).values())
    listed = checks(with_history)
    for key, check_ in checks(plain).items():  # the same document, each check with its history
        assert {k: v for k, v in listed[key].items() if k != "history"} == check_
    assert listed[("db", "tcp")]["history"] == [
        {"startedAt": rfc3339(T0 - 60), "status": "PASS", "durationSeconds": 0.01, "message": ""},
        {"startedAt": rfc3339(T0), "status": "WARN", "durationSeconds": 1.5, "message": "slow"},
    ]
    assert listed[("nodes", "ready")]["history"] == []  # never ran
