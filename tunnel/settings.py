"""Tunables of a tunnel session, in one dataclass with units and reasons.

Must not hold state or behaviour: sessions read it, tests shrink the timeouts.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubeprober.tunnel.frames import INITIAL_WINDOW

# Largest stream window we allow: a Go peer sends a whole window as one WebSocket message.
MAX_STREAM_WINDOW = 4 * 1024 * 1024

SUBPROTOCOL = "kubeprober.v1"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Limits and timers of one session (seconds and bytes)."""

    # seconds between our pings; well under any proxy's idle cut (often 60 s)
    ping_interval: float = 15.0
    # seconds of silence after which the peer is declared dead; several pings, so a slow
    # link or a long GC pause does not kill a healthy session
    dead_peer_timeout: float = 60.0
    # seconds an opener waits for the OPEN answer; a live peer answers in milliseconds
    open_timeout: float = 10.0
    # seconds a writer may wait for send credit before the stream is reset; bounds how long a
    # reader that never reads can pin a writer
    write_timeout: float = 120.0
    # seconds to wait for the GoAway to leave on close; closing must never hang
    close_timeout: float = 2.0
    # bytes of receive window per stream: every stream starts at yamux's 256 KiB and we grow
    # it to this with the first WindowUpdate; a bigger window than yamux's keeps one stream
    # fast across a round trip between processes (256 KiB caps it near 60 MB/s)
    stream_window: int = 1024 * 1024
    # streams open at once on a session; beyond this an incoming SYN is answered with RST,
    # which also caps buffered bytes at max_streams * stream_window before any budget
    max_streams: int = 256
    # bytes buffered (received, not yet read) across one session's streams
    session_buffer: int = 16 * 1024 * 1024
    # bytes queued for the writer loop before data writers wait; keeps the socket busy
    # without letting a fast writer pile up memory
    send_buffer: int = 1024 * 1024
    # bytes per coalesced transport message; big enough to amortise per-message cost
    max_message: int = 256 * 1024

    def __post_init__(self) -> None:
        if not INITIAL_WINDOW <= self.stream_window <= MAX_STREAM_WINDOW:
            raise ValueError(f"stream_window must be in [{INITIAL_WINDOW}, {MAX_STREAM_WINDOW}]")
