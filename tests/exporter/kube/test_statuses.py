"""ProbeStatus writes: created on the first result, owned by the Probe, written through the
status subresource, 409s retried, API failures and outages caught up afterwards."""

from __future__ import annotations

from typing import Any

from kubeprober.exporter.kube.statuses import StatusWriter, status_body
from kubeprober.exporter.kube.watching import ref_of
from kubeprober.exporter.store import ResultStore
from kubeprober.kube.api import KubeApi
from kubeprober.kube.errors import NotFound
from kubeprober.kube.resources import PROBE_STATUSES, PROBES
from kubeprober.probers.probe import parse_probe
from kubeprober.probers.result import CheckResult
from kubeprober.probers.status import Status
from kubeprober.tasks import spawn, stop
from tests.exporter.kube.conftest import (
    AgentFactory,
    checks_by_name,
    create_probe,
    eventually,
    probe_body,
    probe_status,
    tcp_check,
    written_status,
)
from tests.harness.faultproxy import FaultProxy


async def test_probestatus_created_with_owner_and_status(
    start_agent: AgentFactory, kube: KubeApi, kube_namespace: str, open_port: int, closed_port: int
) -> None:
    await start_agent()
    probe = await create_probe(
        kube,
        kube_namespace,
        probe_body("web", [tcp_check("up", open_port), tcp_check("down", closed_port)]),
    )

    status = await eventually(
        lambda: probe_status(kube, kube_namespace, "web"), what="ProbeStatus web"
    )
    obj = await kube.get(PROBE_STATUSES, "web", namespace=kube_namespace)
    (owner,) = obj["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "kubeprober.io/v1",
        "kind": "Probe",
        "name": "web",
        "uid": probe["metadata"]["uid"],
        "controller": True,
    }
    assert status["status"] == "ERROR"
    assert status["passed"] == "1/2"
    assert status["message"].startswith("down: ")
    assert status["lastRun"].endswith("Z")
    assert isinstance(status["durationSeconds"], float)
    checks = checks_by_name(status)
    assert checks["up"]["status"] == "PASS"
    assert checks["down"]["status"] == "ERROR"
    assert checks["down"]["consecutiveFailures"] >= 1
    assert checks["down"]["lastTransitionTime"].endswith("Z")
    # Written through the subresource: the main resource's generation never moved.
    assert obj["metadata"].get("generation", 1) == 1


async def test_a_probe_shows_pending_until_a_check_has_a_result(
    start_agent: AgentFactory, kube: KubeApi, kube_namespace: str, open_port: int
) -> None:
    await start_agent()
    # Suspended: it never runs, so it stays Pending; its check is listed without a status.
    await create_probe(
        kube, kube_namespace, probe_body("idle", [tcp_check("up", open_port)], suspend=True)
    )
    status = await eventually(
        lambda: written_status(kube, kube_namespace, "idle"), what="ProbeStatus idle"
    )
    assert (status["status"], status["passed"]) == ("Pending", "0/1")
    (up,) = status["checks"]
    assert up["pending"] is True and "status" not in up
    assert "lastRun" not in status  # null: nothing ran


async def test_at_most_one_write_per_run(
    start_agent: AgentFactory, kube: KubeApi, kube_namespace: str, open_port: int
) -> None:
    agent = await start_agent()
    await create_probe(
        kube,
        kube_namespace,
        probe_body("often", [tcp_check("up", open_port)], interval="200ms"),
    )
    stats = agent.mode.statuses.stats
    await eventually(lambda: stats.writes >= 5, what="five writes")
    await agent.scheduler.stop()
    await eventually(lambda: agent.mode.statuses.pending == 0, what="the last write")
    assert stats.creates == 1
    assert stats.writes <= _runs(agent.store) + 1  # + the Pending one, before the first run
    assert stats.failures == 0


async def test_marks_are_coalesced_latest_wins(
    kube: KubeApi, kube_namespace: str, open_port: int
) -> None:
    created = await create_probe(kube, kube_namespace, probe_body("p", [tcp_check("a", 1)]))
    probe = parse_probe(created)
    store = ResultStore()
    store.set_probes([probe])
    ref = ref_of(created)
    writer = StatusWriter(kube, store, lambda key: ref if key == probe.key else None)
    for i in range(50):
        outcome = Status.PASS if i < 49 else Status.WARN
        result = CheckResult(outcome, f"run {i}", 1e9 + i, 0.1)
        store.record(probe.key, {"a": result}, duration=0.1)
        writer.mark(probe.key)
    assert writer.pending == 1
    task = spawn(writer.run(), "test-status-writer")
    try:
        await eventually(lambda: writer.pending == 0, what="the coalesced write")
    finally:
        await stop([task])
    assert (writer.stats.creates, writer.stats.writes) == (1, 1)
    status = await probe_status(kube, kube_namespace, "p")
    assert status["status"] == "WARN" and status["message"] == "a: run 49"


