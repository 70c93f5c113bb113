"""A client that sends its request a byte at a time is cut off, not kept for an hour."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from kubeprober.aggregator import process
from kubeprober.exporter import http
from kubeprober.tunnel.http.serve import IDLE_TIMEOUT
from tests.aggregator._fleet_harness import FleetFile, aggregator
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
