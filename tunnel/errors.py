"""The tunnel's exception tree, so callers catch one base class.

    TunnelError
    ├── ProtocolError        the peer broke the wire protocol (the session sends GoAway)
    ├── SessionClosed        the session is gone (peer GoAway, transport lost, local close)
    │   └── PeerTimeout      nothing heard from the peer within the dead-peer timeout
    ├── StreamReset          the stream was reset (RST) by either side
    │   └── TargetRefused    the receiver answered the OPEN header with an error code
    └── BudgetExceeded       a local byte budget would be overrun

Must not import anything else of ours: every other tunnel module imports this one.
"""

from __future__ import annotations


class TunnelError(Exception):
    """Base of every tunnel error."""


class ProtocolError(TunnelError):
    """Raise when the peer breaks the wire protocol."""


class SessionClosed(TunnelError):
    """Raise when the session is closed or closing."""


class PeerTimeout(SessionClosed):
    """Raise when the peer stayed silent past the dead-peer timeout."""


class StreamReset(TunnelError):
    """Raise when a stream was reset."""


class TargetRefused(StreamReset):
    """Raise when the receiver refused the OPEN header's target."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"target refused (code {code}): {text}")
        self.code = code
        self.text = text


class BudgetExceeded(TunnelError):
    """Raise when a byte budget would be overrun."""
