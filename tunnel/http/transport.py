"""An asyncio Transport over a tunnel stream, so aiohttp protocols run on streams unchanged.

Exists because aiohttp's HTTP server (RequestHandler) and client (ResponseHandler) are asyncio
Protocols: giving them this transport lets HTTP/1.1 flow over `agent` streams in-process with
aiohttp's own parsers and keep-alive. Flow control is honest both ways: pause_reading stops
reading the stream (so the peer runs out of credit), and writes beyond the high-water mark pause
the protocol. It must not parse HTTP.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from kubeprober.tasks import spawn, stop
from kubeprober.tunnel.errors import TunnelError
from kubeprober.tunnel.stream import Stream

# bytes buffered by write() before the protocol is paused; one window is plenty
HIGH_WATER = 256 * 1024


class StreamTransport(asyncio.Transport):
    """Drive an asyncio Protocol from a Stream with one read pump and one write pump."""

    def __init__(
        self,
        stream: Stream,
        protocol: asyncio.Protocol,
        *,
        extra: dict[str, Any] | None = None,
        linger: float = 5.0,
        on_lost: Callable[[StreamTransport], None] | None = None,
    ) -> None:
        super().__init__(extra)
        self._on_lost = on_lost  # told once, when the connection is lost
        self._stream = stream
        self._protocol = protocol
        self._linger = linger  # seconds to wait for the peer's FIN after ours, then RST
        self._out: deque[bytes] = deque()  # owned by write() (producer) and the write pump
        self._out_size = 0
        self._out_ready = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self._write_paused = False
        self._eof_requested = False
        self._closing = False
        self._lost = False
        self._done = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Connect the protocol and start both pumps."""
        self._protocol.connection_made(self)
        name = f"{self._stream.target}:{self._stream.id}"
        self._tasks = [
            spawn(self._read_pump(), f"tunnel-http-read:{name}"),
            spawn(self._write_pump(), f"tunnel-http-write:{name}"),
        ]

    async def run(self) -> None:
        """Start, wait until the connection is lost, then stop the pumps."""
        self.start()
        try:
            await self._done.wait()
        finally:
            self.abort()
            await self.stop()

    async def stop(self) -> None:
        """Cancel and await both pumps."""
        await stop(self._tasks)

    def _lose(self, exc: Exception | None) -> None:
        """Tear down once: reset the stream if still open, tell the protocol, stop pumps."""
        if self._lost:
            return
        if isinstance(exc, TunnelError):
            # aiohttp maps OSErrors to its own client errors (ClientOSError, ...); a bare
            # TunnelError would escape callers that rightly catch only aiohttp.ClientError.
            lost = ConnectionResetError(f"tunnel stream lost: {exc}")
            lost.__cause__ = exc
            exc = lost
        self._lost = True
        self._closing = True
        self._stream.reset()
        self._reading.set()
        self._out_ready.set()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._done.set()
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, exc)
        if self._on_lost is not None:
            self._on_lost(self)

    # -- pumps ----------------------------------------------------------------------------

    async def _read_pump(self) -> None:
        """Feed stream bytes to the protocol, pausing when it asks."""
        try:
            while True:
                await self._reading.wait()
                data = await self._stream.read()
                if self._closing:
                    if not data:
                        return
                    continue  # closed locally: drain until the peer's FIN
                if not data:
                    if not self._protocol.eof_received():
                        self.close()
                    return
                self._protocol.data_received(data)
        except TunnelError as exc:
            self._lose(exc)

    async def _write_pump(self) -> None:
        """Send buffered writes in order, then FIN and linger when closing."""
        try:
            while True:
                while not self._out and not self._closing and not self._eof_requested:
                    self._out_ready.clear()
                    await self._out_ready.wait()
                if self._out:
                    data = b"".join(self._out)
                    self._out.clear()
                    self._out_size = 0
                    await self._stream.write(data)
                    if self._write_paused:
                        self._write_paused = False
                        self._protocol.resume_writing()
                    continue
                await self._stream.close()
                # After write_eof nothing more may be written; wait for close() or loss.
                while not self._closing:
                    self._out_ready.clear()
                    await self._out_ready.wait()
                break
        except TunnelError as exc:
            self._lose(exc)
            return
        try:
            async with asyncio.timeout(self._linger):
                await self._stream.wait_closed()
        except TimeoutError:
            pass
        self._lose(None)

    # -- asyncio.Transport ----------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data`` for the write pump; pause the protocol past the high-water mark."""
        if self._closing or self._eof_requested or not data:
            return
        if not self._out and self._stream.try_write_nowait(bytes(data)):
            return  # the common small write: no hop through the write pump
        self._out.append(bytes(data))
        self._out_size += len(data)
        self._out_ready.set()
        if not self._write_paused and self._out_size > HIGH_WATER:
            self._write_paused = True
            self._protocol.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        """Write each chunk."""
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        """Return True: a FIN half-closes the stream."""
        return True

    def write_eof(self) -> None:
        """Send FIN once the buffer is flushed."""
        self._eof_requested = True
        self._out_ready.set()

    def get_write_buffer_size(self) -> int:
        """Return bytes waiting for the write pump."""
        return self._out_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """Return (low, high) water marks."""
        return (0, HIGH_WATER)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Ignore: the stream window already bounds what is in flight."""

    def pause_reading(self) -> None:
        """Stop reading the stream; the peer soon runs out of credit."""
        self._reading.clear()

    def resume_reading(self) -> None:
        """Read the stream again."""
        self._reading.set()

    def is_reading(self) -> bool:
        """Return True unless reading is paused."""
        return self._reading.is_set()

    def is_closing(self) -> bool:
        """Return True once close() or abort() was called."""
        return self._closing

    def close(self) -> None:
        """Flush, FIN, wait briefly for the peer's FIN, then report the connection lost."""
        if self._closing:
            return
        self._closing = True
        self._reading.set()
        self._out_ready.set()
        if not self._tasks:
            self._lose(None)

    def abort(self) -> None:
        """Reset the stream now and drop buffered writes."""
        self._out.clear()
        self._out_size = 0
        self._lose(None)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Replace the protocol (aiohttp does this on WebSocket upgrades)."""
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        """Return the protocol."""
        return self._protocol

    @property
    def lost(self) -> bool:
        """Return True once the connection was reported lost."""
        return self._lost
