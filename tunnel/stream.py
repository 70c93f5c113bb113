"""One yamux stream: an explicit state machine, receive credit and send credit.

Exists to keep per-stream rules in one place: every state change goes through
:meth:`Stream._transition`, credit is granted back only as the application reads, and every wait
also watches the stream's end and (for writers) a timer. It must not touch the transport: frames
leave through the owning session's queue, which keeps one writer for the whole connection.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from typing import Protocol

from kubeprober.tunnel.budget import ByteBudget
from kubeprober.tunnel.errors import ProtocolError, StreamReset, TunnelError
from kubeprober.tunnel.frames import (
    HEADER_SIZE,
    INITIAL_WINDOW,
    MAX_FRAME,
    Flag,
    FrameType,
    encode_header,
)
from kubeprober.tunnel.settings import SessionSettings


class StreamState(enum.Enum):
    """Lifecycle of a stream, as in yamux's stream.go."""

    INIT = "init"
    SYN_SENT = "syn-sent"
    SYN_RECEIVED = "syn-received"
    ESTABLISHED = "established"
    LOCAL_CLOSE = "local-close"
    REMOTE_CLOSE = "remote-close"
    CLOSED = "closed"
    RESET = "reset"


class Event(enum.Enum):
    """What happened to a stream; input of the transition table."""

    SEND_SYN = "send-syn"
    SEND_ACK = "send-ack"
    RECV_ACK = "recv-ack"
    SEND_FIN = "send-fin"
    RECV_FIN = "recv-fin"
    SEND_RST = "send-rst"
    RECV_RST = "recv-rst"
    ABORT = "abort"


S = StreamState
_OPEN = (S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED)
_TERMINAL = (S.CLOSED, S.RESET)

# (state, event) -> next state. Pairs not listed leave the state alone, except RECV_FIN, which
# is a protocol error when not listed and the stream is not already terminal.
_TABLE: dict[tuple[StreamState, Event], StreamState] = {
    (S.INIT, Event.SEND_SYN): S.SYN_SENT,
    (S.SYN_RECEIVED, Event.SEND_ACK): S.ESTABLISHED,
    (S.SYN_SENT, Event.RECV_ACK): S.ESTABLISHED,
    **{(s, Event.SEND_FIN): S.LOCAL_CLOSE for s in _OPEN},
    (S.REMOTE_CLOSE, Event.SEND_FIN): S.CLOSED,
    **{(s, Event.RECV_FIN): S.REMOTE_CLOSE for s in _OPEN},
    (S.LOCAL_CLOSE, Event.RECV_FIN): S.CLOSED,
    **{
        (s, e): S.RESET
        for s in StreamState
        if s not in _TERMINAL
        for e in (Event.SEND_RST, Event.RECV_RST, Event.ABORT)
    },
}

_READABLE = (*_OPEN, S.LOCAL_CLOSE)
_WRITABLE = (S.INIT, *_OPEN, S.REMOTE_CLOSE)


class StreamOwner(Protocol):
    """What a stream needs from its session."""

    settings: SessionSettings
    budget: ByteBudget

    def send_control(self, frame: bytes) -> None:
        """Queue a frame that must never wait (window updates, FIN, RST)."""

    async def send_data(self, frame: bytes) -> None:
        """Queue a data frame, waiting for send-buffer space."""

    def send_room(self, size: int) -> bool:
        """Return True if a data frame of ``size`` bytes may be queued right now."""

    def send_data_nowait(self, frame: bytes) -> None:
        """Queue a data frame after send_room() said yes."""

    def forget(self, stream: Stream) -> None:
        """Drop a stream that reached CLOSED or RESET."""

    def closed_error(self) -> TunnelError | None:
        """Return why the session closed, or None while it is open."""


