"""The reverse-tunnel protocol both ends share: yamux framing over a WebSocket byte stream.

A leaf package: it imports aiohttp and the standard library, nothing else of ours. The wire
format is specified in docs/tunnel.md.
"""

from __future__ import annotations

from kubeprober.tunnel.budget import PROCESS_BUDGET, ByteBudget
from kubeprober.tunnel.errors import (
    BudgetExceeded,
    PeerTimeout,
    ProtocolError,
    SessionClosed,
    StreamReset,
    TargetRefused,
    TunnelError,
)
from kubeprober.tunnel.opening import OpenCode
from kubeprober.tunnel.session import Session
from kubeprober.tunnel.settings import SUBPROTOCOL, SessionSettings
from kubeprober.tunnel.stream import Stream, StreamState
from kubeprober.tunnel.targets import TargetHandler
from kubeprober.tunnel.token import InvalidToken, Token, parse_token
from kubeprober.tunnel.transport import MemoryTransport, Transport, WebSocketTransport, memory_pair

__all__ = [
    "PROCESS_BUDGET",
    "SUBPROTOCOL",
    "BudgetExceeded",
    "ByteBudget",
    "InvalidToken",
    "MemoryTransport",
    "OpenCode",
    "PeerTimeout",
    "ProtocolError",
    "Session",
    "SessionClosed",
    "SessionSettings",
    "Stream",
    "StreamReset",
    "StreamState",
    "TargetHandler",
    "TargetRefused",
    "Token",
    "Transport",
    "TunnelError",
    "WebSocketTransport",
    "memory_pair",
    "parse_token",
]
