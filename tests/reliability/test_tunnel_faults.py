"""The tunnel cut (reset, path down) and blackholed (bytes silently dropped), end to end.

A real aggregator and agent (``run_aggregator``, ``run_agent`` in file mode) with an
in-process TCP proxy between them and short session timers. For each fault: the agent notices
within its dead-peer deadline, the aggregator shows the cluster Offline with
``kubeprober_agent_up`` 0 and keeps the results it had, every ``/metrics`` scrape meanwhile
answers and parses, and all of it heals once the path is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from kubeprober.aggregator.tunnel_server import TunnelServerSettings
from kubeprober.exporter.tunnel_client import TunnelClientSettings
from kubeprober.pacing import BackoffSettings
from kubeprober.tunnel import SessionSettings
from tests.aggregator._fleet_harness import (
    FleetFile,
    Service,
    agent,
    aggregator,
    cluster_of,
    eventually,
    exec_probe,
    get_json,
    write_probes,
)
from tests.harness.prometheus import running_prometheus
from tests.reliability.scraping import Scraper
from tests.tunnel.faultproxy import FaultProxy

TUNNEL_LOG = "kubeprober.exporter.tunnel"
SESSION = SessionSettings(ping_interval=0.2, dead_peer_timeout=1.0, close_timeout=0.5)
"""Pings every 0.2 s, a peer silent for 1 s is dead: the deadline the tests hold them to."""
CLIENT = TunnelClientSettings(
    backoff=BackoffSettings(initial=0.1, maximum=0.5, floor=0.0),
    stable_after=2.0,
    connect_timeout=1.0,
    session=SESSION,
)


@dataclass
class Rig:
    """The aggregator, the proxy on the agent's path to it, the agent, and two scrapers."""

    aggregator: Service
    proxy: FaultProxy
    agent: Service
    http: aiohttp.ClientSession
    scraper: Scraper
    """Prometheus scraping the aggregator."""
    agent_scraper: Scraper

    async def moon(self) -> dict[str, Any]:
        """Cluster moon's entry in the aggregator's /status."""
        return cluster_of(await get_json(self.http, self.aggregator.url + "/status"), "moon")

    def agent_up(self) -> float | None:
        """``kubeprober_agent_up`` of moon in the aggregator's last scrape."""
        return self.scraper.value("kubeprober_agent_up", cluster="moon")

    def tunnel_connected(self) -> float | None:
        """``kubeprober_agent_tunnel_connected`` in the agent's last scrape."""
        return self.agent_scraper.value("kubeprober_agent_tunnel_connected")

    async def stop(self) -> None:
        """Stop everything, the agent first."""
        await self.scraper.stop()
        await self.agent_scraper.stop()
        await self.agent.stop()
        await self.aggregator.stop()
        await self.proxy.close()


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """The aggregator, the proxy and an agent with one probe passing every 0.3 s, all up."""
    fleet = FleetFile(tmp_path / "clusters.yaml").add("moon")
    fleet.write()
    agg = aggregator(fleet.path, offline_after=30.0)
    agg.settings = replace(agg.settings, tunnel=TunnelServerSettings(session=SESSION))
    proxy = FaultProxy(0)
    probes = write_probes(tmp_path / "probes.yaml", [exec_probe("ok", "true", interval="300ms")])
    async with aiohttp.ClientSession() as http:
        await agg.start()
        proxy.target = ("127.0.0.1", int(agg.url.rsplit(":", 1)[1].split("/")[0]))
        await proxy.start()
        url = f"http://127.0.0.1:{proxy.port}"
        moon = agent("moon", fleet=fleet, aggregator_url=url, probes=probes)
        moon.settings = replace(moon.settings, tunnel=CLIENT)
        await moon.start()
        rig = Rig(
            agg,
            proxy,
            moon,
            http,
            Scraper(http, agg.url + "/metrics", every=0.05).start(),
            Scraper(http, moon.url + "/metrics", every=0.05).start(),
        )
        try:
            yield rig
        finally:
            await rig.stop()


def _last_run(entry: dict[str, Any]) -> str | None:
    (ok,) = [p for p in entry["probes"] if p["name"] == "ok"]
    last: str | None = ok["lastRun"]
    return last