class Stream:
    """A bidirectional byte stream multiplexed over a session."""

    def __init__(self, owner: StreamOwner, stream_id: int, state: StreamState) -> None:
        self.id = stream_id
        self.target = ""  # the OPEN target, set by the session once known
        self._owner = owner
        self._state = state
        # The window we aim to grant; yamux starts every stream at INITIAL_WINDOW and the
        # receiver grows it with its first WindowUpdate, as Go's MaxStreamWindowSize does.
        self._window = max(owner.settings.stream_window, INITIAL_WINDOW)
        # Receive side; owned by the session's reader loop (producer) and one reader task.
        self._recv: deque[bytes] = deque()
        self._buffered = 0  # bytes in _recv, for window arithmetic
        self._held = 0  # bytes of _recv still counted against the budgets
        self._recv_window = INITIAL_WINDOW
        self._readable = asyncio.Event()
        # Send side; owned by whoever holds _write_lock.
        self._send_window = INITIAL_WINDOW
        self._writable = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._error: TunnelError | None = None

    def __repr__(self) -> str:
        return f"<Stream {self.id} {self.target or '?'} {self._state.value}>"

    @property
    def state(self) -> StreamState:
        """Return the current state."""
        return self._state

    # -- the one place states change ------------------------------------------------------

    def _transition(self, event: Event) -> StreamState:
        """Apply ``event``; wake waiters; forget the stream once it is terminal."""
        before = self._state
        after = _TABLE.get((before, event), before)
        if event is Event.RECV_FIN and after is before and before not in _TERMINAL:
            raise ProtocolError(f"FIN on stream {self.id} in state {before.value}")
        if after is before:
            return after
        self._state = after
        self._readable.set()
        self._writable.set()
        if after in _TERMINAL:
            if after is S.RESET and self._error is None:
                self._error = self._owner.closed_error() or StreamReset(f"stream {self.id} reset")
            # Unread bytes stay readable (a refusal's answer arrives just before its RST) but
            # stop counting against the budgets: the stream is bounded by one window anyway.
            self._owner.budget.release(self._held)
            self._held = 0
            self._owner.forget(self)
        return after

    def _outgoing_flags(self) -> Flag:
        """Return SYN/ACK for the first frame we send, moving the state on."""
        if self._state is S.INIT:
            self._transition(Event.SEND_SYN)
            return Flag.SYN
        if self._state is S.SYN_RECEIVED:
            self._transition(Event.SEND_ACK)
            return Flag.ACK
        return Flag.NONE

    # -- frames from the session's reader loop --------------------------------------------

    def on_flags(self, flags: Flag) -> None:
        """Apply ACK, then RST, of an incoming frame (FIN is applied after its data)."""
        if flags & Flag.ACK:
            self._transition(Event.RECV_ACK)
        if flags & Flag.RST:
            self._transition(Event.RECV_RST)

    def on_data(self, payload: bytes) -> None:
        """Buffer incoming data; raise ProtocolError when the peer overran our window."""
        size = len(payload)
        if size > self._recv_window:
            raise ProtocolError(f"stream {self.id}: {size} bytes exceed window {self._recv_window}")
        self._recv_window -= size
        if not size or self._state not in _READABLE:
            return
        if not self._owner.budget.try_acquire(size):
            # Our limit, not the peer's fault: lose this stream, keep the session.
            self.reset()
            return
        self._recv.append(payload)
        self._buffered += size
        self._held += size
        self._readable.set()

    def on_fin(self) -> None:
        """Apply an incoming FIN."""
        self._transition(Event.RECV_FIN)

    def on_window_update(self, delta: int) -> None:
        """Add send credit granted by the peer."""
        self._send_window += delta
        if self._send_window > 0xFFFFFFFF:
            raise ProtocolError(f"stream {self.id}: send window overflow")
        self._writable.set()

    def abort(self, error: TunnelError) -> None:
        """End the stream because the session ended."""
        if self._error is None:
            self._error = error
        self._transition(Event.ABORT)

    # -- application side -----------------------------------------------------------------

    async def read(self, limit: int = 65536) -> bytes:
        """Return up to ``limit`` bytes; b"" at end of stream; raise StreamReset if reset."""
        while not self._recv:
            if self._state not in _READABLE:
                if self._state is S.RESET:
                    raise self._error or StreamReset(f"stream {self.id} reset")
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._recv[0]
        if len(chunk) <= limit:
            self._recv.popleft()
        else:
            self._recv[0] = chunk[limit:]
            chunk = chunk[:limit]
        self._consumed(len(chunk))
        return chunk

    async def read_exactly(self, size: int) -> bytes:
        """Return exactly ``size`` bytes or raise StreamReset at a premature end."""
        parts: list[bytes] = []
        need = size
        while need:
            chunk = await self.read(need)
            if not chunk:
                raise StreamReset(f"stream {self.id} ended after {size - need} of {size} bytes")
            parts.append(chunk)
            need -= len(chunk)
        return b"".join(parts)

    def _consumed(self, size: int) -> None:
        """Release budget for read bytes and grant credit back once half a window is owed."""
        self._buffered -= size
        give = min(size, self._held)
        self._held -= give
        self._owner.budget.release(give)
        owed = self._window - self._buffered - self._recv_window
        # Batch credit like yamux: only once half a window is owed (the first read of a stream
        # with a larger window owes more than that, which grows the window right away).
        if owed >= self._window // 2 and self._state in _READABLE:
            self._recv_window += owed
            self._owner.send_control(
                encode_header(FrameType.WINDOW_UPDATE, self._outgoing_flags(), self.id, owed)
            )

    async def write(self, data: bytes) -> None:
        """Send all of ``data``, waiting for credit; raise if the stream cannot carry it."""
        view = memoryview(data)
        async with self._write_lock:
            while view:
                await self._wait_credit()
                size = min(len(view), self._send_window, MAX_FRAME)
                self._send_window -= size
                flags = self._outgoing_flags()
                header = encode_header(FrameType.DATA, flags, self.id, size)
                await self._owner.send_data(header + view[:size])
                view = view[size:]

    def try_write_nowait(self, data: bytes) -> bool:
        """Queue ``data`` as one frame if credit and buffer allow it now; else leave it alone.

        Lets a synchronous writer (an asyncio transport) skip a task hop in the common case;
        False means "use write()", and nothing was sent.
        """
        size = len(data)
        if (
            not size
            or size > MAX_FRAME
            or size > self._send_window
            or self._write_lock.locked()
            or self._state not in _WRITABLE
        ):
            return False
        if not self._owner.send_room(size + HEADER_SIZE):
            return False
        flags = self._outgoing_flags()
        self._owner.send_data_nowait(encode_header(FrameType.DATA, flags, self.id, size) + data)
        self._send_window -= size
        return True

    async def _wait_credit(self) -> None:
        """Wait until we may send, watching the stream's end and the write timer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._owner.settings.write_timeout
        while True:
            if self._state not in _WRITABLE:
                if self._state is S.RESET:
                    raise self._error or StreamReset(f"stream {self.id} reset")
                raise StreamReset(f"stream {self.id} is closed for writing")
            if self._send_window > 0:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.reset()
                raise StreamReset(f"stream {self.id}: no send credit for too long")
            self._writable.clear()
            try:
                await asyncio.wait_for(self._writable.wait(), remaining)
            except TimeoutError:
                continue

    async def close(self) -> None:
        """Half-close: send FIN after any data already written."""
        async with self._write_lock:
            if self._state in (*_OPEN, S.INIT, S.REMOTE_CLOSE):
                flags = self._outgoing_flags() | Flag.FIN
                frame = encode_header(FrameType.WINDOW_UPDATE, flags, self.id, 0)
                self._transition(Event.SEND_FIN)
                self._owner.send_control(frame)

    def reset(self) -> None:
        """Abort the stream in both directions and tell the peer (RST)."""
        if self._state in _TERMINAL:
            return
        if self._state is not S.INIT and self._owner.closed_error() is None:
            self._owner.send_control(encode_header(FrameType.WINDOW_UPDATE, Flag.RST, self.id, 0))
        self._transition(Event.SEND_RST)
        self._recv.clear()
        self._buffered = 0

    @property
    def send_credit(self) -> int:
        """Return how many bytes the peer lets us send right now."""
        return self._send_window

    @property
    def at_eof(self) -> bool:
        """Return True once the peer finished and everything was read."""
        return not self._recv and self._state not in _READABLE

    async def wait_closed(self) -> None:
        """Wait until the stream is CLOSED or RESET."""
        while self._state not in _TERMINAL:
            self._readable.clear()
            await self._readable.wait()
