"""The Kubernetes API server slow, erroring (5xx, 429 with Retry-After) and restarting.

The agent's Kubernetes mode (ProbeStatus writes, the Probe watch) and the aggregator's
(Cluster status, replica Leases) reach the API through the harness's fault proxy; the test
itself reads and writes straight to the API. Each test goes through the faults one after the
other and asserts, for each: probing and serving go on, the logs say it in a few lines, it
heals once the fault ends, and nothing recorded before is lost. Only what a real
kube-apiserver guarantees is asserted (both legs run these).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kubernetes import client

from kubeprober.aggregator.kube import KubeModeSettings
from kubeprober.aggregator.kube.replicas import LEADER_LEASE
from kubeprober.aggregator.process import run_aggregator
from kubeprober.aggregator.state import AggregatorSettings
from kubeprober.exporter.kube.statuses import StatusSettings
from kubeprober.kube.api import KubeApi
from kubeprober.kube.resources import LEASES, PROBE_STATUSES
from kubeprober.pacing import BackoffSettings
from tests.aggregator._fleet_harness import (
    PULL,
    Service,
    cluster_of,
    eventually,
    exec_probe,
    get_json,
    write_probes,
)
from tests.aggregator.test_kube_mode import Objects, file_agent
from tests.exporter.kube.conftest import (
    FAST,
    AgentFactory,
    create_probe,
    probe_body,
    probe_status,
    tcp_check,
)
from tests.exporter.kube.conftest import eventually as until
from tests.harness.faultproxy import FaultProxy
from tests.reliability.scraping import Scraper

BACKOFF = BackoffSettings(initial=0.05, maximum=0.5)
"""Retries of every writer and watch: capped at 0.5 s, so a fault heals within about that."""
AGENT = replace(FAST, backoff=BACKOFF, statuses=StatusSettings(backoff=BACKOFF))
FAULT_SECONDS = 1.0
"""How long each fault lasts: several retries of every loop."""


def start(proxy: FaultProxy, fault: str) -> None:
    """Start a fault: ``5xx``, ``429`` (Retry-After an hour), ``slow`` or ``restart``."""
    if fault == "5xx":
        proxy.fail(503)
    elif fault == "429":
        proxy.fail(429, retry_after=3600)  # an hour: the backoff's cap must win
    elif fault == "slow":
        proxy.delay(0.4)
    else:  # restart: connections reset, then refused until it is back
        proxy.refuse(True)
    proxy.cut()  # open watches end too, and reconnect into the fault


def warnings(caplog: pytest.LogCaptureFixture) -> dict[str, int]:
    """WARNING (and worse) lines of ours since the last clear, per loop that said them (its
    logger and what it does, e.g. "watch of probes in namespace x")."""
    counts: dict[str, int] = {}
    for record in caplog.records:
        if record.levelno >= logging.WARNING and record.name.startswith("kubeprober"):
            what = record.args[0] if isinstance(record.args, tuple) and record.args else ""
            key = f"{record.name}: {what}"
            counts[key] = counts.get(key, 0) + 1
    return counts


FAULTS = ("5xx", "429", "slow", "restart")


async def test_agent_keeps_probing_and_catches_up_after_each_api_fault(
    kube_fault_proxy: FaultProxy,  # first: set up before the agent, torn down after it
    start_agent: AgentFactory,
    kube: KubeApi,
    kube_namespace: str,
    open_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="kubeprober")
    agent = await start_agent(kubeconfig=kube_fault_proxy.kubeconfig, settings=AGENT)
    await create_probe(
        kube, kube_namespace, probe_body("web", [tcp_check("up", open_port)], interval="200ms")
    )
    first = await until(lambda: probe_status(kube, kube_namespace, "web"), what="ProbeStatus")
    uid = (await kube.get(PROBE_STATUSES, "web", namespace=kube_namespace))["metadata"]["uid"]
    last_run = first["lastRun"]
    for n, fault in enumerate(FAULTS):
        caplog.clear()
        runs = _runs(agent)
        start(kube_fault_proxy, fault)
        # Meanwhile a Probe is created: the watch must bring it once the API is back.
        late = f"late-{n}"
        await create_probe(kube, kube_namespace, probe_body(late, [tcp_check("up", open_port)]))
        await asyncio.sleep(FAULT_SECONDS)  # the fault lasts this long; the checks follow
        assert _runs(agent) >= runs + 3, f"{fault}: probing stopped"
        if fault != "slow":  # what kubeprober_probestatus_lag_seconds shows
            assert agent.mode.statuses.behind() > FAULT_SECONDS / 2, fault
        kube_fault_proxy.clear()

        status = await until(
            lambda since=last_run: _newer(probe_status(kube, kube_namespace, "web"), since),
            within=10,
            what=f"ProbeStatus written again after {fault}",
        )
        assert status["status"] == "PASS"
        await until(
            lambda name=late: probe_status(kube, kube_namespace, name),
            within=10,
            what=f"the Probe created during {fault}",
        )
        last_run = status["lastRun"]
        await until(lambda: agent.mode.statuses.behind() < 0.5, what=f"no lag after {fault}")
        said = warnings(caplog)
        # One clear line per loop when it starts failing (a second when the error changes,
        # as a restart's reset turns into refusals), not one per retry.
        assert all(n <= 3 for n in said.values()), (fault, said)
        if fault != "slow":
            assert said, f"{fault} went unsaid"
    # The object written before the faults is the one still there: nothing was recreated.
    obj = await kube.get(PROBE_STATUSES, "web", namespace=kube_namespace)
    assert obj["metadata"]["uid"] == uid


def _runs(agent: Any) -> int:
    return sum(sum(c.runs.values()) for s in agent.store for c in s.checks.values())


async def _newer(status: Any, than: str) -> dict[str, Any]:
    got: dict[str, Any] = await status
    return got if got.get("lastRun", "") > than else {}


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """Return an HTTP client for the aggregator's API."""
    async with aiohttp.ClientSession() as session:
        yield session


