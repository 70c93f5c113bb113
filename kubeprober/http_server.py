"""What the agent's and the aggregator's listeners share against slow and numerous clients.

A request body must arrive whole within :data:`BODY_TIMEOUT` (:func:`read_body`): aiohttp
bounds how long a connection may idle, not how long a body may trickle in once its headers
have. And a listener holds at most ``max_connections`` connections (:class:`CappedSite`): past
that, a new one is answered 503 and closed at once, so a flood of idle connections takes no
more descriptors than the cap and those already connected go on being served.

It must not know any route: handlers call :func:`read_body` themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

R = TypeVar("R", bound=web.StreamResponse)

BODY_TIMEOUT = 30.0
"""Seconds a request body may take to arrive once its headers have. A report or a kubectl
write is a few KiB sent at once; 30 s is ample on the slowest link and short enough that a
client sending a byte a second holds its connection for no longer."""

LINGER = 2.0
"""Seconds a connection cut off by :func:`last_answer` may go on sending before it is closed
whole: time for the answer to reach a client that is still sending."""

REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\n\r\n"
    b"too many connections\n"
)


class BodyRefused(Exception):
    """A body over its size limit (413) or too slow to arrive (408)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read the whole body of ``request``: at most ``limit`` bytes, within
    :data:`BODY_TIMEOUT`; BodyRefused otherwise, to be answered with :func:`last_answer`."""
    if (request.content_length or 0) > limit:
        raise BodyRefused(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            # read(n) returns what has arrived, up to n bytes: loop until the end
            while chunk := await request.content.read(limit + 1 - size):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise BodyRefused(413, f"body larger than {limit} bytes")
    except TimeoutError:
        raise BodyRefused(408, f"body not received within {BODY_TIMEOUT:g} s") from None
    return b"".join(chunks)


async def last_answer(request: web.Request, answer: R) -> R:
    """Send ``answer`` and close the connection: what is left of a body too slow or too large
    is not worth reading (aiohttp would read it for ten more seconds).

    Closed in two steps (RFC 9112 section 9.6): our side first, then, once the client hung
    up or after :data:`LINGER`, the whole. Closed at once with the client's bytes unread, the
    connection is reset, which can destroy the answer before the client has read it."""
    answer.force_close()
    await answer.prepare(request)
    await answer.write_eof()
    transport = request.transport
    if transport is not None and transport.can_write_eof():
        transport.write_eof()
        with contextlib.suppress(TimeoutError, ConnectionError, HttpProcessingError):
            async with asyncio.timeout(LINGER):
                while await request.content.read(2**16):
                    pass  # discarded
    request.protocol.force_close()
    return answer


def default_max_connections() -> int:
    """Raise the descriptor limit to its hard limit (as Go's runtime does at start: a soft
    1024 would cap a fleet that fits), then return half of it: the rest stays for files,
    probes and clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and soft != resource.RLIM_INFINITY:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return 65536 if soft == resource.RLIM_INFINITY else max(64, soft // 2)


class _Refuse(asyncio.Protocol):
    """A connection over the cap: answered 503 and closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(REFUSED)
        transport.close()


class CappedSite(web.TCPSite):
    """A TCP listener that holds at most ``max_connections`` connections of its runner.

    The count is the runner's connections, which a connection joins once set up: those
    accepted in one burst (at most the listen backlog) or still in their TLS handshake
    (at most 60 s) may pass the cap by that many.
    """

    def __init__(self, runner: web.AppRunner, *args: Any, max_connections: int, **kw: Any) -> None:
        super().__init__(runner, *args, **kw)
        self.max_connections = max_connections

    async def start(self) -> None:
        """Listen, as TCPSite does, with the cap in front of the runner's server."""
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.BaseProtocol:
            if len(server.connections) >= self.max_connections:
                return _Refuse()
            return server()

        self._server = await asyncio.get_running_loop().create_server(
            protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
