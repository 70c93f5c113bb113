"""An in-process TCP proxy on loopback that can cut (RST), take down or blackhole its links."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from kubeprober.tasks import spawn, stop


class FaultProxy:
    """Forward 127.0.0.1:<port> to a target; inject faults on demand."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.blackholed = False
        self.is_down = False
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        await stop(self._tasks)
        if self._server is not None:
            await self._server.wait_closed()

    def blackhole(self) -> None:
        """Silently drop every byte from now on; sockets stay open."""
        self.blackholed = True

    def down(self) -> None:
        """Reset every connection, and each new one at once, until :meth:`heal`."""
        self.is_down = True
        self.cut()

    def heal(self) -> None:
        """Forward again; connections that lived through the blackhole are cut."""
        self.blackholed = False
        self.is_down = False
        self.cut()

    def cut(self) -> None:
        """Reset every open connection (RST, not FIN)."""
        for writer in list(self._writers):
            self._reset(writer)
        self._writers.clear()

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.is_down:
            self._reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst, name in ((reader, up_writer, "up"), (up_reader, writer, "down")):
            task = spawn(self._pipe(src, dst), f"faultproxy-{name}-{self.accepted}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if self.blackholed:
                    continue
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(dst)
            dst.transport.abort() if self.blackholed else dst.close()
