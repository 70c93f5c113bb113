"""Wire constants and the 12-byte yamux frame header codec.

Exists so the wire format lives in one place that a test pins byte for byte (docs/tunnel.md is
the prose twin). It must not know about sessions, streams or transports: only bytes in and out.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from kubeprober.tunnel.errors import ProtocolError

VERSION = 0
HEADER_SIZE = 12
INITIAL_WINDOW = 256 * 1024
# Largest Data payload we send in one frame, whatever the window: keeps a frame inside one
# WebSocket message (peers accept 1 MiB) and lets other streams interleave.
MAX_FRAME = 256 * 1024

_HEADER = struct.Struct(">BBHII")


class FrameType(enum.IntEnum):
    """Frame types of the yamux header (byte 1)."""

    DATA = 0
    WINDOW_UPDATE = 1
    PING = 2
    GO_AWAY = 3


class Flag(enum.IntFlag):
    """Flags of the yamux header (bytes 2-3, big endian)."""

    NONE = 0
    SYN = 1
    ACK = 2
    FIN = 4
    RST = 8


class GoAwayCode(enum.IntEnum):
    """Reason carried in the length field of a GoAway frame."""

    NORMAL = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


_KNOWN_FLAGS = int(Flag.SYN | Flag.ACK | Flag.FIN | Flag.RST)
# Enum construction is slow on the hot path; every valid value is known in advance.
_TYPES = tuple(FrameType)
_FLAGS = tuple(Flag(i) for i in range(_KNOWN_FLAGS + 1))


@dataclass(frozen=True, slots=True)
class Header:
    """One decoded frame header; ``length`` means payload size, window delta, ping id or code."""

    type: FrameType
    flags: Flag
    stream_id: int
    length: int

    def encode(self) -> bytes:
        """Return the 12 wire bytes of this header."""
        return encode_header(self.type, self.flags, self.stream_id, self.length)


def encode_header(kind: FrameType, flags: Flag | int, stream_id: int, length: int) -> bytes:
    """Return the 12 wire bytes for a header."""
    return _HEADER.pack(VERSION, kind, flags, stream_id, length)


def decode_header(data: bytes | bytearray | memoryview) -> Header:
    """Decode 12 bytes into a Header; raise ProtocolError on anything a peer must not send."""
    if len(data) != HEADER_SIZE:
        raise ProtocolError(f"header needs {HEADER_SIZE} bytes, got {len(data)}")
    version, kind, flags, stream_id, length = _HEADER.unpack(data)
    if version != VERSION:
        raise ProtocolError(f"unsupported version {version}")
    if kind > FrameType.GO_AWAY:
        raise ProtocolError(f"unknown frame type {kind}")
    if flags & ~_KNOWN_FLAGS:
        raise ProtocolError(f"unknown flags {flags:#06x}")
    ftype = _TYPES[kind]
    # Session-level frames carry stream id 0; stream frames never do.
    if ftype in (FrameType.PING, FrameType.GO_AWAY):
        if stream_id != 0:
            raise ProtocolError(f"{ftype.name} on stream {stream_id}")
    elif stream_id == 0:
        raise ProtocolError(f"{ftype.name} on stream 0")
    return Header(ftype, _FLAGS[flags], stream_id, length)
