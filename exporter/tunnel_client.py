"""The agent's end of the reverse tunnel: dial the aggregator and keep the session up.

Exists because only the agent can open connections (managed clusters sit behind NAT and
firewalls): it dials ``wss://<aggregator>/api/v1/tunnel`` with its token, serves the `agent`
target from its own aiohttp app in-process, sends change notices on an `events` stream, and
reconnects with exponential backoff and full jitter. Must not know what the app serves or what
the notices mean; it never accepts plaintext to a remote host unless told to, loudly.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from kubeprober.exporter.api_proxy import TARGET as API_PROXY_TARGET
from kubeprober.outage import Outage
from kubeprober.pacing import Backoff, BackoffSettings
from kubeprober.tasks import spawn, stop
from kubeprober.tunnel import (
    SUBPROTOCOL,
    Session,
    SessionSettings,
    Stream,
    TunnelError,
    WebSocketTransport,
)
from kubeprober.tunnel.http.serve import AppServer
from kubeprober.tunnel.targets import TargetHandler
from kubeprober.tunnel.transport import MAX_WS_MESSAGE

log = logging.getLogger("kubeprober.exporter.tunnel")

PATH = "/api/v1/tunnel"


@dataclass(frozen=True, slots=True)
class TunnelClientSettings:
    """Reconnect policy and session tunables of the agent."""

    # reconnect delays: full jitter (a fleet restarted together spreads out the most) below a
    # ceiling from 1 s doubling to 60 s, so agents return within a minute of an outage
    backoff: BackoffSettings = field(
        default_factory=lambda: BackoffSettings(initial=1.0, maximum=60.0, floor=0.0)
    )
    # seconds a session must have lived for the backoff to start again from its first ceiling
    stable_after: float = 60.0
    # seconds for TCP + TLS + HTTP upgrade; a healthy aggregator answers in well under one
    connect_timeout: float = 10.0
    # per-session protocol settings (pings, windows, budgets)
    session: SessionSettings = field(default_factory=SessionSettings)


class InsecureTunnel(ValueError):
    """Raise when asked for plaintext to a non-loopback host without ``--insecure``."""


def tunnel_url(aggregator: str, *, insecure: bool = False) -> URL:
    """Return the tunnel URL for an aggregator URL; refuse ws:// to remote hosts."""
    url = URL(aggregator)
    if url.scheme not in ("ws", "wss"):
        raise ValueError(f"aggregator URL must be wss:// (or ws:// on loopback), got {url}")
    host = url.host
    if not host:
        raise ValueError(f"aggregator URL has no host: {url}")
    if url.path in ("", "/"):
        url = url.with_path(PATH)
    if url.scheme == "ws" and not _is_loopback(host):
        if not insecure:
            raise InsecureTunnel(
                f"refusing plaintext ws:// to {url.host}: use wss://, or --insecure to send the "
                "token in clear"
            )
        log.warning(
            "INSECURE: the tunnel to %s is plaintext ws://; the token and all traffic can be "
            "read and altered on the way",
            url.host,
        )
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def proxy_for(url: URL) -> URL | None:
    """Return the proxy for ``url`` from HTTPS_PROXY/HTTP_PROXY, honouring NO_PROXY."""
    # aiohttp's trust_env looks up WSS_PROXY for wss:// URLs; operators set HTTPS_PROXY.
    if url.host is None or urllib.request.proxy_bypass(url.host):
        return None
    proxies = urllib.request.getproxies()
    scheme = "https" if url.scheme == "wss" else "http"
    raw = proxies.get(url.scheme) or proxies.get(scheme)
    return URL(raw) if raw else None


