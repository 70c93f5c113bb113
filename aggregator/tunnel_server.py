"""The aggregator's end of the reverse tunnel: accept agents on ``/api/v1/tunnel``.

Exists to turn an authenticated WebSocket into a registered tunnel session per cluster: the
token is checked *before* the upgrade (401, nothing registered), the cluster name comes from the
token, a newer session replaces an older one, and concurrent handshakes are capped (503 +
Retry-After) so a reconnect storm cannot swamp the process. Aggregator code reaches an agent
through :meth:`TunnelServer.client` (HTTP over `agent` streams) and hears change notices
through ``on_event``. Must not know what the aggregator does with either.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from kubeprober.aggregator.auth import bearer
from kubeprober.aggregator.tokens import InvalidToken, TokenStore, parse_token
from kubeprober.tasks import spawn, stop
from kubeprober.tunnel import (
    PROCESS_BUDGET,
    SUBPROTOCOL,
    ByteBudget,
    Session,
    SessionSettings,
    Stream,
    WebSocketTransport,
)
from kubeprober.tunnel.http.client import AgentClient, decode_json
from kubeprober.tunnel.transport import MAX_WS_MESSAGE

log = logging.getLogger("kubeprober.aggregator.tunnel")

PATH = "/api/v1/tunnel"
EVENTS_TARGET = "events"
# Largest change notice, in bytes; notices are small JSON objects, this only bounds a bad agent.
MAX_EVENT = 64 * 1024

EventCallback = Callable[[str, Mapping[str, Any]], Awaitable[None]]
ClusterCallback = Callable[[str], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class TunnelServerSettings:
    """Limits of the tunnel endpoint."""

    # handshakes (auth + upgrade + session setup) in progress at once; beyond it agents get 503
    # and retry with jitter, which spreads a reconnect storm instead of queueing it
    max_handshakes: int = 64
    # seconds an agent refused with 503 is asked to wait (it adds its own jittered backoff)
    retry_after: int = 5
    # per-session protocol settings (pings, windows, budgets)
    session: SessionSettings = field(default_factory=SessionSettings)


class TunnelServer:
    """Accept agent sessions and hand out HTTP clients that reach them."""

    def __init__(
        self,
        tokens: TokenStore,
        settings: TunnelServerSettings | None = None,
        *,
        on_event: EventCallback | None = None,
        on_connect: ClusterCallback | None = None,
        on_disconnect: ClusterCallback | None = None,
        budget: ByteBudget | None = None,
    ) -> None:
        self.tokens = tokens
        self.settings = settings or TunnelServerSettings()
        self._on_event = on_event
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._budget = budget or PROCESS_BUDGET
        self._sessions: dict[str, Session] = {}  # owned by handler tasks: newest session wins
        self._handshakes = 0
        self._closing = False
        self._callbacks: set[asyncio.Task[None]] = set()

    def add_routes(self, app: web.Application) -> None:
        """Serve PATH on ``app`` and close every session when the app shuts down."""
        app.router.add_get(PATH, self.handle)

        async def on_shutdown(_: web.Application) -> None:
            await self.close()

        app.on_shutdown.append(on_shutdown)

    def session(self, cluster: str) -> Session | None:
        """Return the live session of ``cluster``, or None."""
        session = self._sessions.get(cluster)
        return None if session is None or session.closed else session

    @property
    def clusters(self) -> list[str]:
        """Return the names of connected clusters."""
        return sorted(c for c, s in self._sessions.items() if not s.closed)

    def client(self, **kwargs: Any) -> AgentClient:
        """Return an HTTP client that reaches agents by cluster name."""
        return AgentClient(self.session, **kwargs)

    async def close(self) -> None:
        """Send GoAway to every agent, wait for their sessions and callbacks to end."""
        self._closing = True
        await asyncio.gather(*(s.close() for s in list(self._sessions.values())))
        await stop(self._callbacks)

    def _claim(self, token: str | None) -> str:
        """Say what a refused token claimed to be, for the log; never its secret."""
        if token is None:
            return "a request without a bearer token"
        try:
            cluster = parse_token(token).cluster
        except InvalidToken:
            return "a malformed token"
        known = "wrong secret" if cluster in self.tokens else "no such cluster defined"
        return f"a token for cluster {cluster} ({known})"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Authenticate, upgrade, register and run one agent session."""
        if self._closing:
            raise web.HTTPServiceUnavailable(headers={"Retry-After": "1"})
        if self._handshakes >= self.settings.max_handshakes:
            raise web.HTTPServiceUnavailable(
                text="too many tunnel handshakes in progress\n",
                headers={"Retry-After": str(self.settings.retry_after)},
            )
        self._handshakes += 1
        try:
            token = bearer(request.headers.get("Authorization"))
            cluster = self.tokens.verify(token) if token is not None else None
            if cluster is None:
                log.warning("tunnel: refused %s from %s", self._claim(token), request.remote)
                what = "invalid tunnel token" if token is not None else "tunnel token required"
                raise web.HTTPUnauthorized(text=what + "\n", headers={"WWW-Authenticate": "Bearer"})
            offered = request.headers.get("Sec-WebSocket-Protocol", "")
            if SUBPROTOCOL not in (p.strip() for p in offered.split(",")):
                raise web.HTTPBadRequest(text=f"subprotocol {SUBPROTOCOL} required\n")
            ws = web.WebSocketResponse(
                protocols=(SUBPROTOCOL,),
                heartbeat=None,  # liveness is the session's pings
                compress=False,
                max_msg_size=MAX_WS_MESSAGE,
                timeout=self.settings.session.close_timeout,  # for the close handshake
            )
            await ws.prepare(request)
        finally:
            self._handshakes -= 1
        session = Session(
            WebSocketTransport(ws),
            False,
            targets={EVENTS_TARGET: self._events_target(cluster)},
            settings=self.settings.session,
            budget=self._budget,
            name=cluster,
        )
        previous = self._sessions.get(cluster)
        self._sessions[cluster] = session
        session.start()
        log.info("tunnel: cluster %s connected from %s", cluster, request.remote)
        if previous is not None:
            log.info("tunnel: cluster %s reconnected; closing its older session", cluster)
            await previous.close()
        self._callback(self._on_connect, cluster)
        try:
            await session.wait_closed()
        finally:
            await session.close()
            if self._sessions.get(cluster) is session:
                del self._sessions[cluster]
                log.info("tunnel: cluster %s disconnected: %s", cluster, session.error)
                self._callback(self._on_disconnect, cluster)
        return ws

    def _callback(self, callback: ClusterCallback | None, cluster: str) -> None:
        """Run a connect/disconnect callback in its own guarded task."""
        if callback is None or self._closing:
            return
        task = spawn(callback(cluster), f"tunnel-callback:{cluster}")
        self._callbacks.add(task)
        task.add_done_callback(self._callbacks.discard)

    def _events_target(self, cluster: str) -> Callable[[Stream], Awaitable[None]]:
        """Return the `events` target handler for one cluster's session."""

        async def events(stream: Stream) -> None:
            # One JSON object per line; credit flows back only as lines are handled.
            pending = b""
            while chunk := await stream.read():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                if len(pending) > MAX_EVENT:
                    log.warning("tunnel: cluster %s sent an oversized event", cluster)
                    stream.reset()
                    return
                for line in lines:
                    await self._dispatch_event(cluster, line)

        return events

    async def _dispatch_event(self, cluster: str, line: bytes) -> None:
        if not line.strip() or self._on_event is None:
            return
        try:
            event = decode_json(line)
        except ValueError:
            log.warning("tunnel: cluster %s sent an event that is not JSON", cluster)
            return
        if not isinstance(event, dict):
            log.warning("tunnel: cluster %s sent an event that is not an object", cluster)
            return
        try:
            await self._on_event(cluster, event)
        except Exception:
            log.exception("tunnel: on_event failed for cluster %s", cluster)
