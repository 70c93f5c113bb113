"""A request that does not parse costs one log line on either service, never a traceback."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp.http_exceptions import BadStatusLine

from kubeprober.exporter.agent import AgentSettings, run_agent
from kubeprober.http_log import SERVER_LOG
from tests.aggregator._fleet_harness import FleetFile, Service, aggregator, exec_probe, write_probes

MALFORMED = {
    "content-length": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "nul-in-path": b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
}


async def send(url: str, payload: bytes) -> bytes:
    """Write ``payload`` to the server behind ``url`` and read its answer until it closes."""
    where = urlsplit(url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    writer.write(payload)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    return answer


@pytest.mark.parametrize("service", ["agent", "aggregator"])
async def test_a_malformed_request_is_one_info_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, service: str
) -> None:
    if service == "agent":
        probes = write_probes(tmp_path / "probes.yaml", [exec_probe("disk", "true")])
        settings = AgentSettings(probes=probes, host="127.0.0.1", port=0)
        server = Service("agent", run_agent, settings)
    else:
        fleet = FleetFile(tmp_path / "clusters.yaml")
        fleet.write()
        server = aggregator(fleet.path)
    await server.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="aiohttp"):
            for payload in MALFORMED.values():
                assert (await send(server.url, payload)).startswith(b"HTTP/1.0 400 ")
    finally:
        await server.stop()
    said = [
        (r.levelno, r.getMessage(), r.exc_info)
        for r in caplog.records
        if r.name == "aiohttp.server"
    ]
    assert said == [
        (logging.INFO, "bad request from 127.0.0.1: 400 Invalid character in Content-Length", None),
        (logging.INFO, "bad request from 127.0.0.1: 400 Invalid char in url path", None),
    ]


def test_a_run_token_in_a_refused_request_line_is_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # aiohttp's pure-Python parser quotes the request line it refuses; the C one does not.
    line = "POST /report/s3cr3t-t0ken HTTP/1.1 extra"
    with caplog.at_level(logging.INFO, logger="aiohttp.server"):
        SERVER_LOG.exception("Error handling request", "127.0.0.1", exc_info=BadStatusLine(line))
    assert [r.getMessage() for r in caplog.records] == [
        "bad request from 127.0.0.1: 400 Bad status line 'POST /report/REDACTED HTTP/1.1 extra'"
    ]