@pytest.mark.parametrize("fault", ["cut", "blackhole"])
async def test_the_tunnel_cut_or_blackholed_is_noticed_shown_and_healed(
    rig: Rig, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=TUNNEL_LOG)
    online = await eventually(
        rig.moon,
        lambda e: e["state"] == "Online" and _last_run(e) is not None and rig.agent_up() == 1,
        within=10,
        what="moon Online with a result",
    )
    before = _last_run(online)
    assert rig.tunnel_connected() == 1

    started = time.monotonic()
    if fault == "cut":
        rig.proxy.down()  # reset, and every redial reset too, until healed
    else:
        rig.proxy.blackhole()  # bytes vanish; nobody is told
    # The agent's own deadline: pings unanswered for dead_peer_timeout end the session.
    await eventually(
        lambda: asyncio.sleep(0, rig.tunnel_connected()),
        lambda up: up == 0,
        within=SESSION.dead_peer_timeout + 2,
        what="the agent noticing",
        every=0.02,
    )
    assert time.monotonic() - started <= SESSION.dead_peer_timeout + 0.5
    offline = await eventually(
        rig.moon,
        lambda e: e["state"] == "Offline" and rig.agent_up() == 0,
        within=SESSION.dead_peer_timeout + 2,
        what="moon Offline with agent_up 0",
    )
    assert str(_last_run(offline)) >= str(before)  # the results from before are kept
    dials = rig.proxy.accepted
    await eventually(
        lambda: asyncio.sleep(0, rig.proxy.accepted),
        lambda n: n >= dials + 2,
        within=5,
        what="two redials while the path is down",
    )
    assert (await rig.moon())["state"] == "Offline"
    # The agent says the session ended, then that dialling fails: once, not once per dial.
    said = [r.getMessage() for r in caplog.records if r.name == TUNNEL_LOG]
    warned = [m for m in said if "failed" in m]
    assert any("session ended" in m for m in said), said
    assert len(warned) == 1, warned

    rig.proxy.heal()
    healed = await eventually(
        rig.moon,
        lambda e: (
            e["state"] == "Online" and str(_last_run(e)) > str(before) and rig.agent_up() == 1
        ),
        within=5,
        what="moon Online again with new results",
    )
    assert healed["probes"][0]["status"] == "PASS"
    assert rig.tunnel_connected() == 1
    said = [r.getMessage() for r in caplog.records if r.name == TUNNEL_LOG]
    assert any("works again" in m for m in said), said
    await rig.scraper.scrape()  # one more, after healing
    assert rig.scraper.failures == [], rig.scraper.failures
    assert rig.scraper.scrapes >= 20


async def test_a_real_prometheus_scrapes_through_a_cut_and_records_it(
    rig: Rig, tmp_path: Path
) -> None:
    """What a user's Prometheus records of an outage: every scrape of the aggregator works,
    ``kubeprober_agent_up`` goes to 0 and back, and moon's check series are there exactly
    while it is up (docs/contracts.md: an Offline cluster's agent series leave ``/metrics``)."""
    job = {
        "job_name": "kubeprober",
        "honor_labels": True,
        "scrape_timeout": "200ms",
        "static_configs": [{"targets": [rig.aggregator.url.removeprefix("http://")]}],
    }
    up = 'up{job="kubeprober"}'
    agent_up = 'kubeprober_agent_up{cluster="moon"}'
    check = 'kubeprober_check_success{cluster="moon", probe="ok"}'
    async with running_prometheus(tmp_path, [job], interval="200ms") as prom:
        await eventually(lambda: prom.samples(check), lambda s: len(s) >= 3, within=15, what="up")
        rig.proxy.down()
        await eventually(lambda: prom.value(agent_up), lambda v: v == 0, within=10, what="down")
        down = len(await prom.samples(agent_up))
        await eventually(  # three more scrapes while moon is away, then the path is back
            lambda: prom.samples(agent_up), lambda s: len(s) >= down + 3, within=10, what="scrapes"
        )
        rig.proxy.heal()
        await eventually(lambda: prom.value(check), lambda v: v == 1, within=10, what="back")
        scrapes, ups, checks = [await prom.samples(s) for s in (up, agent_up, check)]
    assert set(scrapes.values()) == {"1"}, scrapes
    since = min(checks)  # moon's first result
    assert {t for t, v in ups.items() if t >= since and v == "1"} == set(checks)
    assert [v for t, v in sorted(ups.items()) if t >= since].count("0") >= 3