async def test_conflict_is_retried_after_a_fresh_read(
    kube_fault_proxy: FaultProxy,  # first: set up before the agent, torn down after it
    start_agent: AgentFactory,
    kube: KubeApi,
    kube_namespace: str,
    open_port: int,
) -> None:
    agent = await start_agent(kubeconfig=kube_fault_proxy.kubeconfig)
    kube_fault_proxy.fail(409, count=2, path="/probestatuses/once/status", method="PATCH")
    await create_probe(kube, kube_namespace, probe_body("once", [tcp_check("up", open_port)]))
    status = await eventually(
        lambda: probe_status(kube, kube_namespace, "once"), what="ProbeStatus once"
    )
    assert status["status"] == "PASS"
    assert agent.mode.statuses.stats.conflicts == 2
    assert agent.mode.statuses.stats.failures == 0


async def test_server_errors_and_an_outage_are_caught_up(
    kube_fault_proxy: FaultProxy,  # first: set up before the agent, torn down after it
    start_agent: AgentFactory,
    kube: KubeApi,
    kube_namespace: str,
    open_port: int,
) -> None:
    agent = await start_agent(kubeconfig=kube_fault_proxy.kubeconfig)
    # 500s on every status write for a while: probing goes on, writes wait.
    kube_fault_proxy.fail(500, path="/status", method="PATCH")
    await create_probe(
        kube,
        kube_namespace,
        probe_body("flaky", [tcp_check("up", open_port)], interval="300ms"),
    )
    await eventually(lambda: agent.mode.statuses.stats.failures >= 2, what="failed writes")
    # Then the API server goes away altogether.
    kube_fault_proxy.refuse()
    kube_fault_proxy.cut()
    store_runs = _runs(agent.store)
    await eventually(lambda: _runs(agent.store) >= store_runs + 3, what="probing during outage")
    assert agent.mode.statuses.pending == 1  # one probe, one coalesced write waiting
    kube_fault_proxy.clear()

    status = await eventually(
        lambda: probe_status(kube, kube_namespace, "flaky"), within=15, what="catch-up"
    )
    assert status["status"] == "PASS"
    state = agent.store.get((kube_namespace, "flaky"))
    assert state is not None and state.last_run is not None
    # The outage shows as write lag (the worker notes it just after the write returns).
    await eventually(lambda: agent.lags and max(agent.lags) > 0.5, what="the write lag")


def _runs(store: ResultStore) -> int:
    return sum(sum(c.runs.values()) for s in store for c in s.checks.values())


async def test_deleting_the_probe_collects_its_status(
    start_agent: AgentFactory, kube: KubeApi, kube_namespace: str, open_port: int
) -> None:
    await start_agent()
    await create_probe(kube, kube_namespace, probe_body("gone", [tcp_check("up", open_port)]))
    await eventually(lambda: probe_status(kube, kube_namespace, "gone"), what="ProbeStatus")
    await kube.delete(PROBES, "gone", namespace=kube_namespace)

    async def collected() -> bool:
        try:
            await kube.get(PROBE_STATUSES, "gone", namespace=kube_namespace)
        except NotFound:
            return True
        return False

    await eventually(collected, within=20, what="garbage collection of the ProbeStatus")


def test_status_body_is_the_status_view() -> None:
    probe = parse_probe(probe_body("p", [tcp_check("a", 1), tcp_check("b", 2)], interval="30s"))
    store = ResultStore()
    store.set_probes([probe])
    store.record(
        probe.key,
        {
            "a": CheckResult(Status.PASS, "", 1_700_000_000.0, 0.25),
            "b": CheckResult(Status.ERROR, "refused", 1_700_000_000.5, 0.1),
        },
        duration=0.6,
    )
    state = store.get(probe.key)
    assert state is not None
    body: dict[str, Any] = status_body(state)
    assert set(body) == {
        "status",
        "passed",
        "message",
        "lastRun",
        "nextRun",
        "durationSeconds",
        "checks",
        "targets",
    }
    assert body["targets"] is None  # no check with targets: the merge patch leaves none
    assert body["status"] == "ERROR" and body["passed"] == "1/2"
    assert body["message"] == "b: refused"
    assert body["durationSeconds"] == 0.6
    assert body["nextRun"] is None
    assert [c["name"] for c in body["checks"]] == ["a", "b"]
