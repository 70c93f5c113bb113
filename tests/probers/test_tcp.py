"""The ``tcp`` prober against real sockets on 127.0.0.1: open, closed, blackholed, banners, TLS."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from kubeprober.probers import tcp
from kubeprober.probers.options import SpecError, parse_options
from kubeprober.probers.sdk import CheckFailed, Context
from kubeprober.probers.status import Status

PATH = "spec.checks[0].with"
BANNER = b"220 kubeprober test\r\n"


async def _serve_line_protocol(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Greet, answer PING with +PONG and close on QUIT: enough protocol to test send/expect."""
    try:
        writer.write(BANNER)
        while line := await reader.readline():
            if line.strip() == b"PING":
                writer.write(b"+PONG\r\n")
            elif line.strip() == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
        await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@dataclass
class Servers:
    """Ports of the loopback targets one test may probe."""

    plain: int
    tls: int
    closed: int
    blackhole: int
    ca_file: Path


@pytest.fixture(scope="module")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """Return a server context for 127.0.0.1 and the PEM file of the CA that signed it."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path_factory.mktemp("tcp-tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server_ctx, ca_file


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """Yield a port that is bound but not listening, so connects are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def blackhole_port() -> Iterator[int]:
    """Yield a port whose SYNs are dropped: a listener with a full accept queue that never accepts.

    Linux drops a SYN when the listener's accept queue is full, so a connect hangs as it would
    against a firewall that drops packets, without sending anything off this machine.
    """
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(16):
            filler = socket.socket()
            filler.setblocking(False)
            fillers.append(filler)
            filler.connect_ex(("127.0.0.1", port))
            time.sleep(0.1)
            try:
                filler.getpeername()
            except OSError:  # this one is stuck in SYN_SENT: the queue is full
                break
        else:
            pytest.fail("could not fill the accept queue: connects never start to hang")
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.fixture
async def servers(
    tls_material: tuple[ssl.SSLContext, Path], closed_port: int, blackhole_port: int
) -> AsyncIterator[Servers]:
    """Run the plain and TLS line servers for the length of one test."""
    server_ctx, ca_file = tls_material
    plain = await asyncio.start_server(_serve_line_protocol, "127.0.0.1", 0)
    tls = await asyncio.start_server(_serve_line_protocol, "127.0.0.1", 0, ssl=server_ctx)
    try:
        yield Servers(
            plain=plain.sockets[0].getsockname()[1],
            tls=tls.sockets[0].getsockname()[1],
            closed=closed_port,
            blackhole=blackhole_port,
            ca_file=ca_file,
        )
    finally:
        for server in (plain, tls):
            server.close()
            await server.wait_closed()
        await asyncio.sleep(0.05)  # let handlers see the client's close and close their side


def _ctx(timeout: float = 2.0) -> Context:
    return Context(namespace="default", probe="local-net", check="tcp", timeout=timeout)


# (case id, target, extra options, expected status, substrings of the message)
CASES: list[tuple[str, str, dict[str, Any], Status, tuple[str, ...]]] = [
    ("open", "plain", {}, Status.PASS, ("connected to 127.0.0.1:",)),
    ("closed", "closed", {}, Status.ERROR, ("connection refused by 127.0.0.1:",)),
    (
        "blackholed",
        "blackhole",
        {},
        Status.ERROR,
        ("timed out after 0.5s connecting to 127.0.0.1:",),
    ),
    ("banner", "plain", {"expect": "^220 "}, Status.PASS, ("answered", "220 kubeprober test")),
    ("send-expect", "plain", {"send": "PING\r\n", "expect": r"\+PONG"}, Status.PASS, ("+PONG",)),
    ("send-only", "plain", {"send": "PING\r\n"}, Status.PASS, ("sent 6 chars",)),
    (
        "banner-mismatch-timeout",
        "plain",
        {"expect": "^SSH-2.0"},
        Status.ERROR,
        ('timed out after 0.5s waiting for "^SSH-2.0"', 'got "220 kubeprober test'),
    ),
    (
        "closed-before-match",
        "plain",
        {"send": "QUIT\r\n", "expect": "PONG"},
        Status.ERROR,
        ("221 bye", 'and closed, expected "PONG"'),
    ),
    ("tls", "tls", {"tls": True, "expect": "^220"}, Status.PASS, ("220 kubeprober",)),
    (
        "tls-untrusted",
        "tls",
        {"tls": True, "caFile": None},
        Status.ERROR,
        ("TLS certificate of 127.0.0.1:", "unable to get local issuer certificate"),
    ),
    (
        "tls-wrong-name",
        "tls",
        {"tls": True, "serverName": "db.example"},
        Status.ERROR,
        ("rejected", "db.example"),
    ),
    ("tls-to-plain", "plain", {"tls": True}, Status.ERROR, ("TLS handshake with 127.0.0.1:",)),
    (
        "tls-hangs",
        "blackhole",
        {"tls": True},
        Status.ERROR,
        ("timed out after 0.5s connecting",),
    ),
]


