"""End-to-end pieces for tunnel tests: TLS material, an aggregator, agents, a toy agent app."""

from __future__ import annotations

import asyncio
import pathlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import trustme
from aiohttp import web

from kubeprober.aggregator.tokens import TokenStore, new_token
from kubeprober.aggregator.tunnel_server import TunnelServer, TunnelServerSettings
from kubeprober.exporter.tunnel_client import TunnelClient, TunnelClientSettings
from kubeprober.pacing import BackoffSettings
from kubeprober.tunnel import SessionSettings

SESSION = SessionSettings(
    ping_interval=0.2, dead_peer_timeout=1.5, open_timeout=2.0, write_timeout=5.0, close_timeout=0.5
)
CLIENT = TunnelClientSettings(
    backoff=BackoffSettings(initial=0.05, maximum=0.5, floor=0.0),
    stable_after=2.0,
    connect_timeout=1.0,
    session=SESSION,
)


@dataclass
class Tls:
    """A throwaway CA, a server context for 127.0.0.1, and the CA file agents trust."""

    server: ssl.SSLContext
    ca_file: pathlib.Path


def make_tls(directory: pathlib.Path) -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Tls(server, ca_file)


HANGING = web.AppKey("hanging", asyncio.Event)
"""Set by toy_app's /hang once a request to it has arrived."""


def toy_app() -> web.Application:
    """A small agent app: fast, slow, big and never-ending answers."""
    release = asyncio.Event()
    hanging = asyncio.Event()

    async def small(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "path": request.path})

    async def hang(request: web.Request) -> web.Response:
        hanging.set()
        # Wait until released or until the caller is gone (aiohttp does not cancel handlers).
        while not release.is_set():
            if request.transport is None or request.transport.is_closing():
                break
            await asyncio.sleep(0.05)
        return web.Response(text="released")

    async def big(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", str(20 * 1024 * 1024)))
        response = web.StreamResponse()
        response.content_length = size
        await response.prepare(request)
        chunk = b"b" * 65536
        sent = 0
        while sent < size:
            part = chunk[: size - sent]
            await response.write(part)
            sent += len(part)
        return response

    app = web.Application()
    app[HANGING] = hanging
    app.router.add_get("/small", small)
    app.router.add_get("/hang", hang)
    app.router.add_get("/big", big)
    return app


@dataclass
class Aggregator:
    """A TunnelServer on its own TLS listener, restartable on the same port."""

    tls: Tls
    tokens: TokenStore = field(default_factory=TokenStore)
    settings: TunnelServerSettings = field(
        default_factory=lambda: TunnelServerSettings(session=SESSION)
    )
    port: int = 0
    events: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)
    server: TunnelServer | None = None
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def on_event(cluster: str, event: Mapping[str, Any]) -> None:
            self.events.append((cluster, event))

        self.server = TunnelServer(self.tokens, self.settings, on_event=on_event)
        app = web.Application()
        self.server.add_routes(app)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=self.tls.server)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def add_cluster(self, name: str, directory: pathlib.Path) -> pathlib.Path:
        """Register a cluster and return its agent's token file."""
        token = new_token(name)
        self.tokens.set(name, str(token))
        path = directory / f"{name}.token"
        path.write_text(f"{token}\n")
        return path


def make_agent(
    port: int,
    token_file: pathlib.Path,
    tls: Tls,
    *,
    app: web.Application | web.Server | None = None,
) -> TunnelClient:
    return TunnelClient(
        f"wss://127.0.0.1:{port}",
        app if app is not None else toy_app(),
        token_file=token_file,
        ca_file=tls.ca_file,
        settings=CLIENT,
    )


async def wait_until(predicate: Any, within: float, what: str) -> None:
    """Poll ``predicate`` every 10 ms until true; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)
