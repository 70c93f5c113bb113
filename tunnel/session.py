"""A yamux session: one reader loop, one writer loop, one keepalive loop, a table of streams.

Exists to multiplex streams over one transport with yamux's rules; each new stream then goes
through the OPEN handshake (tunnel/targets.py). The reader never waits on a consumer (it only
buffers within windows and budgets), so one slow stream cannot stall others.
The first fatal error wins and is recorded once; protocol violations send GoAway. Must not know
about HTTP, WebSockets or authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

from kubeprober.tasks import spawn, stop
from kubeprober.tunnel import targets as handshake
from kubeprober.tunnel.budget import PROCESS_BUDGET, ByteBudget
from kubeprober.tunnel.errors import (
    PeerTimeout,
    ProtocolError,
    SessionClosed,
    StreamReset,
    TunnelError,
)
from kubeprober.tunnel.frames import HEADER_SIZE, Flag, FrameType, GoAwayCode, Header, decode_header
from kubeprober.tunnel.frames import encode_header as _frame
from kubeprober.tunnel.settings import SessionSettings
from kubeprober.tunnel.stream import Stream, StreamState
from kubeprober.tunnel.targets import TargetHandler
from kubeprober.tunnel.transport import Transport

log = logging.getLogger("kubeprober.tunnel")

_MAX_ID = 0xFFFFFFFF


class Session:
    """Multiplex streams over one transport; either end may open streams."""

    def __init__(
        self,
        transport: Transport,
        client: bool,
        *,
        targets: Mapping[str, TargetHandler] | None = None,
        settings: SessionSettings | None = None,
        budget: ByteBudget | None = None,
        name: str = "tunnel",
    ) -> None:
        self.settings = settings or SessionSettings()
        self.budget = ByteBudget(self.settings.session_buffer, parent=budget or PROCESS_BUDGET)
        self.name = name
        self._transport = transport
        self._client = client
        self._targets = dict(targets or {})
        self._next_id = 1 if client else 2
        self._streams: dict[int, Stream] = {}
        self._handlers: dict[FrameType, Callable[[Header], Awaitable[None]]] = {
            FrameType.DATA: self._on_stream_frame,
            FrameType.WINDOW_UPDATE: self._on_stream_frame,
            FrameType.PING: self._on_ping,
            FrameType.GO_AWAY: self._on_go_away,
        }
        # Inbound bytes not yet parsed; owned by the reader loop.
        self._in_buf = b""
        self._in_pos = 0
        self._last_rx = 0.0
        # Outbound frames; filled by anyone, drained only by the writer loop.
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._out_ready = asyncio.Event()
        self._out_space = asyncio.Event()
        self._error: TunnelError | None = None
        self._stream_error: SessionClosed | None = None
        self._remote_goaway = False
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._ping_id = 0
        self._done = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._reader_started = False
        self._writer: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._serving: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<Session {self.name} streams={len(self._streams)} error={self._error!r}>"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the reader, writer and keepalive loops."""
        self._last_rx = asyncio.get_running_loop().time()
        self._reader = spawn(self._run(), f"tunnel-read:{self.name}")
        self._writer = spawn(self._write_loop(), f"tunnel-write:{self.name}")
        self._writer.add_done_callback(lambda _: self._out_space.set())
        self._keeper = spawn(self._keepalive(), f"tunnel-keepalive:{self.name}")

    async def __aenter__(self) -> Session:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Send GoAway, stop every task, close the transport; safe to call twice."""
        self._fail(SessionClosed(f"session {self.name} closed locally"), GoAwayCode.NORMAL)
        if self._reader is None:
            await self._transport.close()
            self._done.set()
        await self._done.wait()

    async def wait_closed(self) -> None:
        """Wait until the session has fully shut down."""
        await self._done.wait()

    @property
    def closed(self) -> bool:
        """Return True once the session failed or is closing."""
        return self._error is not None

    @property
    def error(self) -> TunnelError | None:
        """Return the first fatal error, or None while the session is up."""
        return self._error

    @property
    def num_streams(self) -> int:
        """Return how many streams are open."""
        return len(self._streams)

    def closed_error(self) -> TunnelError | None:
        """Return the error streams should raise once the session is gone."""
        return self._stream_error

    def _fail(self, exc: TunnelError, goaway: GoAwayCode | None = None) -> None:
        """Record the first fatal error, wake every waiter and stop the reader."""
        if self._error is not None:
            return
        self._error = exc
        closed = exc if isinstance(exc, SessionClosed) else SessionClosed(f"session failed: {exc}")
        closed.__cause__ = None if closed is exc else exc
        self._stream_error = closed
        if goaway is not None:
            self._enqueue(_frame(FrameType.GO_AWAY, Flag.NONE, 0, goaway))
        # A local close or the peer's orderly goodbye is routine; anything else is worth a look.
        routine = goaway is GoAwayCode.NORMAL or (
            self._remote_goaway and type(exc) is SessionClosed
        )
        log.log(
            logging.INFO if routine else logging.WARNING,
            "tunnel session %s closing: %s",
            self.name,
            exc,
        )
        for stream in list(self._streams.values()):
            stream.abort(closed)
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(closed)
        self._pings.clear()
        self._out_space.set()
        # A reader that has not run yet must not be cancelled: its finally (the shutdown) would
        # never run. It sees the error on its first step instead.
        reader = self._reader
        if reader is not None and self._reader_started and reader is not asyncio.current_task():
            reader.cancel()

    async def _shutdown(self) -> None:
        """Flush what is queued (briefly), stop the tasks, close the transport."""
        if self._error is None:
            self._fail(SessionClosed("reader stopped"))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.close_timeout):
                while self._out_bytes and self._writer is not None and not self._writer.done():
                    self._out_space.clear()
                    await self._out_space.wait()
        tasks = [t for t in (self._writer, self._keeper) if t is not None]
        await stop([*tasks, *self._serving])
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.settings.close_timeout):
                await self._transport.close()
        self._done.set()

    # -- reader loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        """Read frames and dispatch them through the handler table until the end."""
        self._reader_started = True
        try:
            while self._error is None:
                header = decode_header(await self._read_exactly(HEADER_SIZE))
                await self._handlers[header.type](header)
        except ProtocolError as exc:
            self._fail(exc, GoAwayCode.PROTOCOL_ERROR)
        except TunnelError as exc:
            self._fail(exc)
        except asyncio.CancelledError:
            # _fail (or an owner's cancel) stopped us; the shutdown below is the way out, so
            # take the request back, or the timeouts inside the shutdown would misfire.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self._fail(SessionClosed("session cancelled"))
        except Exception as exc:  # a bug or an odd transport error: end this session only
            log.exception("tunnel session %s: reader failed", self.name)
            self._fail(SessionClosed(f"internal error: {exc!r}"), GoAwayCode.INTERNAL_ERROR)
        finally:
            await self._shutdown()

    async def _read_exactly(self, size: int) -> bytes:
        """Return the next ``size`` inbound bytes, whatever the message boundaries."""
        buf, pos = self._in_buf, self._in_pos
        have = len(buf) - pos
        if have >= size:
            self._in_pos = pos + size
            return buf[pos : pos + size]
        parts = [buf[pos:]] if have else []
        while True:
            chunk = await self._transport.receive()
            if not chunk:
                raise SessionClosed("peer closed the connection")
            self._last_rx = asyncio.get_running_loop().time()
            need = size - have
            if len(chunk) >= need:
                parts.append(chunk[:need])
                self._in_buf, self._in_pos = chunk, need
                return b"".join(parts)
            parts.append(chunk)
            have += len(chunk)

    async def _on_stream_frame(self, header: Header) -> None:
        """Handle Data and WindowUpdate frames, creating streams on SYN."""
        is_data = header.type is FrameType.DATA
        if is_data and header.length > self.settings.stream_window:
            raise ProtocolError(f"data frame of {header.length} bytes exceeds any window")
        stream = self._streams.get(header.stream_id)
        if header.flags & Flag.SYN:
            if stream is not None:
                raise ProtocolError(f"duplicate SYN for stream {header.stream_id}")
            if (header.stream_id % 2 == 1) == self._client:
                raise ProtocolError(f"peer opened stream {header.stream_id} with our parity")
            stream = self._incoming(header.stream_id)
        payload = await self._read_exactly(header.length) if is_data and header.length else b""
        if stream is None:
            return  # most likely a stream we reset; its in-flight frames are dropped
        stream.on_flags(header.flags)
        if is_data:
            stream.on_data(payload)
        else:
            stream.on_window_update(header.length)
        if header.flags & Flag.FIN:
            stream.on_fin()

    def _incoming(self, stream_id: int) -> Stream | None:
        """Register a stream the peer opened, or refuse it with RST."""
        if self._error is not None or len(self._streams) >= self.settings.max_streams:
            self.send_control(_frame(FrameType.WINDOW_UPDATE, Flag.RST, stream_id, 0))
            return None
        stream = Stream(self, stream_id, StreamState.SYN_RECEIVED)
        self._streams[stream_id] = stream
        serving = handshake.serve(stream, self._targets, open_timeout=self.settings.open_timeout)
        task = spawn(serving, f"tunnel-stream:{self.name}:{stream_id}")
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)
        return stream

    async def _on_ping(self, header: Header) -> None:
        """Answer a ping, or complete one of ours."""
        if header.flags & Flag.SYN:
            self.send_control(_frame(FrameType.PING, Flag.ACK, 0, header.length))
        elif header.flags & Flag.ACK:
            fut = self._pings.pop(header.length, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def _on_go_away(self, header: Header) -> None:
        """Stop opening streams on a normal GoAway; end the session on any other."""
        if header.length == GoAwayCode.NORMAL:
            self._remote_goaway = True
            return
        raise SessionClosed(f"peer sent GoAway code {header.length}")

    # -- writer loop ----------------------------------------------------------------------

    def _enqueue(self, frame: bytes) -> None:
        self._out.append(frame)
        self._out_bytes += len(frame)
        self._out_ready.set()

    def send_control(self, frame: bytes) -> None:
        """Queue a frame that must not wait for buffer space (credit, FIN, RST, pings)."""
        if self._error is None:
            self._enqueue(frame)

    async def send_data(self, frame: bytes) -> None:
        """Queue a data frame once the send buffer has room; raise if the session is gone."""
        limit = self.settings.send_buffer
        while True:
            if self._stream_error is not None:
                raise self._stream_error
            if not self._out_bytes or self._out_bytes + len(frame) <= limit:
                break
            self._out_space.clear()
            await self._out_space.wait()
        self._enqueue(frame)

    def send_room(self, size: int) -> bool:
        """Return True if a data frame of ``size`` bytes may be queued right now."""
        if self._stream_error is not None:
            return False
        return not self._out_bytes or self._out_bytes + size <= self.settings.send_buffer

    def send_data_nowait(self, frame: bytes) -> None:
        """Queue a data frame after send_room() said yes."""
        self._enqueue(frame)

    async def _write_loop(self) -> None:
        """Coalesce queued frames into transport messages, in order."""
        limit = self.settings.max_message
        try:
            while True:
                while not self._out:
                    self._out_ready.clear()
                    await self._out_ready.wait()
                chunks: list[bytes] = []
                size = 0
                while self._out and size < limit:
                    frame = self._out.popleft()
                    chunks.append(frame)
                    size += len(frame)
                await self._transport.send(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                self._out_bytes -= size
                self._out_space.set()
        except TunnelError as exc:
            self._fail(exc)
        except (OSError, RuntimeError) as exc:
            self._fail(SessionClosed(f"transport write failed: {exc}"))

    # -- keepalive loop -------------------------------------------------------------------

    async def _keepalive(self) -> None:
        """Ping regularly; declare the peer dead after dead_peer_timeout of silence."""
        loop = asyncio.get_running_loop()
        interval = self.settings.ping_interval
        timeout = self.settings.dead_peer_timeout
        next_ping = loop.time() + interval
        while True:
            now = loop.time()
            silent = now - self._last_rx
            if silent >= timeout:
                self._fail(PeerTimeout(f"nothing heard from the peer for {silent:.1f} s"))
                return
            if now >= next_ping:
                self._ping_id = (self._ping_id + 1) & _MAX_ID
                self.send_control(_frame(FrameType.PING, Flag.SYN, 0, self._ping_id))
                next_ping = now + interval
            await asyncio.sleep(max(0.0, min(next_ping, self._last_rx + timeout) - now))

    async def ping(self) -> float:
        """Return the round-trip time of one ping, in seconds."""
        if self._stream_error is not None:
            raise self._stream_error
        loop = asyncio.get_running_loop()
        self._ping_id = (self._ping_id + 1) & _MAX_ID
        fut: asyncio.Future[None] = loop.create_future()
        self._pings[self._ping_id] = fut
        started = loop.time()
        self.send_control(_frame(FrameType.PING, Flag.SYN, 0, self._ping_id))
        async with asyncio.timeout(self.settings.dead_peer_timeout):
            await fut
        return loop.time() - started

    # -- streams --------------------------------------------------------------------------

    def forget(self, stream: Stream) -> None:
        """Drop a finished stream from the table."""
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]

    async def open(self, target: str) -> Stream:
        """Open a stream to the peer's ``target``; raise TargetRefused if it says no."""
        handshake.check_name(target)
        if self._stream_error is not None:
            raise self._stream_error
        if self._remote_goaway:
            raise SessionClosed("peer is going away")
        if len(self._streams) >= self.settings.max_streams:
            raise StreamReset(f"too many streams ({len(self._streams)})")
        if self._next_id > _MAX_ID:
            raise SessionClosed("stream ids exhausted")
        stream = Stream(self, self._next_id, StreamState.INIT)
        stream.target = target
        self._next_id += 2
        self._streams[stream.id] = stream
        await handshake.request(stream, target, answer_within=self.settings.open_timeout)
        return stream
