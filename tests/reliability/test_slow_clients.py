"""A client that sends its request a byte at a time is cut off, not kept for an hour."""

from __future__ import annotations

import asyncio

import pytest

from kubeprober.exporter import http
from tests.exporter.report_server import serve_reports


def test_the_agent_closes_idle_connections_within_minutes() -> None:
    assert http.IDLE_TIMEOUT <= 120


async def test_half_sent_headers_are_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "IDLE_TIMEOUT", 0.5)
    async with serve_reports() as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            await writer.drain()
            async with asyncio.timeout(5):  # the server hangs up: EOF
                assert await reader.read() == b""
        finally:
            writer.close()
            await writer.wait_closed()
