"""Slow and numerous clients: cut off, refused past a cap, never holding a server.

A client sending its headers a byte at a time, or its body after complete headers, is cut
off; connections past ``--max-connections`` are answered 503 while those held are served.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kubeprober import http_server
from kubeprober.aggregator import process
from kubeprober.exporter import http
from kubeprober.exporter.agent import AgentSettings, run_agent
from kubeprober.tunnel.http.serve import IDLE_TIMEOUT
from tests.aggregator._fleet_harness import (
    FleetFile,
    Service,
    agent,
    aggregator,
    cluster_of,
    eventually,
    get_json,
    write_operator_tokens,
    write_probes,
)
from tests.exporter.report_server import serve_reports


def test_servers_close_idle_connections_within_minutes() -> None:
    assert IDLE_TIMEOUT <= 120


@asynccontextmanager
async def _agent(tmp: Path) -> AsyncIterator[str]:
    async with serve_reports() as server:
        yield server.url


@asynccontextmanager
async def _aggregator(tmp: Path) -> AsyncIterator[str]:
    fleet = FleetFile(tmp / "clusters.yaml")
    fleet.write()
    hub = await aggregator(fleet.path).start()
    try:
        yield hub.url
    finally:
        await hub.stop()


@pytest.mark.parametrize(
    ("module", "serve"), [(http, _agent), (process, _aggregator)], ids=["agent", "aggregator"]
)
async def test_half_sent_headers_are_cut_off(
    module: object,
    serve: Callable[[Path], AbstractAsyncContextManager[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(module, "IDLE_TIMEOUT", 0.5)
    async with serve(tmp_path) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            await writer.drain()
            async with asyncio.timeout(5):  # the server hangs up: EOF
                assert await reader.read() == b""
        finally:
            writer.close()
            await writer.wait_closed()


@asynccontextmanager
async def _agent_process(tmp: Path, **settings: Any) -> AsyncIterator[str]:
    """The agent as ``kubeprober agent`` runs it (file mode), on a free loopback port."""
    probes = write_probes(tmp / "probes.yaml", [])
    service = Service(
        "agent",
        run_agent,
        AgentSettings(probes=probes, host="127.0.0.1", port=0, **settings),
    )
    await service.start()
    try:
        yield service.url
    finally:
        await service.stop()


@asynccontextmanager
async def _aggregator_process(tmp: Path, **settings: Any) -> AsyncIterator[str]:
    fleet = FleetFile(tmp / "clusters.yaml")
    fleet.write()
    hub = await aggregator(fleet.path, **settings).start()
    try:
        yield hub.url
    finally:
        await hub.stop()


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def _close(*writers: asyncio.StreamWriter) -> None:
    for writer in writers:
        writer.close()
    for writer in writers:
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _healthz(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Ask /healthz on a kept-alive connection; return the status line."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    status = await reader.readline()
    while await reader.readline() not in (b"\r\n", b""):  # headers
        pass
    await reader.readexactly(3)  # "ok\n"
    return status


async def _trickle(writer: asyncio.StreamWriter) -> None:
    """Send a byte every 50 ms until the peer hangs up."""
    with contextlib.suppress(ConnectionError):
        while not writer.is_closing():
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05)  # the trickle itself, not a wait for something


async def _trickled_answer(url: str, head: str) -> bytes:
    """Send ``head`` announcing a 1,000-byte body, trickle it, return all the server says."""
    reader, writer = await _connect(url)
    trickle = asyncio.create_task(_trickle(writer))
    try:
        writer.write(f"{head}Content-Length: 1000\r\n\r\n{{".encode())
        async with asyncio.timeout(5):  # the server answers and hangs up: EOF
            return await reader.read()
    finally:
        trickle.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trickle
        await _close(writer)


async def test_a_report_trickled_after_its_headers_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_server, "BODY_TIMEOUT", 0.3)
    async with _agent_process(tmp_path) as url:
        head = "POST /report HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
        answer = await _trickled_answer(url, head)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"body not received within 0.3 s" in answer


async def test_a_report_arriving_in_pieces_within_the_deadline_is_read_whole(
    tmp_path: Path,
) -> None:
    body = b'{"checks": [{"name": "c", "status": "PASS"}]}'
    async with _agent_process(tmp_path) as url:
        reader, writer = await _connect(url)
        try:
            writer.write(
                b"POST /report HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            for i in range(len(body)):  # was read as its first piece alone: 400 not JSON
                writer.write(body[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0.005)  # the pieces' pace, not a wait for something
            async with asyncio.timeout(5):
                status = await reader.readline()
        finally:
            await _close(writer)
    assert status == b"HTTP/1.1 401 Unauthorized\r\n"  # read whole: only the token is wrong


async def test_a_kube_api_write_trickled_to_the_aggregator_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_server, "BODY_TIMEOUT", 0.3)
    fleet = FleetFile(tmp_path / "clusters.yaml")
    fleet.add("moon")
    fleet.write()
    operator = write_operator_tokens(tmp_path / "operators", "alice")["alice"]
    hub = await aggregator(fleet.path, operator_tokens_file=tmp_path / "operators").start()
    probes = write_probes(tmp_path / "probes.yaml", [])
    moon = await agent("moon", fleet=fleet, aggregator_url=hub.url, probes=probes).start()
    try:
        async with aiohttp.ClientSession() as client:
            await eventually(
                lambda: get_json(client, f"{hub.url}/status", token=operator),
                lambda doc: cluster_of(doc, "moon")["state"] == "Online",
                within=10,
                what="moon online",
            )
        head = (
            "POST /api/v1/clusters/moon/kube/api/v1/namespaces HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {operator}\r\nContent-Type: application/json\r\n"
        )
        answer = await _trickled_answer(hub.url, head)
    finally:
        await moon.stop()
        await hub.stop()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"body not received within 0.3 s" in answer


@pytest.mark.parametrize(
    "serve", [_agent_process, _aggregator_process], ids=["agent", "aggregator"]
)
async def test_connections_past_the_cap_are_refused_and_the_rest_served(
    serve: Callable[..., AbstractAsyncContextManager[str]], tmp_path: Path
) -> None:
    async with serve(tmp_path, max_connections=4) as url:
        held = [await _connect(url) for _ in range(4)]
        try:
            for reader, writer in held:  # each one served once, then idle: all four held
                assert await _healthz(reader, writer) == b"HTTP/1.1 200 OK\r\n"
            reader, writer = await _connect(url)
            try:
                async with asyncio.timeout(5):
                    refused = await reader.read()
            finally:
                await _close(writer)
            assert refused.startswith(b"HTTP/1.1 503 "), refused
            assert refused.endswith(b"too many connections\n")
            # Those it holds are still served.
            assert await _healthz(*held[0]) == b"HTTP/1.1 200 OK\r\n"
        finally:
            await _close(*(w for _, w in held))

        # Once they are gone, a new connection is served again (the server sees them go
        # a moment after the client does).
        async def fresh() -> bytes:
            reader, writer = await _connect(url)
            try:
                async with asyncio.timeout(5):
                    return await _healthz(reader, writer)
            except asyncio.IncompleteReadError:
                return b"refused"
            finally:
                await _close(writer)

        await eventually(fresh, lambda s: s == b"HTTP/1.1 200 OK\r\n", within=5, what="served")


def test_the_default_cap_is_half_the_raised_descriptor_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    code = "from kubeprober.http_server import default_max_connections as d; print(d())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=low_soft_limit,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert int(out) == (65536 if hard == resource.RLIM_INFINITY else max(64, hard // 2))
