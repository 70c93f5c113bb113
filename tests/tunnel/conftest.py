"""Fixtures for tunnel tests: session pairs over several transports, and a task-leak check."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping

import aiohttp
import pytest
from aiohttp import web

from kubeprober.tunnel import (
    SUBPROTOCOL,
    Session,
    SessionSettings,
    TargetHandler,
    WebSocketTransport,
    memory_pair,
)

FAST = SessionSettings(
    ping_interval=0.1, dead_peer_timeout=1.0, open_timeout=1.0, write_timeout=2.0
)

Pair = tuple[Session, Session]
PairFactory = Callable[..., Awaitable[Pair]]


class _AsyncioComplaints(logging.Handler):
    """Collect what asyncio logs about abandoned tasks and unretrieved exceptions."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(autouse=True)
def no_abandoned_tasks() -> Iterator[None]:
    """Fail on "Task was destroyed but it is pending" and friends (tests/conftest.py checks
    that nothing is left running; this checks that nothing was dropped on the floor)."""
    # Collect what earlier tests left behind first, so their garbage is not blamed on this one.
    gc.collect()
    complaints = _AsyncioComplaints()
    logger = logging.getLogger("asyncio")
    logger.addHandler(complaints)
    try:
        yield
        gc.collect()
    finally:
        logger.removeHandler(complaints)
    assert not complaints.messages, complaints.messages


async def _memory(
    client_targets: Mapping[str, TargetHandler],
    server_targets: Mapping[str, TargetHandler],
    settings: SessionSettings,
) -> tuple[Pair, Callable[[], Awaitable[None]]]:
    a, b = memory_pair()
    client = Session(a, True, targets=client_targets, settings=settings, name="client")
    server = Session(b, False, targets=server_targets, settings=settings, name="server")

    async def cleanup() -> None:
        return None

    return (client, server), cleanup


async def _websocket(
    client_targets: Mapping[str, TargetHandler],
    server_targets: Mapping[str, TargetHandler],
    settings: SessionSettings,
) -> tuple[Pair, Callable[[], Awaitable[None]]]:
    accepted: asyncio.Future[Session] = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), autoping=True)
        await ws.prepare(request)
        session = Session(
            WebSocketTransport(ws), False, targets=server_targets, settings=settings, name="server"
        )
        accepted.set_result(session)
        await session.wait_closed()
        return ws

    app = web.Application()
    app.router.add_get("/tunnel", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(f"http://127.0.0.1:{port}/tunnel", protocols=(SUBPROTOCOL,))
    client = Session(
        WebSocketTransport(ws), True, targets=client_targets, settings=settings, name="client"
    )
    server = await accepted

    async def cleanup() -> None:
        await http.close()
        await runner.cleanup()

    return (client, server), cleanup


TRANSPORTS = {"memory": _memory, "websocket": _websocket}


@pytest.fixture(params=sorted(TRANSPORTS))
async def make_pair(request: pytest.FixtureRequest) -> AsyncIterator[PairFactory]:
    """Return a factory of started (client, server) session pairs over each transport."""
    made: list[tuple[Pair, Callable[[], Awaitable[None]]]] = []

    async def factory(
        *,
        client_targets: Mapping[str, TargetHandler] | None = None,
        server_targets: Mapping[str, TargetHandler] | None = None,
        settings: SessionSettings = FAST,
    ) -> Pair:
        pair, cleanup = await TRANSPORTS[request.param](
            client_targets or {}, server_targets or {}, settings
        )
        for session in pair:
            session.start()
        made.append((pair, cleanup))
        return pair

    yield factory
    for (client, server), cleanup in made:
        await client.close()
        await server.close()
        await cleanup()
