"""The puller's own decisions: which clusters are due, how many pulls are in flight, and what
a failed pull logs."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from kubeprober.aggregator.federation import Federation
from kubeprober.aggregator.puller import Puller, PullSettings
from kubeprober.aggregator.views import ClusterView
from kubeprober.tunnel.http.client import AgentClient, Reply

STATUS = json.dumps({"clusters": [{"name": "x", "probes": []}]}).encode()


class HeldAgents(AgentClient):
    """Agents that answer only when the test lets them: counts how many are asked at once."""

    def __init__(self) -> None:
        super().__init__(lambda cluster: None)
        self.in_flight = 0
        self.most = 0
        self.release = asyncio.Event()
        self.asked = asyncio.Condition()

    async def get(self, cluster: str, path: str) -> Reply:
        async with self.asked:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.asked.notify_all()
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        return Reply(200, "OK", {}, STATUS if path == "/status" else b"")


def test_the_default_bounds_a_round() -> None:
    # 64 pulls of at most two answers of the default 8 MiB each: a round holds < 1 GiB.
    assert PullSettings().concurrency == 64


async def test_no_more_pulls_in_flight_than_the_setting() -> None:
    agents = HeldAgents()
    views = {f"c{i}": ClusterView(f"c{i}", connected=True) for i in range(5)}
    puller = Puller(views, agents, Federation(), settings=PullSettings(concurrency=2))
    pulls = asyncio.gather(*(puller.pull(v) for v in views.values()))
    async with agents.asked:
        await asyncio.wait_for(agents.asked.wait_for(lambda: agents.in_flight == 2), 5)
    agents.release.set()
    assert await asyncio.wait_for(pulls, 5) == [True] * 5
    # Without the bound all five would have asked their agents at once.
    assert agents.most == 2


async def test_a_pull_that_meets_an_ended_session_is_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No session: what a pull meets when the agent stopped cleanly a moment earlier (the
    # tunnel logs the session's end itself, as a warning when it was not clean).
    agents = AgentClient(lambda _: None)
    puller = Puller({}, agents, Federation(), settings=PullSettings())
    view = ClusterView("moon", connected=True)
    with caplog.at_level(logging.INFO, logger="kubeprober.aggregator.puller"):
        assert not await puller.pull(view)
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert (
        record.getMessage()
        == "pull of cluster moon failed: SessionClosed: cluster 'moon' is not connected"
    )
    assert not view.pull_ok


class AnsweringAgents(AgentClient):
    """Agents that answer every pull at once, or fail it while ``failing``."""

    def __init__(self) -> None:
        super().__init__(lambda cluster: None)
        self.failing = False

    async def get(self, cluster: str, path: str) -> Reply:
        if self.failing:
            return Reply(503, "Service Unavailable", {}, b"")
        return Reply(200, "OK", {}, STATUS if path == "/status" else b"")


async def test_a_cluster_that_announces_changes_is_pulled_on_the_long_beat_only() -> None:
    agents = AnsweringAgents()
    quiet, loud = ClusterView("quiet", connected=True), ClusterView("loud", connected=True)
    views = {"quiet": quiet, "loud": loud, "away": ClusterView("away")}
    settings = PullSettings(interval=10, full_interval=60)
    puller = Puller(views, agents, Federation(), settings=settings)
    assert [v.name for v in views.values() if puller.due(v, 0)] == ["quiet", "loud"]
    puller.noticed("loud")
    assert await puller.pull(quiet) and await puller.pull(loud)
    now = time.monotonic()
    # One tick (10 s) on: the agent that sends no notices is pulled again, the other is not.
    assert puller.due(quiet, now + 10) and not puller.due(loud, now + 10)
    assert not puller.due(loud, now + 50) and puller.due(loud, now + 60)
    # A failed pull puts it back on the short beat until one works.
    agents.failing = True
    assert not await puller.pull(loud)
    assert puller.due(loud, time.monotonic() + 10)
    agents.failing = False
    assert await puller.pull(loud)
    assert not puller.due(loud, time.monotonic() + 10)
    # A new session may be another agent: it counts as quiet until it sends a notice.
    puller.forget("loud")
    assert puller.due(loud, time.monotonic())


class OneHungAgent(AgentClient):
    """The agent of ``hung`` never answers; every other answers at once. Counts the asks."""

    def __init__(self) -> None:
        super().__init__(lambda cluster: None)
        self.asked: dict[str, int] = {}
        self.changed = asyncio.Condition()

    async def get(self, cluster: str, path: str) -> Reply:
        async with self.changed:
            if path == "/status":
                self.asked[cluster] = self.asked.get(cluster, 0) + 1
            self.changed.notify_all()
        if cluster == "hung":
            await asyncio.Event().wait()
        return Reply(200, "OK", {}, STATUS if path == "/status" else b"")


async def test_a_hung_agent_does_not_hold_up_the_other_clusters_rounds() -> None:
    agents = OneHungAgent()
    views = {n: ClusterView(n, connected=True) for n in ("hung", "fine")}
    # The hung pull outlives many beats: the rounds after it go on without waiting for it.
    settings = PullSettings(interval=0.05, full_interval=0.05, timeout=60)
    puller = Puller(views, agents, Federation(), settings=settings)
    rounds = asyncio.create_task(puller.run_rounds())
    try:
        async with agents.changed:
            await asyncio.wait_for(
                agents.changed.wait_for(lambda: agents.asked.get("fine", 0) >= 4), 10
            )
        # ... and do not ask the hung one again while its pull is still in flight.
        assert agents.asked["hung"] == 1
        assert views["fine"].pull_ok and puller.last_round is not None
    finally:
        rounds.cancel()
        with pytest.raises(asyncio.CancelledError):
            await rounds


async def test_a_view_keeps_what_is_read_of_a_report_with_strings_shared() -> None:
    probe = {"namespace": "kubeprober", "name": "db", "layer": "middleware", "checks": []}
    entry = {
        "name": "agent-side-name",
        "state": "Online",
        "summary": {"status": "PASS"},
        "layers": {"middleware": {"status": "PASS"}},
        "agentVersion": "1.4.0",
        "probes": [probe],
    }

    class Agents(AgentClient):
        async def get(self, cluster: str, path: str) -> Reply:
            body = json.dumps({"clusters": [entry]}) if path == "/status" else ""
            return Reply(200, "OK", {}, body.encode())

    views = {name: ClusterView(name, connected=True) for name in ("moon", "mars")}
    puller = Puller(views, Agents(lambda _: None), Federation(), settings=PullSettings())
    assert all([await puller.pull(v) for v in views.values()])
    moon, mars = (v.report for v in views.values())
    assert moon == mars == {"agentVersion": "1.4.0", "probes": [probe]}
    assert moon["probes"][0]["layer"] is mars["probes"][0]["layer"]
