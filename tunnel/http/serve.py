"""Serve an aiohttp web.Application on incoming `agent` streams, in-process.

Exists so the agent answers the aggregator with the very app it serves locally (same routes,
middlewares, metrics) without opening a loopback socket. Must not decide which targets exist:
the caller registers :meth:`AppServer.handle` under a target name. Uses only aiohttp's public
runner API (``web.AppRunner`` and its ``server``), so no aiohttp release pin is needed.
"""

from __future__ import annotations

from aiohttp import web

from kubeprober.tunnel.http.transport import StreamTransport
from kubeprober.tunnel.stream import Stream

IDLE_TIMEOUT = 75.0
"""Seconds a connection may sit without a complete request (before the first one, between
two, or sending its headers a byte at a time) before it is closed. aiohttp's own default is
an hour, which lets a few slow clients hold a server's descriptors."""


class AppServer:
    """Run an aiohttp app's request handler on tunnel streams.

    Give it an application of its own, which it starts and cleans up, or the ``server`` of
    a ``web.AppRunner`` already serving the app elsewhere (the agent's own listener), which
    it shares: an application runs its startup once.
    """

    def __init__(
        self,
        app: web.Application | web.Server,
        *,
        keepalive_timeout: float = IDLE_TIMEOUT,
        cancel_on_close: bool = False,
    ) -> None:
        self._app = app
        # seconds an idle keep-alive connection stays open; aiohttp's default
        self._keepalive_timeout = keepalive_timeout
        # cancel a handler whose stream ends under it (a proxied watch must not outlive it)
        self._cancel_on_close = cancel_on_close
        self._runner: web.AppRunner | None = None
        self._server: web.Server | None = None
        self._active: set[StreamTransport] = set()

    async def start(self) -> None:
        """Prepare the request handler; run the app's startup only if it is ours."""
        if isinstance(self._app, web.Server):
            self._server = self._app
            return
        if self._app.frozen:
            raise ValueError(
                "AppServer: this application is already started; pass its runner's server"
            )
        self._runner = web.AppRunner(
            self._app,
            access_log=None,
            keepalive_timeout=self._keepalive_timeout,
            handler_cancellation=self._cancel_on_close,
        )
        await self._runner.setup()
        self._server = self._runner.server

    async def handle(self, stream: Stream) -> None:
        """Serve HTTP/1.1 on ``stream`` until either side closes it (a TargetHandler)."""
        if self._server is None:
            raise RuntimeError("AppServer.start() was not awaited")
        protocol = self._server()
        transport = StreamTransport(
            stream, protocol, extra={"peername": ("tunnel", stream.id), "sockname": ("agent", 0)}
        )
        self._active.add(transport)
        try:
            await transport.run()
        finally:
            self._active.discard(transport)

    async def close(self) -> None:
        """Drop open connections and run the app's cleanup if we ran its startup."""
        for transport in list(self._active):
            transport.abort()
        if self._runner is not None and self._server is not None:  # a shared one is not ours
            await self._server.shutdown(0.1)
            await self._runner.cleanup()
            self._runner = None
