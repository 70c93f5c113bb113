"""HTTP/1.1 requests to an agent over `agent` streams of its cluster's session, kept alive.

Exists because the aggregator pulls every agent twice per round: a request is one write and
one read on a stream already open, parsed here with bytes methods. Going through aiohttp's
client (request and response objects, a connection pool, a pump task per stream) cost three
times as much CPU per exchange, and at 2,000 clusters the round is the aggregator's CPU
(bench/fleet.py). The agent side is unchanged: aiohttp's server on the stream (serve.py).

Speaks the subset the agent's server answers with: Content-Length or chunked bodies, or a body
to the end of the stream, keep-alive unless the answer says otherwise. Timeouts are the
caller's (``asyncio.timeout`` around a request); a cancelled exchange resets its stream.
Must not know how sessions are accepted or which paths an agent serves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubeprober.tunnel.errors import SessionClosed, StreamReset, TunnelError
from kubeprober.tunnel.session import Session
from kubeprober.tunnel.stream import Stream, StreamState

AGENT_TARGET = "agent"

# bytes of status line and headers we accept; an agent's are a few hundred
MAX_HEAD = 64 * 1024
# bytes of body we accept by default: an agent's /metrics takes about 1.7 KB per check (170 KB
# for 100), its /status less, so this is some 4,800 checks; a bigger answer is refused
# (BadResponse) rather than held in memory
MAX_BODY = 8 * 1024 * 1024
# interim (1xx) answers we skip before the final one; an agent sends none
MAX_INTERIM = 8
# methods safe to send again when a kept-alive stream turned out to be closed (RFC 9110 9.2.2)
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_HEX_DIGITS = b"0123456789abcdefABCDEF"


class BadResponse(TunnelError):
    """Raise when an agent's answer is not HTTP/1.1 this client can read."""


@dataclass(frozen=True, slots=True)
class Reply:
    """An agent's answer, read whole."""

    status: int
    reason: str
    headers: Mapping[str, str]
    """Header names in lower case; a repeated header keeps its last value."""
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON; raise ValueError if it is not."""
        return decode_json(self.body)


def decode_json(data: bytes) -> Any:
    """Decode a peer's JSON; raise ValueError if it is not, nested too deeply included."""
    try:
        return json.loads(data)
    except RecursionError:  # "[[[[…": a few KiB nest deeper than the decoder can go
        raise ValueError("JSON nested too deeply") from None


class _Ended(Exception):
    """The stream ended before the answer did (internal: decides whether to retry)."""


class Connection:
    """One stream carrying requests one after another, with its unread bytes."""

    __slots__ = ("buf", "idle_since", "stream")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.idle_since = 0.0

    async def _fill(self) -> None:
        chunk = await self.stream.read(1024 * 1024)
        if not chunk:
            raise _Ended
        self.buf += chunk

    async def read_until(self, sep: bytes, limit: int, what: str) -> bytes:
        """Return the bytes before ``sep`` (consuming both)."""
        start = 0
        while (end := self.buf.find(sep, start, limit + len(sep))) < 0:
            if len(self.buf) >= limit + len(sep):
                raise BadResponse(f"{what} longer than {limit} bytes")
            start = max(0, len(self.buf) - len(sep) + 1)
            await self._fill()
        data = bytes(self.buf[:end])
        del self.buf[: end + len(sep)]
        return data

    async def read_exactly(self, size: int) -> bytes:
        """Return the next ``size`` bytes."""
        while len(self.buf) < size:
            await self._fill()
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    async def read_to_end(self, limit: int) -> bytes:
        """Return everything up to the end of the stream."""
        while True:
            if len(self.buf) > limit:
                raise BadResponse(f"body larger than {limit} bytes")
            try:
                await self._fill()
            except _Ended:
                data = bytes(self.buf)
                self.buf.clear()
                return data


