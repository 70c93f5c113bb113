"""A check with targets in the agent: one run per target, named ``<check>/<target>`` in
``/status``, labelled ``target`` in ``/metrics``, following its target set, within a cap.

Discovery from a Kubernetes API is in tests/exporter/kube/test_discovery.py; here the target
set is handed to the store as discovery would hand it.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kubeprober.exporter.check import run_once
from kubeprober.exporter.discovery import NO_API
from kubeprober.exporter.kube.statuses import status_body
from kubeprober.exporter.metrics import AgentMetrics
from kubeprober.exporter.runner import run_probe, target_offset
from kubeprober.exporter.scheduler import Scheduler, SchedulerSettings
from kubeprober.exporter.status import AgentFacts, status_document
from kubeprober.exporter.store import CheckState, ResultStore, TargetSet
from kubeprober.probers import registry
from kubeprober.probers.probe import Probe, load_text
from kubeprober.probers.result import CheckResult
from kubeprober.probers.status import Status
from kubeprober.probers.targets import MAX_LIMIT, Target
from tests.exporter import fakes
from tests.exporter.test_metrics import promtool_check


@pytest.fixture
async def server() -> AsyncIterator[str]:
    """An HTTP server on loopback answering ``/status/CODE`` with that code."""

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="answered")

    app = web.Application()
    app.router.add_get("/status/{code}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def probe_of(checks: str) -> Probe:
    """Load one Probe (run once) with the given checks block."""
    text = (
        "apiVersion: kubeprober.io/v1\nkind: Probe\nmetadata: {name: shop, namespace: web}\n"
        f"spec:\n  layer: application\n  checks:\n{checks}"
    )
    result = load_text(text, source="shop.yaml")
    assert [str(e) for e in result.errors] == []
    return result.probes[0]


def service(name: str, port: int) -> Target:
    """A Service target as discovery makes it (only the fields these checks use)."""
    return Target(f"web/{name}", (("name", name), ("port", port)))


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``condition()`` holds, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def series(metrics: AgentMetrics, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one family, by their sorted labels."""
    text = generate_latest(metrics.registry).decode()
    return {
        tuple(sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        if f.name == family
        for s in f.samples
    }


async def test_each_target_runs_and_shows_as_check_slash_target(server: str) -> None:
    probe = probe_of(
        "  - name: api\n    prober: http\n"
        "    targets: {fromObjects: {kind: Service}}\n"
        f'    with: {{url: "{server}/status/${{target.port}}"}}\n'
    )
    store = ResultStore()
    metrics = AgentMetrics(store, version="0.0.0")
    scheduler = Scheduler(
        store, registry.probers(), settings=SchedulerSettings(new_target_delay=0.0)
    )
    (check,) = probe.checks
    try:
        scheduler.apply([probe])
        store.set_targets(
            probe.key, "api", TargetSet.of(check, [service("a", 200), service("b", 503)])
        )
        state = store.get(probe.key)
        assert state is not None
        await until(lambda: all(c.result for c in state.checks.values()))

        doc = status_document(store, AgentFacts(cluster="local", version="0.0.0"))
        (view,) = doc["clusters"][0]["probes"]
        assert [(c["name"], c["status"]) for c in view["checks"]] == [
            ("api/web/a", "PASS"),
            ("api/web/b", "ERROR"),
        ]
        assert view["message"].startswith("api/web/b: ")
        assert view["targets"] == [{"check": "api", "total": 2, "leftOut": 0, "message": ""}]
        assert doc["summary"]["total"] == 2
        base = (("check", "api"), ("layer", "application"), ("namespace", "web"), ("probe", "shop"))
        assert series(metrics, "kubeprober_check_success") == {
            (*base[:3], ("probe", "shop"), ("target", "web/a")): 1.0,
            (*base[:3], ("probe", "shop"), ("target", "web/b")): 0.0,
        }
        assert series(metrics, "kubeprober_check_targets") == {base: 2.0}
        done = promtool_check(generate_latest(metrics.registry).decode())
        assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr

        # b goes, c comes: c runs within the catch-up delay (the probe itself ran once and
        # will not run again), and b's series and entry are gone.
        added = store.set_targets(
            probe.key, "api", TargetSet.of(check, [service("a", 200), service("c", 204)])
        )
        assert added == ["api/web/c"]
        scheduler.targets_added(probe.key, added)
        await until(lambda: state.checks["api/web/c"].result is not None)
        assert state.checks["api/web/c"].result.status is Status.PASS  # type: ignore[union-attr]
        targets = {dict(labels)["target"] for labels in series(metrics, "kubeprober_check_status")}
        assert targets == {"web/a", "web/c"}
    finally:
        await scheduler.stop()


def test_the_cap_keeps_the_first_targets_by_name_and_counts_the_rest() -> None:
    probe = probe_of(
        "  - name: api\n    prober: tcp\n"
        "    targets: {fromObjects: {kind: Service}, max: 2}\n"
        '    with: {host: 127.0.0.1, port: "${target.port}"}\n'
    )
    (check,) = probe.checks
    store = ResultStore()
    store.set_probes([probe])
    targets = [service(n, 80) for n in ("e", "d", "c", "b", "a")]
    store.set_targets(probe.key, "api", TargetSet.of(check, targets))
    state = store.get(probe.key)
    assert state is not None
    assert list(state.checks) == ["api/web/a", "api/web/b"]
    metrics = AgentMetrics(store, version="0.0.0")
    labels = (("check", "api"), ("layer", "application"), ("namespace", "web"), ("probe", "shop"))
    assert series(metrics, "kubeprober_check_targets_left_out") == {labels: 3.0}
    doc = status_document(store, AgentFacts(cluster="local", version="0.0.0"))
    assert doc["clusters"][0]["probes"][0]["targets"][0]["leftOut"] == 3


def test_a_target_whose_fields_make_bad_options_ends_unknown_unrun() -> None:
    probe = probe_of(
        "  - name: api\n    prober: tcp\n"
        "    targets: {fromObjects: {kind: Service}}\n"
        '    with: {host: 127.0.0.1, port: "${target.port}"}\n'
    )
    (check,) = probe.checks
    (run,) = TargetSet.of(check, [service("a", 70000)]).runs
    assert run.spec is None
    assert run.problem == "with.port: expected integer 1-65535, got 70000"


def test_probestatus_lists_failing_targets_and_counts_the_others_at_the_cap() -> None:
    probe = probe_of(
        "  - name: api\n    prober: tcp\n"
        f"    targets: {{fromObjects: {{kind: Service}}, max: {MAX_LIMIT}}}\n"
        '    with: {host: 127.0.0.1, port: "${target.port}"}\n'
    )
    (check,) = probe.checks
    store = ResultStore()
    store.set_probes([probe])
    names = [f"svc-{i:04}-{'x' * 40}" for i in range(MAX_LIMIT)]
    store.set_targets(probe.key, "api", TargetSet.of(check, [service(n, 80) for n in names]))
    failing = CheckResult(Status.ERROR, "connection refused " * 100, 1e9, 0.01)
    store.record(probe.key, {f"api/web/{n}": failing for n in names}, duration=1.0)
    state = store.get(probe.key)
    assert state is not None
    body = status_body(state)
    size = len(json.dumps({"status": body}))
    # The API server refuses objects over 1.5 MiB; every target failing stays far below.
    assert size < 600_000, size
    assert len(body["checks"]) == MAX_LIMIT
    assert body["passed"] == f"0/{MAX_LIMIT}"

    passing = CheckResult(Status.PASS, "", 1e9, 0.01)
    store.record(probe.key, {f"api/web/{n}": passing for n in names[1:]}, duration=1.0)
    body = status_body(state)
    assert [c["name"] for c in body["checks"]] == [f"api/web/{names[0]}"]
    assert body["targets"] == [
        {
            "check": "api",
            "total": MAX_LIMIT,
            "passed": MAX_LIMIT - 1,
            "pending": 0,
            "leftOut": 0,
            "message": "",
        }
    ]
    assert body["passed"] == f"{MAX_LIMIT - 1}/{MAX_LIMIT}"


async def test_check_without_a_cluster_says_discovery_needs_one(tmp_path: Path) -> None:
    probes = tmp_path / "p.yaml"
    probes.write_text(
        "apiVersion: kubeprober.io/v1\nkind: Probe\nmetadata: {name: shop}\nspec:\n"
        "  layer: application\n  checks:\n  - name: api\n    prober: tcp\n"
        "    targets: {fromObjects: {kind: Service}}\n"
        '    with: {host: 127.0.0.1, port: "${target.port}"}\n'
    )
    out, err = io.StringIO(), io.StringIO()
    code = await run_once([probes], concurrency=4, out=out, err=err)
    assert code == 3  # nothing ran: no answer
    assert f"warning: default/shop check api: {NO_API}" in err.getvalue().splitlines()


def test_a_restored_target_keeps_its_history_once_discovered_again() -> None:
    """After a restart, ProbeStatus (or --state-dir) holds a failing target's history; it is
    taken up when discovery finds the target again, which may be after the probe loads."""
    probe = probe_of(
        "  - name: api\n    prober: tcp\n"
        "    targets: {fromObjects: {kind: Service}}\n"
        '    with: {host: 127.0.0.1, port: "${target.port}"}\n'
    )
    (check,) = probe.checks
    store = ResultStore()
    failing = CheckResult(Status.ERROR, "refused", 1e9, 0.01)
    store.restore({probe.key: {"api/web/a": CheckState(result=failing, consecutive_failures=3)}})
    store.set_probes([probe])
    state = store.get(probe.key)
    assert state is not None and state.checks == {}
    store.set_targets(probe.key, "api", TargetSet.of(check, [service("a", 80), service("b", 80)]))
    assert state.checks["api/web/a"].consecutive_failures == 3
    assert state.checks["api/web/b"].result is None


async def test_targets_start_at_their_offsets_and_their_lag_is_observed() -> None:
    runs = [fakes.check(f"api/t{i}") for i in range(8)]
    probe = fakes.make_probe(checks=(fakes.check("plain"),))
    lags: list[float] = []
    spread = 0.4
    started = time.monotonic()
    results = await run_probe(
        probe, fakes.probers_map(), asyncio.Semaphore(4), [*runs, probe.checks[0]],
        spread=spread, observe_lag=lags.append,
    )  # fmt: skip
    assert len(lags) == 8  # the targets' runs; the plain check starts at once, unplanned
    for run in runs:
        begun = results[run.name].started_at - (time.time() - time.monotonic()) - started
        assert begun >= target_offset(run.name, spread) - 0.01
    assert results["plain"].status is Status.PASS


async def test_a_suspended_probe_runs_no_new_target() -> None:
    probe = probe_of(
        "  - name: api\n    prober: tcp\n"
        "    targets: {fromObjects: {kind: Service}}\n"
        '    with: {host: 127.0.0.1, port: "${target.port}"}\n'
    )
    suspended = replace(probe, suspend=True)
    store = ResultStore()
    scheduler = Scheduler(store, registry.probers(), settings=SchedulerSettings(new_target_delay=0))
    try:
        scheduler.apply([suspended])
        (check,) = suspended.checks
        added = store.set_targets(suspended.key, "api", TargetSet.of(check, [service("a", 1)]))
        scheduler.targets_added(suspended.key, added)
        assert scheduler._catch_ups == {}  # nothing was started to run it
    finally:
        await scheduler.stop()
