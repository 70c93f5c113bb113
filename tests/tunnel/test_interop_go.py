"""Interoperability with hashicorp/yamux over a gorilla WebSocket, in both roles.

The Go peer (gopeer/main.go) is built from Debian's packaged sources with modules and the proxy
off, so nothing is downloaded. It writes yamux headers and bodies as separate WebSocket
messages, which is exactly what our byte-stream reader must cope with.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from kubeprober.tunnel import SUBPROTOCOL, OpenCode, Session, TargetRefused, WebSocketTransport
from tests.binaries import binary
from tests.tunnel.conftest import FAST
from tests.tunnel.test_session import echo, roundtrip

GOPEER = pathlib.Path(__file__).parent / "gopeer" / "main.go"
GOCODE = pathlib.Path("/usr/share/gocode/src")
GO_SOURCES = {
    "golang-github-hashicorp-yamux-dev": "github.com/hashicorp/yamux",
    "golang-github-gorilla-websocket-dev": "github.com/gorilla/websocket",
}
# The Go side reads our refusal's code and text (answer then FIN: a reset would lose them).
EXPECTED = [
    "GO echo-1048579 ok",
    "GO refused code=1 text=\"no target named 'nope'\"",
    "GO ping ok",
    "GO done",
]


@pytest.fixture(scope="module")
def gopeer(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Build the Go peer offline from Debian's packaged yamux and gorilla/websocket."""
    go = binary("go")
    for package, source in GO_SOURCES.items():
        if not (GOCODE / source).is_dir():
            msg = f"Go sources {source} missing (Debian package {package}; run `make deps`)"
            if os.environ.get("CI") == "true":
                pytest.fail(msg)
            pytest.skip(msg)
    out = tmp_path_factory.mktemp("gopeer")
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{out / 'gopath'}:{GOCODE.parent}",
        "GOPROXY": "off",
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
    }
    if not any(k in os.environ for k in ("GOCACHE", "XDG_CACHE_HOME", "HOME")):
        env["GOCACHE"] = str(out / "cache")  # Go needs a build cache; reuse the user's if any
    subprocess.run(
        [go, "build", "-o", str(out / "peer"), str(GOPEER)],
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
    )
    return out / "peer"


async def _exercise(session: Session) -> None:
    """Open streams on the Go side: echo must work, an unknown target must be refused with the
    code and text the Go receiver wrote before closing its side."""
    stream = await session.open("echo")
    payload = os.urandom(3 * 256 * 1024 + 5)
    assert await roundtrip(stream, payload) == payload
    await stream.close()
    assert await stream.read() == b""
    with pytest.raises(TargetRefused) as info:
        await session.open("nope")
    assert (info.value.code, info.value.text) == (
        OpenCode.UNKNOWN_TARGET,
        "go peer has no target nope",
    )
    assert 0 <= await session.ping() < 1


async def _go_lines(proc: asyncio.subprocess.Process, until: str) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(20):
        while not lines or lines[-1] != until:
            raw = await proc.stdout.readline()
            if not raw:
                break
            lines.append(raw.decode().strip())
    return lines


@pytest.fixture
async def spawn_peer(
    gopeer: pathlib.Path,
) -> AsyncIterator[Callable[..., Awaitable[asyncio.subprocess.Process]]]:
    procs: list[asyncio.subprocess.Process] = []

    async def start(*args: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            str(gopeer), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def test_go_dials_python(
    spawn_peer: Callable[..., Awaitable[asyncio.subprocess.Process]],
) -> None:
    accepted: asyncio.Queue[Session] = asyncio.Queue()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,))
        await ws.prepare(request)
        session = Session(WebSocketTransport(ws), False, targets={"echo": echo}, settings=FAST)
        session.start()
        accepted.put_nowait(session)
        await session.wait_closed()
        return ws

    app = web.Application()
    app.router.add_get("/tunnel", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        proc = await spawn_peer("-dial", f"ws://127.0.0.1:{port}/tunnel")
        session = await asyncio.wait_for(accepted.get(), 10)
        await _exercise(session)
        lines = await _go_lines(proc, "GO done")
        assert lines == EXPECTED
        await session.close()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        await runner.cleanup()


async def test_python_dials_go(
    spawn_peer: Callable[..., Awaitable[asyncio.subprocess.Process]],
) -> None:
    proc = await spawn_peer()
    assert proc.stdout is not None
    first = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().split()
    assert first[0] == "LISTEN"
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"http://127.0.0.1:{first[1]}/", protocols=(SUBPROTOCOL,))
        assert ws.protocol == SUBPROTOCOL
        session = Session(WebSocketTransport(ws), True, targets={"echo": echo}, settings=FAST)
        session.start()
        try:
            await _exercise(session)
            assert await _go_lines(proc, "GO done") == EXPECTED
        finally:
            await session.close()
    assert await asyncio.wait_for(proc.wait(), 10) == 0
