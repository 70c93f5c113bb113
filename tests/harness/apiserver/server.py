"""Run the test API server over HTTPS in a background thread and write its kubeconfig.

One thread with its own event loop serves both sync clients (kubectl, the kubernetes client)
and asyncio tests; :meth:`ApiServer.stop` closes watches, cancels the controllers and joins
the thread so pytest's ``filterwarnings = error`` sees nothing left open.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trustme
import yaml
from aiohttp import web

from ..netutil import abort_connections
from .controllers import ControllerManager
from .handlers import Handlers
from .objects import Objects
from .resources import Registry
from .store import Store
from .workloads import RECONCILERS

T = TypeVar("T")


@dataclass
class Settings:
    """Knobs of the test server."""

    # Seconds the controllers wait after a change: like a real controller-manager, not instant.
    controller_delay: float = 0.1
    # Events kept for watch replay; older resourceVersions get 410 Gone.
    watch_window: int = 2000
    # Seconds between BOOKMARK events on watches that allow them (a real server: ~1 min).
    bookmark_interval: float = 2.0


def write_kubeconfig(
    path: Path, *, server: str, ca_pem: bytes, token: str, name: str = "kubeprober-test"
) -> Path:
    """Write a kubeconfig with one cluster, a bearer-token user and a current context."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}
        ],
        "current-context": name,
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config))
    return path


class ApiServer:
    """The API test server on a free loopback port, run in a thread."""

    def __init__(self, workdir: Path, settings: Settings | None = None) -> None:
        self.workdir = workdir
        self.settings = settings or Settings()
        self.ca = trustme.CA()
        self.ca_pem = self.ca.cert_pem.bytes()
        self.token = secrets.token_urlsafe(24)
        self.registry = Registry()
        self.store: Store | None = None
        self.api: Objects | None = None
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="kube-test-apiserver", daemon=True)
        self._started = threading.Event()
        self._runner: web.AppRunner | None = None
        self._controllers: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Return the https URL of the server."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        """Return the path of the kubeconfig written by start()."""
        return self.workdir / "kubeconfig"

    def start(self) -> ApiServer:
        """Start serving; return once the port is bound and the kubeconfig written."""
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise RuntimeError("test API server failed to start") from self._error
        write_kubeconfig(self.kubeconfig, server=self.url, ca_pem=self.ca_pem, token=self.token)
        return self

    def stop(self) -> None:
        """Stop serving, close watches and join the thread."""
        if not self._thread.is_alive():
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop)
        fut.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()

    def call(self, fn: Callable[[], T]) -> T:
        """Run fn on the server loop (for direct state inspection in tests) and return."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def run(self, coro: Awaitable[T]) -> T:
        """Run a coroutine on the server loop and return its result."""

        async def wrapper() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._startup())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.loop.run_forever()

    async def _startup(self) -> None:
        self.store = Store(self.registry, window=self.settings.watch_window)
        self.api = Objects(self.store, self.registry)
        handlers = Handlers(
            self.api, token=self.token, bookmark_interval=self.settings.bookmark_interval
        )
        app = web.Application(middlewares=[handlers.middleware], client_max_size=64 * 2**20)
        app.add_routes(handlers.routes())
        self._runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost", "kubernetes.default.svc").configure_cert(ctx)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            ns_rt = self.registry.get("", "v1", "namespaces")
            assert ns_rt is not None
            self.api.create(ns_rt, "", {"metadata": {"name": name}})
        cm = ControllerManager(
            self.api, list(RECONCILERS), delay=self.settings.controller_delay, ca_pem=self.ca_pem
        )
        self._controllers = asyncio.get_running_loop().create_task(
            cm.run(), name="kube-controllers"
        )
        self._seed_service()

    def _seed_service(self) -> None:
        """Create the default/kubernetes Service, as the apiserver does for itself."""
        assert self.api is not None
        svc_rt = self.registry.get("", "v1", "services")
        assert svc_rt is not None
        self.api.create(
            svc_rt,
            "default",
            {
                "metadata": {
                    "name": "kubernetes",
                    "labels": {"component": "apiserver", "provider": "kubernetes"},
                },
                "spec": {
                    "clusterIP": "127.0.101.1",
                    "ports": [{"name": "https", "port": 443, "targetPort": self.port}],
                },
            },
        )

    async def _shutdown(self) -> None:
        if self.store is not None:
            self.store.close_watchers()
        if self._controllers is not None:
            self._controllers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._controllers
        if self._runner is not None:
            # Let watch handlers see the close and finish, then drop what is left.
            await asyncio.sleep(0.05)
            abort_connections(self._runner)
            await self._runner.cleanup()


def state(server: ApiServer) -> dict[str, Any]:
    """Return a few counters for debugging a test run."""
    assert server.store is not None
    return {
        "resourceVersion": server.store.rv,
        "objects": sum(len(b) for b in server.store.objects.values()),
    }
