"""A hand-driven peer: the test writes raw bytes and parses the frames a Session sends back."""

from __future__ import annotations

import asyncio

from kubeprober.tunnel import MemoryTransport, Session, SessionSettings, memory_pair
from kubeprober.tunnel.frames import (
    HEADER_SIZE,
    Flag,
    FrameType,
    Header,
    decode_header,
    encode_header,
)


class RawPeer:
    """The other end of a Session, speaking bytes."""

    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport
        self._buf = b""

    async def send(self, data: bytes) -> None:
        await self.transport.send(data)

    async def frame(
        self, kind: FrameType, flags: Flag, stream_id: int, length: int, body: bytes = b""
    ) -> None:
        await self.send(encode_header(kind, flags, stream_id, length) + body)

    async def next_frame(self) -> tuple[Header, bytes]:
        """Return the next frame the session sent (within 2 s)."""
        async with asyncio.timeout(2.0):
            while len(self._buf) < HEADER_SIZE:
                await self._fill()
            header = decode_header(self._buf[:HEADER_SIZE])
            size = header.length if header.type is FrameType.DATA else 0
            while len(self._buf) < HEADER_SIZE + size:
                await self._fill()
            body = self._buf[HEADER_SIZE : HEADER_SIZE + size]
            self._buf = self._buf[HEADER_SIZE + size :]
            return header, body

    async def wait_for(self, kind: FrameType) -> tuple[Header, bytes]:
        """Skip frames until one of ``kind`` arrives (within 3 s)."""
        async with asyncio.timeout(3.0):
            while True:
                header, body = await self.next_frame()
                if header.type is kind:
                    return header, body

    async def _fill(self) -> None:
        chunk = await self.transport.receive()
        if not chunk:
            raise EOFError("session closed the transport")
        self._buf += chunk


def raw_pair(
    settings: SessionSettings, *, client: bool = True, **kwargs: object
) -> tuple[Session, RawPeer]:
    """Return a started Session and the raw peer on the other end."""
    a, b = memory_pair()
    session = Session(a, client, settings=settings, name="under-test", **kwargs)  # type: ignore[arg-type]
    session.start()
    return session, RawPeer(b)
