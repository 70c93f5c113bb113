"""An aiohttp connector that sends HTTP/1.1 over `agent` streams of a named cluster's session.

Exists so aggregator code talks to an agent with a plain ``aiohttp.ClientSession`` and a URL
such as ``http://moon/status``: the URL's host is the cluster name, the pool key, so keep-alive
connections are reused per cluster. Must not know how sessions are accepted or authenticated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.client_proto import ResponseHandler

from tunnel.aio_transport import StreamTransport
from tunnel.errors import TunnelError
from tunnel.session import Session

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace

AGENT_TARGET = "agent"


class TunnelUnavailable(aiohttp.ClientConnectionError):
    """Raise when a cluster has no usable session or refused the stream."""


class TunnelConnector(aiohttp.BaseConnector):
    """Open `agent` streams on the session of the cluster named by the URL's host."""

    def __init__(
        self,
        lookup: Callable[[str], Session | None],
        *,
        keepalive_timeout: float = 30.0,
        limit_per_host: int = 8,
        **kwargs: Any,
    ) -> None:
        # keepalive_timeout: seconds an idle stream stays pooled, shorter than the agent's 75 s
        # so we close first; limit_per_host: concurrent requests per cluster, bounding streams
        super().__init__(
            keepalive_timeout=keepalive_timeout, limit_per_host=limit_per_host, **kwargs
        )
        self._lookup = lookup
        self._transports: set[StreamTransport] = set()

    async def _create_connection(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> ResponseHandler:
        """Open an `agent` stream to the cluster named by ``req.url.host``."""
        cluster = req.url.raw_host or ""
        session = self._lookup(cluster)
        if session is None or session.closed:
            raise TunnelUnavailable(f"cluster {cluster!r} is not connected")
        try:
            stream = await session.open(AGENT_TARGET)
        except TunnelError as exc:
            raise TunnelUnavailable(f"cluster {cluster!r}: {exc}") from exc
        protocol = ResponseHandler(asyncio.get_running_loop())
        transport = StreamTransport(
            stream,
            protocol,
            extra={"peername": (cluster, 0), "sockname": ("aggregator", 0)},
            on_lost=self._transports.discard,
        )
        self._transports.add(transport)
        transport.start()
        return protocol

    def close(self, *, abort_ssl: bool = False) -> Awaitable[None]:
        """Close pooled connections and stop every stream pump."""
        return self._close_all(super().close(abort_ssl=abort_ssl))

    async def _close_all(self, closing: Awaitable[None]) -> None:
        await closing
        for transport in list(self._transports):
            transport.abort()
            await transport.stop()
        self._transports.clear()
