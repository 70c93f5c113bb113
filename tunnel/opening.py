"""The OPEN header: the first bytes of every stream, naming a target, and its answer.

Exists because yamux streams carry no destination: we name a *target* (never an address), so a
peer can only reach what the other side chose to serve. Pure codec: no I/O, no session logic.

Request (opener -> receiver): ``version:u8 = 1``, ``len:u8``, ``target`` (``len`` bytes of
``[a-z0-9-]``). Answer (receiver -> opener): ``code:u8``, ``len:u16`` big endian, ``text`` UTF-8.
"""

from __future__ import annotations

import enum
import re
import struct

from kubeprober.tunnel.errors import ProtocolError

OPEN_VERSION = 1
MAX_TARGET = 64
MAX_TEXT = 1024
ANSWER_PREFIX = 3

_TARGET_RE = re.compile(rb"[a-z0-9-]{1,64}")
_ANSWER = struct.Struct(">BH")


class OpenCode(enum.IntEnum):
    """Answer codes of the OPEN header; 0 is the only success."""

    OK = 0
    UNKNOWN_TARGET = 1
    REFUSED = 2
    BAD_REQUEST = 3
    INTERNAL = 4


def encode_open(target: str) -> bytes:
    """Return the OPEN request bytes for ``target``."""
    raw = target.encode("ascii")
    if not _TARGET_RE.fullmatch(raw):
        raise ValueError(f"bad target name {target!r}")
    return bytes((OPEN_VERSION, len(raw))) + raw


def decode_open_prefix(prefix: bytes) -> int:
    """Check the 2-byte request prefix and return how many target bytes follow."""
    if len(prefix) != 2:
        raise ProtocolError("short OPEN header")
    if prefix[0] != OPEN_VERSION:
        raise ProtocolError(f"unsupported OPEN version {prefix[0]}")
    if not 1 <= prefix[1] <= MAX_TARGET:
        raise ProtocolError(f"bad OPEN target length {prefix[1]}")
    return prefix[1]


def decode_target(raw: bytes) -> str:
    """Validate and return the target name."""
    if not _TARGET_RE.fullmatch(raw):
        raise ProtocolError("bad OPEN target name")
    return raw.decode("ascii")


def encode_answer(code: OpenCode, text: str = "") -> bytes:
    """Return the answer bytes; text is truncated to MAX_TEXT bytes."""
    raw = text.encode("utf-8")[:MAX_TEXT]
    return _ANSWER.pack(code, len(raw)) + raw


def decode_answer_prefix(prefix: bytes) -> tuple[int, int]:
    """Return (code, text length) from the 3-byte answer prefix."""
    if len(prefix) != ANSWER_PREFIX:
        raise ProtocolError("short OPEN answer")
    code, size = _ANSWER.unpack(prefix)
    if size > MAX_TEXT:
        raise ProtocolError(f"OPEN answer text too long ({size})")
    return int(code), int(size)
