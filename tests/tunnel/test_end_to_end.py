"""Agent <-> aggregator over TLS on loopback, with faults injected by an in-process proxy."""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from kubeprober.exporter.tunnel_client import TunnelClient
from kubeprober.tunnel import OpenCode, SessionClosed, TargetRefused, TunnelError
from kubeprober.tunnel.frames import INITIAL_WINDOW
from kubeprober.tunnel.http.client import AgentClient
from tests.tunnel.faultproxy import FaultProxy
from tests.tunnel.harness import (
    HANGING,
    SESSION,
    Aggregator,
    Tls,
    make_agent,
    make_tls,
    toy_app,
    wait_until,
)


@dataclass
class Rig:
    tls: Tls
    aggregator: Aggregator
    proxy: FaultProxy
    agent: TunnelClient
    agents: AgentClient
    app: web.Application  # the agent's


@pytest.fixture
async def rig(tmp_path: pathlib.Path) -> AsyncIterator[Rig]:
    tls = make_tls(tmp_path)
    aggregator = Aggregator(tls)
    await aggregator.start()
    token_file = aggregator.add_cluster("moon", tmp_path)
    proxy = FaultProxy(aggregator.port)
    await proxy.start()
    app = toy_app()
    agent = make_agent(proxy.port, token_file, tls, app=app)
    await agent.start()
    assert aggregator.server is not None
    agents = aggregator.server.client()
    try:
        await asyncio.wait_for(agent.wait_connected(), 5)
        yield Rig(tls, aggregator, proxy, agent, agents, app)
    finally:
        agents.close()
        await agent.close()
        await aggregator.stop()
        await proxy.close()


async def test_requests_reuse_one_stream_and_events_arrive(rig: Rig) -> None:
    for _ in range(5):
        reply = await rig.agents.get("moon", "/small")
        assert reply.status == 200
        assert reply.json() == {"ok": True, "path": "/small"}
    assert rig.aggregator.server is not None
    session = rig.aggregator.server.session("moon")
    assert session is not None and session.num_streams == 1  # keep-alive reuse
    assert await rig.agent.notify({"kind": "results", "probe": "default/dns"})
    await wait_until(lambda: rig.aggregator.events, 2, "the change notice")
    assert rig.aggregator.events == [("moon", {"kind": "results", "probe": "default/dns"})]


async def test_unknown_cluster_fails_fast(rig: Rig) -> None:
    with pytest.raises(SessionClosed, match="not connected"):
        await rig.agents.get("mars", "/small")


@pytest.mark.parametrize("fault", ["rst", "blackhole"])
async def test_cut_connection_fails_the_request_then_agent_returns(rig: Rig, fault: str) -> None:
    assert (await rig.agents.get("moon", "/small")).status == 200
    baseline = sorted(t.get_name() for t in asyncio.all_tasks())
    baseline_tasks = len(asyncio.all_tasks())
    pending = asyncio.create_task(rig.agents.get("moon", "/hang"))
    await asyncio.wait_for(rig.app[HANGING].wait(), 2)  # the request is with the agent
    started = time.monotonic()
    if fault == "rst":
        rig.proxy.cut()
    else:
        rig.proxy.blackhole()
    with pytest.raises((TunnelError, asyncio.TimeoutError)):
        async with asyncio.timeout(SESSION.dead_peer_timeout + 2):
            await pending  # never a success, not even a partial body
    assert time.monotonic() - started < SESSION.dead_peer_timeout + 1
    if fault == "blackhole":
        # The agent hears nothing either: it must give up on its own, and keep failing to
        # reconnect (TLS never completes) until the path heals.
        await wait_until(lambda: not rig.agent.connected, SESSION.dead_peer_timeout + 1, "agent")
        # Two more dials reach the proxy: the first has failed (or the second would not come).
        dials = rig.proxy.accepted
        await wait_until(lambda: rig.proxy.accepted >= dials + 2, 10, "two more dials")
        assert rig.agent.connects == 1
        rig.proxy.heal()
    await wait_until(lambda: rig.agent.connects == 2 and rig.agent.connected, 5, "reconnect")
    assert (await rig.agents.get("moon", "/small")).status == 200
    assert rig.aggregator.server is not None
    assert rig.aggregator.server.clusters == ["moon"]
    try:
        await wait_until(
            lambda: len(asyncio.all_tasks()) <= baseline_tasks, 5, "task count back to baseline"
        )
    except AssertionError:
        now = sorted(t.get_name() for t in asyncio.all_tasks())
        raise AssertionError(f"before {baseline} now {now}") from None


async def test_slow_reader_stays_bounded_and_does_not_block_others(rig: Rig) -> None:
    assert rig.aggregator.server is not None
    session = rig.aggregator.server.session("moon")
    assert session is not None
    agent_session = rig.agent.session
    assert agent_session is not None
    # The big answer is read slowly off a raw stream; the small requests take other streams.
    big = await session.open("agent")
    await big.write(b"GET /big?size=%d HTTP/1.1\r\nHost: moon\r\n\r\n" % (8 * 1024 * 1024))
    peak = 0
    got = 0
    for _ in range(10):
        got += len(await big.read(32 * 1024))
        # The agent answers the ping after the data it queued before it: all of it is here.
        await session.ping()
        peak = max(peak, session.budget.used)
        # The big stream is not read meanwhile: with head-of-line blocking this would hang.
        async with asyncio.timeout(2):
            assert (await rig.agents.get("moon", "/small")).status == 200
    # The agent stopped at the window: nothing piles up on either side.
    assert peak <= SESSION.stream_window + INITIAL_WINDOW
    assert agent_session._out_bytes <= SESSION.send_buffer
    assert got < 1024 * 1024
    big.reset()


async def test_refused_target_resets_only_that_stream(rig: Rig) -> None:
    assert rig.aggregator.server is not None
    session = rig.aggregator.server.session("moon")
    assert session is not None
    with pytest.raises(TargetRefused) as info:
        await session.open("shell")
    assert info.value.code == OpenCode.UNKNOWN_TARGET
    assert (await rig.agents.get("moon", "/small")).status == 200
    assert rig.agent.connects == 1


async def test_aggregator_restart_brings_every_agent_back(tmp_path: pathlib.Path) -> None:
    tls = make_tls(tmp_path)
    aggregator = Aggregator(tls)
    await aggregator.start()
    names = [f"c{i}" for i in range(5)]
    agents = [make_agent(aggregator.port, aggregator.add_cluster(n, tmp_path), tls) for n in names]
    for agent in agents:
        await agent.start()
    try:
        await wait_until(
            lambda: aggregator.server is not None and aggregator.server.clusters == names,
            5,
            "all agents",
        )
        await aggregator.stop()
        await wait_until(lambda: not any(a.connected for a in agents), 5, "agents to notice")
        started = time.monotonic()
        await aggregator.start()  # same port, same tokens
        await wait_until(
            lambda: aggregator.server is not None and aggregator.server.clusters == names,
            5,
            "agents back",
        )
        # Back within the backoff cap (plus connect time), as the issue asks.
        assert time.monotonic() - started < 0.5 + 1.0
    finally:
        for agent in agents:
            await agent.close()
        await aggregator.stop()
