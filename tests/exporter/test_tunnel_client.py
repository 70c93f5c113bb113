"""The agent's tunnel dialer: URL policy, proxies, backoff, tokens, and a toy app served."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import random
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from yarl import URL

from kubeprober.aggregator.tokens import new_token
from kubeprober.exporter.tunnel_client import (
    InsecureTunnel,
    TunnelClientSettings,
    proxy_for,
    reconnect_delay,
    tunnel_url,
)
from kubeprober.pacing import Backoff
from kubeprober.tasks import spawn, stop
from tests.tunnel.harness import Aggregator, make_agent, make_tls, toy_app, wait_until


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("wss://agg.example.com", "wss://agg.example.com/api/v1/tunnel"),
        ("wss://agg.example.com/", "wss://agg.example.com/api/v1/tunnel"),
        ("wss://agg.example.com/custom/path", "wss://agg.example.com/custom/path"),
        ("ws://127.0.0.1:8088", "ws://127.0.0.1:8088/api/v1/tunnel"),
        ("ws://[::1]:8088", "ws://[::1]:8088/api/v1/tunnel"),
        ("ws://localhost:8088", "ws://localhost:8088/api/v1/tunnel"),
    ],
)
def test_tunnel_url(given: str, expected: str) -> None:
    assert str(tunnel_url(given)) == expected


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ("ws://agg.example.com", InsecureTunnel),
        ("ws://10.0.0.1:8088", InsecureTunnel),
        ("https://agg.example.com", ValueError),
        ("wss://", ValueError),
    ],
)
def test_tunnel_url_refuses(given: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        tunnel_url(given)


def test_insecure_remote_ws_is_allowed_but_logged_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kubeprober.exporter.tunnel"):
        assert tunnel_url("ws://agg.example.com", insecure=True).scheme == "ws"
    assert any("INSECURE" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("env", "url", "proxy"),
    [
        ({"HTTPS_PROXY": "http://proxy:3128"}, "wss://agg.example.com/x", "http://proxy:3128"),
        ({"https_proxy": "http://proxy:3128"}, "wss://agg.example.com/x", "http://proxy:3128"),
        ({"HTTP_PROXY": "http://proxy:3128"}, "wss://agg.example.com/x", None),
        ({"HTTP_PROXY": "http://proxy:3128"}, "ws://127.0.0.1/x", "http://proxy:3128"),
        (
            {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "agg.example.com"},
            "wss://agg.example.com/x",
            None,
        ),
        (
            {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": ".example.com"},
            "wss://agg.example.com/x",
            None,
        ),
        ({}, "wss://agg.example.com/x", None),
    ],
)
def test_proxy_for(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, proxy: str | None
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert proxy_for(URL(url)) == (URL(proxy) if proxy else None)


def test_reconnect_backoff_is_full_jitter_doubling_from_1s_to_60s() -> None:
    backoff = Backoff(TunnelClientSettings().backoff, rng=random.Random(7))
    ceilings = []
    for _ in range(8):
        ceilings.append(backoff.ceiling())
        assert 0 <= backoff.next_delay() <= ceilings[-1]
    assert ceilings == [1, 2, 4, 8, 16, 32, 60, 60]


def test_reconnect_backoff_starts_over_after_a_stable_session() -> None:
    backoff = Backoff(TunnelClientSettings().backoff, rng=random.Random(7))
    for _ in range(4):
        reconnect_delay(backoff, lived=5.0, retry_after=0, stable_after=60.0)
    assert backoff.ceiling() == 16
    assert reconnect_delay(backoff, lived=61.0, retry_after=0, stable_after=60.0) <= 1
    assert backoff.ceiling() == 2  # (the delay just drawn used ceiling 1)


@pytest.mark.parametrize(("retry_after", "floor"), [(0, 0), (5, 5), (600, 60)])
def test_reconnect_honours_retry_after_up_to_the_cap(retry_after: float, floor: float) -> None:
    backoff = Backoff(TunnelClientSettings().backoff, rng=random.Random(3))
    delay = reconnect_delay(backoff, lived=0, retry_after=retry_after, stable_after=60.0)
    assert floor <= delay <= max(floor, 1.0)


def test_reconnect_jitter_spans_the_whole_range() -> None:
    delays = []
    for seed in range(500):
        backoff = Backoff(TunnelClientSettings().backoff, rng=random.Random(seed))
        backoff.failures = 3
        delays.append(backoff.next_delay())
    assert min(delays) < 0.5 and max(delays) > 7.5 and max(delays) <= 8


async def _connect_proxy(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[str]
) -> None:
    """Answer one HTTP CONNECT and splice bytes both ways."""
    request = await reader.readuntil(b"\r\n\r\n")
    line = request.split(b"\r\n", 1)[0].decode()
    seen.append(line)
    method, target, _ = line.split(" ")
    assert method == "CONNECT"
    host, port = target.rsplit(":", 1)
    up_reader, up_writer = await asyncio.open_connection(host, int(port))
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    tasks = [
        spawn(pipe(reader, up_writer), "proxy-up"),
        spawn(pipe(up_reader, writer), "proxy-down"),
    ]
    try:
        await asyncio.gather(*tasks)
    finally:
        await stop(tasks)


@pytest.fixture
async def aggregator(tmp_path: pathlib.Path) -> AsyncIterator[Aggregator]:
    agg = Aggregator(make_tls(tmp_path))
    await agg.start()
    try:
        yield agg
    finally:
        await agg.stop()


async def test_https_proxy_is_honoured(
    aggregator: Aggregator, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    handlers: set[asyncio.Task[None]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        await _connect_proxy(reader, writer, seen)

    proxy = await asyncio.start_server(accept, "127.0.0.1", 0)
    proxy_port = proxy.sockets[0].getsockname()[1]
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
    agent = make_agent(aggregator.port, aggregator.add_cluster("moon", tmp_path), aggregator.tls)
    await agent.start()
    try:
        await asyncio.wait_for(agent.wait_connected(), 5)
        assert seen == [f"CONNECT 127.0.0.1:{aggregator.port} HTTP/1.1"]
    finally:
        await agent.close()
        proxy.close()
        await stop(handlers)
        await proxy.wait_closed()


async def test_rejected_token_keeps_retrying_and_picks_up_a_new_token(
    aggregator: Aggregator, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = aggregator.add_cluster("moon", tmp_path)
    good = token_file.read_text()
    token_file.write_text(f"{new_token('moon')}\n")  # wrong secret
    agent = make_agent(aggregator.port, token_file, aggregator.tls)
    await agent.start()
    try:

        def refusals() -> int:
            return sum(r.getMessage().startswith("tunnel: refused") for r in caplog.records)

        await wait_until(lambda: refusals() >= 2, 5, "two refused handshakes")
        assert not agent.connected and agent.connects == 0
        assert aggregator.server is not None and aggregator.server.clusters == []
        token_file.write_text(good)  # rotated in place, as a mounted Secret would be
        await asyncio.wait_for(agent.wait_connected(), 5)
        assert aggregator.server.clusters == ["moon"]
    finally:
        await agent.close()


async def test_serves_the_toy_app_and_reports_connected(
    aggregator: Aggregator, tmp_path: pathlib.Path
) -> None:
    agent = make_agent(aggregator.port, aggregator.add_cluster("moon", tmp_path), aggregator.tls)
    assert not agent.connected
    assert not await agent.notify({"kind": "dropped"})  # not connected: dropped, not queued
    await agent.start()
    assert aggregator.server is not None
    try:
        await asyncio.wait_for(agent.wait_connected(), 5)
        assert agent.connected
        reply = await aggregator.server.client().get("moon", "/small")
        assert reply.json() == {"ok": True, "path": "/small"}
        assert await agent.notify({"kind": "results"})
        await wait_until(lambda: aggregator.events, 2, "event")
    finally:
        await agent.close()
    assert not agent.connected
    await wait_until(lambda: aggregator.server.clusters == [], 2, "unregistered")  # type: ignore[union-attr]


async def test_an_app_already_running_locally_is_shared_not_restarted(
    aggregator: Aggregator, tmp_path: pathlib.Path
) -> None:
    """The agent serves its app on :8080 too; the tunnel must reuse it, not start it again."""
    starts: list[str] = []
    app = toy_app()

    async def on_startup(_: web.Application) -> None:
        starts.append("start")

    app.on_startup.append(on_startup)
    local = web.AppRunner(app)
    await local.setup()  # freezes the app and runs its startup once
    assert local.server is not None
    agent = make_agent(
        aggregator.port, aggregator.add_cluster("moon", tmp_path), aggregator.tls, app=local.server
    )
    await agent.start()
    assert aggregator.server is not None
    try:
        await asyncio.wait_for(agent.wait_connected(), 5)
        assert (await aggregator.server.client().get("moon", "/small")).status == 200
    finally:
        await agent.close()
        await local.cleanup()
    assert starts == ["start"]