async def test_aggregator_serves_through_each_api_fault_and_writes_status_after(
    kube_fault_proxy: FaultProxy,
    kube: KubeApi,
    kube_api: client.ApiClient,
    kube_namespace: str,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="kubeprober")
    objects = Objects(kube_api, kube_namespace)
    token = objects.cluster("moon")
    settings = AggregatorSettings(
        kube=KubeModeSettings(
            kubeconfig=kube_fault_proxy.kubeconfig,
            namespace=kube_namespace,
            status_interval=0.1,
            backoff=BACKOFF,
            identity="faults",
            lease_duration=3,  # renewed every second
        ),
        host="127.0.0.1",
        port=0,
        pull=PULL,
        reload_interval=0.2,
    )
    agg = await Service("aggregator", run_aggregator, settings).start()
    moon = file_agent("moon", token, agg.url, tmp_path)
    probes = write_probes(tmp_path / "probes.yaml", [exec_probe("ok", "true", interval="300ms")])
    moon.settings = replace(moon.settings, probes=probes)
    scraper = Scraper(http, agg.url + "/metrics", every=0.05)
    try:
        await moon.start()

        async def entry() -> dict[str, Any]:
            return cluster_of(await get_json(http, agg.url + "/status"), "moon")

        def cluster_state() -> Callable[[], Any]:
            return lambda: asyncio.to_thread(lambda: objects.status("moon").get("state"))

        seen = await eventually(
            entry, lambda e: bool(_probe_runs(e)), within=10, what="moon's first result"
        )
        await eventually(cluster_state(), lambda s: s == "Online", within=10, what="Online")
        scraper.start()
        for fault in FAULTS:
            caplog.clear()
            renewed = await _renewed(kube, kube_namespace)
            written = objects.status("moon")["state"]
            start(kube_fault_proxy, fault)
            # The agent comes or goes meanwhile: /status says so at once (the tunnel's
            # news), the Cluster's status once the API is back.
            if moon.running:
                await moon.stop()
            else:
                await moon.start()
            want = "Online" if moon.running else "Offline"
            now = await eventually(
                entry, lambda e, w=want: e["state"] == w, within=5, what=f"/status {want} ({fault})"
            )
            assert _probe_runs(now) >= _probe_runs(seen), "results from before were lost"
            seen = now
            await asyncio.sleep(FAULT_SECONDS)
            if fault != "slow":
                assert objects.status("moon")["state"] == written  # nothing got through
            kube_fault_proxy.clear()
            await eventually(
                cluster_state(),
                lambda s, w=want: s == w,
                within=10,
                what=f"{want} written ({fault})",
            )
            await eventually(
                lambda: _renewed(kube, kube_namespace),
                lambda t, since=renewed: t > since,
                within=10,
                what=f"the Lease renewed after {fault}",
            )
            said = warnings(caplog)
            assert all(n <= 3 for n in said.values()), (fault, said)
            if fault != "slow":
                assert said, f"{fault} went unsaid"
        await scraper.scrape()  # one more, after the last fault
        assert scraper.failures == [], scraper.failures
    finally:
        await scraper.stop()
        await moon.stop()
        await agg.stop()


def _probe_runs(entry: dict[str, Any]) -> str:
    """The last run of moon's probe ``ok`` ("" before its first)."""
    return next((p["lastRun"] or "" for p in entry["probes"] if p["name"] == "ok"), "")


async def _renewed(kube: KubeApi, namespace: str) -> str:
    """This replica's Lease renewTime (it is alone, so it leads: the leader Lease is its own)."""
    lease = await kube.get(LEASES, LEADER_LEASE, namespace=namespace)
    assert lease["spec"]["holderIdentity"] == "faults"
    return str(lease["spec"]["renewTime"])