@pytest.mark.parametrize(
    ("target", "extra", "status", "needles"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_probe(
    servers: Servers,
    target: str,
    extra: dict[str, Any],
    status: Status,
    needles: tuple[str, ...],
) -> None:
    options: dict[str, Any] = {"host": "127.0.0.1", "port": getattr(servers, target)}
    if extra.get("tls"):
        options["caFile"] = str(servers.ca_file)
    options.update(extra)
    spec = parse_options(tcp.Spec, {k: v for k, v in options.items() if v is not None}, PATH)
    ctx = _ctx(timeout=0.5)

    start = time.monotonic()
    outcome = await tcp.probe(spec, ctx)
    elapsed = time.monotonic() - start

    assert outcome.status == status, outcome.message
    for needle in needles:
        assert needle in outcome.message
    assert elapsed < 1.5, "the prober must bound its own I/O by ctx.timeout"
    if status == Status.PASS:
        assert "connect" in ctx.phases
        assert ("tls" in ctx.phases) == bool(extra.get("tls"))


async def test_unreadable_ca_file_is_unknown(tmp_path: Path) -> None:
    spec = tcp.Spec(host="127.0.0.1", port=1, tls=True, ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(CheckFailed) as failed:
        await tcp.probe(spec, _ctx())
    assert failed.value.status == Status.UNKNOWN
    assert str(failed.value) == f"caFile {tmp_path / 'missing.pem'}: no such file or directory"


GOOD_SPECS: list[tuple[dict[str, Any], tcp.Spec]] = [
    ({"host": "db", "port": 5432}, tcp.Spec(host="db", port=5432)),
    (
        {
            "host": "redis.example",
            "port": 6380,
            "send": "PING\r\n",
            "expect": "^\\+PONG",
            "tls": True,
            "caFile": "/etc/ca.pem",
            "serverName": "redis",
        },
        tcp.Spec(
            host="redis.example",
            port=6380,
            send="PING\r\n",
            expect="^\\+PONG",
            tls=True,
            ca_file="/etc/ca.pem",
            server_name="redis",
        ),
    ),
]


@pytest.mark.parametrize(("data", "want"), GOOD_SPECS)
def test_spec_accepts(data: dict[str, Any], want: tcp.Spec) -> None:
    assert parse_options(tcp.Spec, data, PATH) == want


BAD_SPECS: list[tuple[dict[str, Any], str]] = [
    ({"host": "h", "port": "http"}, f'{PATH}.port: expected integer 1-65535, got "http"'),
    ({"host": "h", "port": 0}, f"{PATH}.port: expected integer 1-65535, got 0"),
    ({"host": "h", "port": 65536}, f"{PATH}.port: expected integer 1-65535, got 65536"),
    ({"host": "h", "port": True}, f"{PATH}.port: expected integer 1-65535, got true"),
    ({"port": 80}, f"{PATH}.host: required"),
    ({"host": "h"}, f"{PATH}.port: required"),
    ({"host": " ", "port": 80}, f'{PATH}.host: expected a host name or IP address, got " "'),
    (
        {"host": "h", "port": 80, "expect": "("},
        f'{PATH}.expect: expected a regular expression, got "("',
    ),
    ({"host": "h", "port": 80, "tls": "yes"}, f'{PATH}.tls: expected true or false, got "yes"'),
    ({"host": "h", "port": 80, "send": 7}, f"{PATH}.send: expected a string, got 7"),
    (
        {"host": "h", "port": 80, "caFile": "/ca.pem"},
        f'{PATH}.caFile: "/ca.pem" given but tls is false',
    ),
    ({"host": "h", "port": 80, "hostname": "x"}, f"{PATH}.hostname: unknown option"),
]


@pytest.mark.parametrize(("data", "error"), BAD_SPECS, ids=[e for _, e in BAD_SPECS])
def test_spec_rejects(data: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_options(tcp.Spec, data, PATH)
    assert str(raised.value).startswith(error)