class AgentClient:
    """Send HTTP/1.1 requests to clusters by name, reusing idle streams per cluster."""

    def __init__(
        self,
        lookup: Callable[[str], Session | None],
        *,
        idle_timeout: float = 30.0,
        max_body: int = MAX_BODY,
        user_agent: str = "kubeprober-aggregator",
    ) -> None:
        self._lookup = lookup
        # seconds an idle stream is kept for reuse: shorter than the agent's 75 s keep-alive,
        # so we let go first and rarely write into a stream the agent is closing
        self._idle_timeout = idle_timeout
        self._max_body = max_body
        self._user_agent = user_agent
        self._idle: dict[str, list[Connection]] = {}

    async def get(self, cluster: str, path: str) -> Reply:
        """GET ``path`` from ``cluster``'s agent."""
        return await self.request(cluster, "GET", path)

    async def request(
        self,
        cluster: str,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Send one request and read the whole answer.

        Raise SessionClosed if the cluster is not connected, another TunnelError if its stream
        fails or the answer is malformed (BadResponse), ValueError (before sending anything)
        if a request field could break the request's framing.
        """
        request = self._encode(cluster, method, path, body, headers or {})
        conn, reused = await self._acquire(cluster)
        try:
            try:
                reply, keep = await self._exchange(conn, method, request)
            except (_Ended, StreamReset):
                if not (reused and method in _IDEMPOTENT):
                    raise
                # The agent closed this kept-alive stream as we reused it: once more, fresh.
                conn.stream.reset()
                conn, _ = await self._acquire(cluster, fresh=True)
                reply, keep = await self._exchange(conn, method, request)
        except _Ended:
            conn.stream.reset()
            raise StreamReset(
                f"cluster {cluster!r}: the agent closed the stream before its answer ended"
            ) from None
        except BaseException:
            conn.stream.reset()  # an answer half read (or a cancelled wait) poisons the stream
            raise
        if keep:
            conn.idle_since = time.monotonic()
            self._idle.setdefault(cluster, []).append(conn)
        else:
            await conn.stream.close()
        return reply

    def idle_streams(self, cluster: str) -> int:
        """Streams kept for reuse with ``cluster``."""
        return len(self._idle.get(cluster, ()))

    def forget(self, cluster: str) -> None:
        """Reset ``cluster``'s idle streams (its session ended, or it is gone)."""
        for conn in self._idle.pop(cluster, ()):
            conn.stream.reset()

    def close(self) -> None:
        """Reset every idle stream."""
        for cluster in list(self._idle):
            self.forget(cluster)

    def _encode(
        self, cluster: str, method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> bytes:
        framing = {"host", "content-length", "transfer-encoding", "connection"}
        if framed := framing.intersection(name.lower() for name in headers):
            raise ValueError(f"header {sorted(framed)[0]} is set by the client, not the caller")
        fields = {"Host": cluster}
        if "user-agent" not in (name.lower() for name in headers):
            fields["User-Agent"] = self._user_agent
        fields.update(headers)
        if body or method in ("POST", "PUT", "PATCH"):
            fields["Content-Length"] = str(len(body))
        for text in (method, path, *fields, *fields.values()):
            # A CR or LF in any of these would let a value forge the request's framing.
            if not (text.isascii() and text.isprintable()):
                raise ValueError(f"request field not printable ASCII: {text!r}")
        if not path.startswith("/") or " " in path or " " in method:
            raise ValueError(f"request path must start with / and hold no space: {path!r}")
        head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        return f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode() + body

    async def _acquire(self, cluster: str, *, fresh: bool = False) -> tuple[Connection, bool]:
        """An idle stream of ``cluster`` still fit for a request, else a new one."""
        idle = self._idle.get(cluster)
        now = time.monotonic()
        while idle and not fresh:
            conn = idle.pop()
            if (
                conn.stream.state is StreamState.ESTABLISHED
                and not conn.buf
                and now - conn.idle_since < self._idle_timeout
            ):
                return conn, True
            conn.stream.reset()
        session = self._lookup(cluster)
        if session is None or session.closed:
            raise SessionClosed(f"cluster {cluster!r} is not connected")
        return Connection(await session.open(AGENT_TARGET)), False

    async def _exchange(self, conn: Connection, method: str, request: bytes) -> tuple[Reply, bool]:
        """Write ``request`` and read its answer; return it and whether the stream is reusable."""
        if not conn.stream.try_write_nowait(request):
            await conn.stream.write(request)
        for _ in range(MAX_INTERIM + 1):  # interim 1xx answers precede the final one
            version, status, reason, headers = parse_head(
                await conn.read_until(b"\r\n\r\n", MAX_HEAD, "response head")
            )
            if not 100 <= status < 200:
                break
        else:
            raise BadResponse(f"more than {MAX_INTERIM} interim (1xx) answers")
        keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked(conn)
        elif "content-length" in headers:
            length = _content_length(headers["content-length"])
            if length > self._max_body:
                raise BadResponse(f"body of {length} bytes is larger than {self._max_body}")
            body = await conn.read_exactly(length)
        else:
            body, keep = await conn.read_to_end(self._max_body), False
        return Reply(status, reason, headers, body), keep

    async def _read_chunked(self, conn: Connection) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = await conn.read_until(b"\r\n", 1024, "chunk size line")
            size_text = line.split(b";", 1)[0].strip()
            # int() alone would also take "0x10", "+10" and "1_0"
            if not size_text or size_text.strip(_HEX_DIGITS) or len(size_text) > 15:
                raise BadResponse(f"invalid chunk size {size_text[:40]!r}")
            size = int(size_text, 16)
            if size == 0:
                while await conn.read_until(b"\r\n", MAX_HEAD, "trailer"):
                    pass  # trailers carry nothing the aggregator uses
                return b"".join(parts)
            total += size
            if total > self._max_body:
                raise BadResponse(f"chunked body larger than {self._max_body} bytes")
            parts.append(await conn.read_exactly(size))
            if await conn.read_exactly(2) != b"\r\n":
                raise BadResponse("chunk not followed by CRLF")


def parse_head(head: bytes) -> tuple[str, int, str, dict[str, str]]:
    """Status line and headers of an answer; raise BadResponse naming what is wrong."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not _digits(code):
        raise BadResponse(f"invalid status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadResponse(f"invalid header line {line[:80]!r}")
        key = name.lower()
        value = value.strip()
        if key == "content-length" and headers.get(key, value) != value:
            raise BadResponse("conflicting Content-Length headers")
        headers[key] = value
    return version, int(code), reason, headers


def _digits(text: str) -> bool:
    # str.isdigit() alone takes "²" and other digits int() refuses
    return text.isascii() and text.isdigit()


def _content_length(text: str) -> int:
    if not _digits(text):
        raise BadResponse(f"invalid Content-Length {text[:40]!r}")
    return int(text)
