"""Byte-stream transports a session runs over: an aiohttp WebSocket, or an in-memory pipe.

Exists so the session sees one tiny interface (receive a chunk, send a chunk, close) and never
cares about WebSocket message boundaries: yamux frames may span or share messages. It must not
parse frames or apply liveness (aiohttp's heartbeat stays off; the session pings).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import aiohttp
from aiohttp import web

from kubeprober.tunnel.errors import ProtocolError, SessionClosed
from kubeprober.tunnel.settings import MAX_STREAM_WINDOW

# Largest WebSocket message we accept: a session never sends more than max_message plus one
# frame, and a Go yamux peer sends at most one window (MAX_STREAM_WINDOW) per message.
MAX_WS_MESSAGE = MAX_STREAM_WINDOW + 64 * 1024


class Transport(Protocol):
    """A reliable, ordered byte pipe."""

    async def receive(self) -> bytes:
        """Return the next chunk; b"" once the peer is gone."""

    async def send(self, data: bytes) -> None:
        """Send one chunk."""

    async def close(self) -> None:
        """Close; must not hang."""


class WebSocketTransport:
    """Carry the byte stream in binary WebSocket messages."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse | web.WebSocketResponse) -> None:
        self._ws = ws

    async def receive(self) -> bytes:
        """Return the next binary message's bytes; b"" on close or error."""
        while True:
            msg = await self._ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                data: bytes = msg.data
                if data:
                    return data
                continue
            if msg.type is aiohttp.WSMsgType.TEXT:
                raise ProtocolError("text message on a kubeprober.v1 tunnel")
            return b""

    async def send(self, data: bytes) -> None:
        """Send ``data`` as one binary message."""
        if self._ws.closed:
            raise SessionClosed("websocket closed")
        try:
            await self._ws.send_bytes(data)
        except (ConnectionError, RuntimeError) as exc:
            raise SessionClosed(f"websocket send failed: {exc}") from exc

    async def close(self) -> None:
        """Close the WebSocket with a normal close code."""
        await self._ws.close()


class MemoryTransport:
    """One end of an in-process pipe; for tests and benchmarks."""

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.peer: MemoryTransport | None = None
        self.closed = False

    async def receive(self) -> bytes:
        """Return the next chunk the peer sent; b"" once either side closed."""
        if self.closed:
            return b""
        return await self._inbox.get()

    async def send(self, data: bytes) -> None:
        """Deliver ``data`` to the peer."""
        if self.closed or self.peer is None or self.peer.closed:
            raise SessionClosed("pipe closed")
        self.peer._inbox.put_nowait(bytes(data))

    def feed(self, data: bytes) -> None:
        """Inject bytes as if the peer had sent them."""
        self._inbox.put_nowait(data)

    async def close(self) -> None:
        """Close both directions; the peer sees end of stream."""
        self.closed = True
        self._inbox.put_nowait(b"")
        if self.peer is not None and not self.peer.closed:
            self.peer._inbox.put_nowait(b"")


def memory_pair() -> tuple[MemoryTransport, MemoryTransport]:
    """Return two connected in-memory transports."""
    a, b = MemoryTransport(), MemoryTransport()
    a.peer, b.peer = b, a
    return a, b
