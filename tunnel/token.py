"""The agent token format ``kp1.<cluster>.<secret>``, shared by both ends of the tunnel.

Exists because the format is part of the tunnel contract: the agent reads its cluster name from
it, the aggregator takes the cluster name from it and checks the secret. Only parsing and
formatting live here; hashing and verification stay on the aggregator (aggregator/tokens.py).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

PREFIX = "kp1"
# A DNS-1123 label: the cluster name is also the Host of HTTP requests through the tunnel.
_CLUSTER = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SECRET = re.compile(r"[A-Za-z0-9_-]{16,256}")


class InvalidToken(ValueError):
    """Raise when a string is not a well-formed kp1 token."""


@dataclass(frozen=True, slots=True)
class Token:
    """A parsed token; its secret never shows in a repr (and so never in a log)."""

    cluster: str
    secret: str

    def __repr__(self) -> str:
        return f"Token(cluster={self.cluster!r}, secret=<hidden>)"

    def __str__(self) -> str:
        return f"{PREFIX}.{self.cluster}.{self.secret}"


def parse_token(text: str) -> Token:
    """Split ``kp1.<cluster>.<secret>`` (surrounding whitespace ignored); raise InvalidToken."""
    parts = text.strip().split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise InvalidToken("token must look like kp1.<cluster>.<secret>")
    _, cluster, secret = parts
    if not _CLUSTER.fullmatch(cluster):
        raise InvalidToken("token cluster is not a DNS label")
    if not _SECRET.fullmatch(secret):
        raise InvalidToken("token secret must be 16-256 URL-safe characters")
    return Token(cluster, secret)


def new_token(cluster: str) -> Token:
    """Return a fresh random token for ``cluster`` (256 bits of secret)."""
    return parse_token(f"{PREFIX}.{cluster}.{secrets.token_urlsafe(32)}")