class TunnelClient:
    """Keep one tunnel session to the aggregator up, serving ``app`` on `agent` streams."""

    def __init__(
        self,
        aggregator: str,
        app: web.Application | web.Server,
        *,
        token_file: str | Path,
        ca_file: str | Path | None = None,
        insecure: bool = False,
        settings: TunnelClientSettings | None = None,
        api_proxy: web.Application | None = None,
    ) -> None:
        self.url = tunnel_url(aggregator, insecure=insecure)
        self.settings = settings or TunnelClientSettings()
        self._token_file = Path(token_file)
        self._ca_file = Path(ca_file) if ca_file else None
        self._app_server = AppServer(app)
        # the `kube-api` target, served only when the agent accepts the API proxy
        self._api_server = (
            AppServer(api_proxy, cancel_on_close=True) if api_proxy is not None else None
        )
        self._http: aiohttp.ClientSession | None = None
        self._session: Session | None = None  # owned by the run task
        self._events: Stream | None = None
        self._events_lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connects = 0  # sessions established since start, for tests and logs
        self._outage = Outage(log, f"tunnel to {self.url.host}")  # owned by the run task

    @property
    def connected(self) -> bool:
        """Return True while a session is up (exported as kubeprober_agent_tunnel_connected)."""
        return self._session is not None and not self._session.closed

    @property
    def session(self) -> Session | None:
        """Return the current session, if any."""
        return self._session if self.connected else None

    async def start(self) -> None:
        """Prepare the app handler and start dialing in the background."""
        await self._app_server.start()
        if self._api_server is not None:
            await self._api_server.start()
        self._http = aiohttp.ClientSession(trust_env=True)
        self._task = spawn(self._run(), f"tunnel-client:{self.url.host}")

    async def close(self) -> None:
        """Say GoAway, stop reconnecting, release everything."""
        if self._task is not None:
            await stop([self._task])
            self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        await self._app_server.close()
        if self._api_server is not None:
            await self._api_server.close()

    async def wait_connected(self) -> Session:
        """Wait until a session is up and return it."""
        while True:
            await self._connected.wait()
            session = self.session
            if session is not None:
                return session
            await asyncio.sleep(0.01)

    async def notify(self, event: Mapping[str, Any]) -> bool:
        """Send one change notice on the `events` stream; False if not connected (dropped)."""
        line = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        async with self._events_lock:
            session = self.session
            if session is None:
                return False
            try:
                if self._events is None or self._events.at_eof:
                    self._events = await session.open("events")
                await self._events.write(line)
            except TunnelError as exc:
                log.info("tunnel: change notice not sent: %s", exc)
                self._events = None
                return False
            return True

    # -- reconnect loop -------------------------------------------------------------------

    async def _run(self) -> None:
        """Dial, serve until the session ends, back off with full jitter, repeat."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(self.settings.backoff)
        while True:
            started = loop.time()
            retry_after = 0.0
            error = ""
            try:
                await self._connect_once()
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 401:
                    log.error("tunnel: aggregator rejected our token (401); check the token file")
                else:
                    error = f"handshake failed: {exc.status} {exc.message}"
                retry_after = _retry_after(exc)
            except (aiohttp.ClientError, TunnelError, OSError, TimeoutError) as exc:
                error = f"connection failed: {str(exc) or repr(exc)}"
            delay = reconnect_delay(
                backoff,
                lived=loop.time() - started,
                retry_after=retry_after,
                stable_after=self.settings.stable_after,
            )
            if error:
                self._outage.failed(error, delay)  # one line per outage, not one per dial
            log.debug("tunnel: reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)

    def _targets(self) -> dict[str, TargetHandler]:
        targets: dict[str, TargetHandler] = {"agent": self._app_server.handle}
        if self._api_server is not None:
            targets[API_PROXY_TARGET] = self._api_server.handle
        return targets

    async def _connect_once(self) -> None:
        """Run one session from dial to end."""
        assert self._http is not None
        token = self._token_file.read_text().strip()
        ssl_ctx: ssl.SSLContext | bool = True
        if self._ca_file is not None:
            ssl_ctx = ssl.create_default_context(cafile=str(self._ca_file))
        async with asyncio.timeout(self.settings.connect_timeout):
            ws = await self._http.ws_connect(
                self.url,
                protocols=(SUBPROTOCOL,),
                headers={"Authorization": f"Bearer {token}"},
                ssl=ssl_ctx,
                proxy=proxy_for(self.url),
                heartbeat=None,  # liveness is the session's pings
                autoping=True,
                compress=0,  # frames are often already compressed; never pay deflate per byte
                max_msg_size=MAX_WS_MESSAGE,
                # a dead aggregator never answers the close frame: do not wait aiohttp's 10 s
                timeout=aiohttp.ClientWSTimeout(ws_close=self.settings.session.close_timeout),
            )
        session = Session(
            WebSocketTransport(ws),
            True,
            targets=self._targets(),
            settings=self.settings.session,
            name=f"aggregator:{self.url.host}",
        )
        session.start()
        self._session = session
        self._events = None
        self.connects += 1
        self._connected.set()
        self._outage.succeeded()
        log.info("tunnel: connected to %s", self.url)
        try:
            await session.wait_closed()
        finally:
            self._connected.clear()
            self._session = None
            await session.close()  # also closes the WebSocket, within close_timeout
        log.warning("tunnel: session ended: %s", session.error)


def reconnect_delay(
    backoff: Backoff, *, lived: float, retry_after: float, stable_after: float
) -> float:
    """Seconds before the next dial; the ceiling starts over after a session that lived long.

    A 503's Retry-After is honoured (never beyond the backoff's maximum).
    """
    if lived >= stable_after:
        backoff.reset()
    return backoff.next_delay(at_least=retry_after)


def _retry_after(exc: aiohttp.WSServerHandshakeError) -> float:
    """Return the Retry-After seconds of a 503, or 0."""
    if exc.status != 503 or exc.headers is None:
        return 0.0
    try:
        return float(exc.headers.get("Retry-After", "0"))
    except ValueError:
        return 0.0
