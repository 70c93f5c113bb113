"""Agent tokens ``kp1.<cluster>.<secret>``: parse them and check secrets against stored hashes.

Exists so the tunnel server learns *which* cluster is calling from the token alone and can
verify it without keeping any secret in memory: only hashes of the current and previous token
(for rotation) are stored, and comparisons are constant-time. Must not do I/O (callers load
Secrets or files and hand the strings in).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from kubeprober.tunnel.token import InvalidToken, Token, new_token, parse_token

__all__ = [
    "InvalidToken",
    "Token",
    "TokenStore",
    "hash_secret",
    "hashed_token",
    "new_token",
    "parse_hash",
    "parse_token",
]

# Domain separation: these hashes can never be confused with another use of sha256(secret).
_HASH_CONTEXT = b"kubeprober-agent-token-v1\0"
_HASH_PREFIX = "sha256:"


def hash_secret(secret: str) -> bytes:
    """Return the stored form of a secret."""
    return hashlib.sha256(_HASH_CONTEXT + secret.encode("ascii")).digest()


def hashed_token(token: str) -> str:
    """Return the text a Secret's ``tokenHash`` holds for ``token``: ``sha256:<hex>``."""
    return _HASH_PREFIX + hash_secret(parse_token(token).secret).hex()


def parse_hash(text: str) -> bytes:
    """Read a ``tokenHash`` value back; raise InvalidToken if it is not one."""
    digest = text.strip().removeprefix(_HASH_PREFIX)
    try:
        raw = bytes.fromhex(digest)
    except ValueError:
        raw = b""
    if not text.strip().startswith(_HASH_PREFIX) or len(raw) != hashlib.sha256().digest_size:
        raise InvalidToken("a token hash must look like sha256:<64 hex digits>")
    return raw


@dataclass(frozen=True, slots=True)
class _Hashes:
    current: bytes
    previous: bytes | None


class TokenStore:
    """Hashes of each cluster's current and previous token."""

    def __init__(self) -> None:
        self._hashes: dict[str, _Hashes] = {}

    def set(self, cluster: str, token: str, *, previous: str | None = None) -> None:
        """Store hashes of ``token`` (and ``previous``) for ``cluster``; keep no secret."""
        current = parse_token(token)
        old = parse_token(previous) if previous else None
        for parsed in (current, old):
            if parsed is not None and parsed.cluster != cluster:
                raise InvalidToken(f"token is for cluster {parsed.cluster!r}, not {cluster!r}")
        self.set_hashes(
            cluster, hash_secret(current.secret), hash_secret(old.secret) if old else None
        )

    def set_hashes(self, cluster: str, current: bytes, previous: bytes | None = None) -> None:
        """Store already-hashed tokens for ``cluster`` (a Secret's ``tokenHash``)."""
        self._hashes[cluster] = _Hashes(current, previous)

    def remove(self, cluster: str) -> None:
        """Forget ``cluster``; its tokens stop working."""
        self._hashes.pop(cluster, None)

    def __contains__(self, cluster: object) -> bool:
        return cluster in self._hashes

    def verify(self, token: str) -> str | None:
        """Return the cluster a valid token names, or None."""
        try:
            parsed = parse_token(token)
        except InvalidToken:
            return None
        stored = self._hashes.get(parsed.cluster)
        if stored is None:
            return None
        given = hash_secret(parsed.secret)
        # Compare against both slots every time so timing does not tell which one matched.
        ok_current = hmac.compare_digest(given, stored.current)
        ok_previous = hmac.compare_digest(given, stored.previous or b"\0" * len(given))
        return parsed.cluster if ok_current or ok_previous else None
