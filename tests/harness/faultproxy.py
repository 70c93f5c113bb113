"""A loopback proxy in front of the cluster under test that injects API faults on demand.

It terminates TLS with its own trustme CA (trusted by the kubeconfig it writes) and forwards
HTTP to the upstream with the upstream's own CA and client credentials, so it can answer with
injected 500s as well as delay, drop watches, cut every connection or refuse new ones. Bearer
tokens pass through in the Authorization header; client certificates are presented upstream
by the proxy itself. Works the same in front of the test server and a real kube-apiserver.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import trustme
import yaml
from aiohttp import web

from .netutil import abort_connections, wind_down

HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


@dataclass
class Fault:
    """Answer matching requests with an HTTP error instead of forwarding them."""

    status: int = 500
    # How many requests to fail (None: until cleared).
    count: int | None = None
    # Only requests whose path contains this (None: every request).
    path: str | None = None
    method: str | None = None
    # Seconds sent in a Retry-After header (None: no header), as a throttling server says.
    retry_after: float | None = None

    def matches(self, request: web.BaseRequest) -> bool:
        """Tell whether this fault applies to a request."""
        return (self.path is None or self.path in request.path_qs) and (
            self.method is None or self.method == request.method
        )


@dataclass
class Hold:
    """Keep matching requests waiting until ``released`` is set (or the proxy is cleared)."""

    path: str | None = None
    method: str | None = None
    released: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    """Set once a matching request is being held."""

    def matches(self, request: web.BaseRequest) -> bool:
        """Tell whether this hold applies to a request."""
        return Fault(path=self.path, method=self.method).matches(request)


def _read(cfg: dict[str, Any], data_key: str, file_key: str) -> bytes | None:
    if cfg.get(data_key):
        return base64.b64decode(cfg[data_key])
    if cfg.get(file_key):
        return Path(cfg[file_key]).read_bytes()
    return None


class FaultProxy:
    """The proxy; control methods are safe to call from any thread."""

    def __init__(self, upstream_kubeconfig: Path, workdir: Path) -> None:
        self.workdir = workdir
        raw = yaml.safe_load(upstream_kubeconfig.read_text())
        ctx_name = raw.get("current-context")
        ctx = next(c["context"] for c in raw["contexts"] if c["name"] == ctx_name)
        self.cluster = next(c["cluster"] for c in raw["clusters"] if c["name"] == ctx["cluster"])
        self.user = next(
            (u["user"] for u in raw.get("users") or [] if u["name"] == ctx.get("user")), {}
        )
        self.namespace = ctx.get("namespace", "default")
        self.upstream = self.cluster["server"].rstrip("/")
        self.ca = trustme.CA()
        self.port = 0
        self.seen: list[tuple[str, str]] = []
        """(method, path?query) of every request, in order of arrival; appended by the proxy."""
        self.forbidden: list[str] = []
        """"METHOD path" of every request the upstream answered 403 Forbidden (RBAC tests)."""
        self._faults: list[Fault] = []
        self._holds: list[Hold] = []
        self._latency = 0.0
        self._refusing = False
        self._lock = threading.Lock()
        # In-flight handler tasks (and which are watches); owned by the proxy loop.
        self._tasks: dict[asyncio.Task[Any], web.BaseRequest] = {}
        self._watch_tasks: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kube-fault-proxy", daemon=True
        )
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="kube-fault-proxy-")

    @property
    def kubeconfig(self) -> Path:
        """Return the kubeconfig that goes through the proxy."""
        return self.workdir / "kubeconfig-fault-proxy"

    # -- control --------------------------------------------------------------------------

    def fail(
        self,
        status: int = 500,
        *,
        count: int | None = None,
        path: str | None = None,
        method: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer matching requests with status (count times, or until clear()), with a
        ``Retry-After`` header when ``retry_after`` is given."""
        with self._lock:
            self._faults.append(Fault(status, count, path, method, retry_after))

    def hold(self, *, path: str | None = None, method: str | None = None) -> Hold:
        """Keep matching requests from going upstream until the returned hold is released."""
        hold = Hold(path, method)
        with self._lock:
            self._holds.append(hold)
        return hold

    def delay(self, seconds: float) -> None:
        """Delay every request by seconds before forwarding it."""
        self._latency = seconds

    def drop_watches(self) -> int:
        """Abort every open watch connection; return how many were dropped."""
        return self._call(self._drop_watches)

    def cut(self) -> int:
        """Abort every client connection (open requests and idle keep-alives)."""
        return self._call(self._cut)

    def refuse(self, on: bool = True) -> None:
        """Stop (or resume) accepting connections: new connects are refused."""
        self._call(self._set_listening(not on))

    def clear(self) -> None:
        """Remove every fault, hold, delay and refusal (held requests go on)."""
        with self._lock:
            self._faults.clear()
            holds, self._holds = self._holds, []
        for hold in holds:
            hold.released.set()
        self._latency = 0.0
        if self._refusing:
            self.refuse(False)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Start listening and write the proxy's kubeconfig."""
        self._thread.start()
        self._call(self._start())
        user = dict(self.user)
        for k in ("client-certificate", "client-key", "client-certificate-data", "client-key-data"):
            user.pop(k, None)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "fault-proxy",
                    "cluster": {
                        "server": f"https://127.0.0.1:{self.port}",
                        "certificate-authority-data": base64.b64encode(
                            self.ca.cert_pem.bytes()
                        ).decode(),
                    },
                }
            ],
            "users": [{"name": "fault-proxy", "user": user}],
            "contexts": [
                {
                    "name": "fault-proxy",
                    "context": {
                        "cluster": "fault-proxy",
                        "user": "fault-proxy",
                        "namespace": self.namespace,
                    },
                }
            ],
            "current-context": "fault-proxy",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        return self

    def stop(self) -> None:
        """Close everything and join the thread."""
        if not self._thread.is_alive():
            return
        with self._lock:
            holds, self._holds = self._holds, []
        for hold in holds:
            hold.released.set()
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        self._loop.close()
        self._tmp.cleanup()

    def _call(self, what: Any) -> Any:
        async def run() -> Any:
            return what() if callable(what) else await what

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def _upstream_ssl(self) -> ssl.SSLContext | bool:
        if self.cluster.get("insecure-skip-tls-verify"):
            return False
        ctx = ssl.create_default_context()
        ca = _read(self.cluster, "certificate-authority-data", "certificate-authority")
        if ca:
            ctx.load_verify_locations(cadata=ca.decode())
        cert = _read(self.user, "client-certificate-data", "client-certificate")
        key = _read(self.user, "client-key-data", "client-key")
        if cert and key:
            cert_file, key_file = Path(self._tmp.name, "c.pem"), Path(self._tmp.name, "k.pem")
            cert_file.write_bytes(cert)
            key_file.write_bytes(key)
            key_file.chmod(0o600)
            ctx.load_cert_chain(str(cert_file), str(key_file))
        return ctx

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._upstream_ssl()),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        self._runner = web.AppRunner(
            web.Application(), handle_signals=False, shutdown_timeout=0.5, access_log=None
        )
        self._runner.app.router.add_route("*", "/{tail:.*}", self._handle)
        await self._runner.setup()
        await self._set_listening(True)

    async def _set_listening(self, on: bool) -> None:
        assert self._runner is not None
        if on and self._site is None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
            self._site = web.TCPSite(
                self._runner, "127.0.0.1", self.port, ssl_context=ctx, reuse_address=True
            )
            await self._site.start()
            server = self._site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            self._refusing = False
        elif not on and self._site is not None:
            await self._site.stop()
            self._site = None
            self._refusing = True

    async def _stop(self) -> None:
        # Stop accepting first: a client retrying now must not open a connection after the
        # abort below. Then abort: a connection is forgotten once its handler ends, and ending
        # the handlers is next.
        await self._set_listening(False)
        if self._runner is not None:
            abort_connections(self._runner)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        await wind_down()

    def _drop_watches(self) -> int:
        tasks = list(self._watch_tasks)
        for task in tasks:
            self._abort(task)
        return len(tasks)

    def _abort(self, task: asyncio.Task[Any]) -> None:
        """Abort a request's client connection and stop forwarding it."""
        req = self._tasks.get(task)
        if req is not None and req.transport is not None:
            req.transport.abort()
        task.cancel()

    def _cut(self) -> int:
        assert self._runner is not None
        count = abort_connections(self._runner)
        for task in list(self._tasks):
            self._abort(task)
        return count

    # -- forwarding -----------------------------------------------------------------------

    def _fault_for(self, request: web.BaseRequest) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.matches(request):
                    if f.count is not None:
                        f.count -= 1
                        if f.count <= 0:
                            self._faults.remove(f)
                    return f
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs))
        if self._latency:
            await asyncio.sleep(self._latency)
        with self._lock:
            holds = [h for h in self._holds if h.matches(request)]
        for hold in holds:
            hold.arrived.set()
            await asyncio.to_thread(hold.released.wait)
        fault = self._fault_for(request)
        if fault is not None:
            body = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "fault injected by the test proxy",
                "reason": "TooManyRequests" if fault.status == 429 else "InternalError",
                "code": fault.status,
            }
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            return web.Response(
                text=json.dumps(body),
                status=fault.status,
                content_type="application/json",
                headers=headers,
            )
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        data = await request.read()
        watch = request.query.get("watch") in ("true", "1") or "/watch/" in request.path
        task = asyncio.current_task()
        assert task is not None
        self._tasks[task] = request
        if watch:
            self._watch_tasks.add(task)
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=data or None,
                allow_redirects=False,
            ) as up:
                if up.status == 403:
                    self.forbidden.append(f"{request.method} {request.path_qs}")
                upstream = up.connection.transport if up.connection else None
                try:
                    resp = web.StreamResponse(
                        status=up.status,
                        headers={k: v for k, v in up.headers.items() if k.lower() not in HOP},
                    )
                    await resp.prepare(request)
                    async for chunk in up.content.iter_any():
                        await resp.write(chunk)
                    await resp.write_eof()
                    return resp
                except BaseException:
                    # Cut short (client gone, stop()): drop the upstream connection. A clean
                    # TLS close waits for the server's reply, which a stopping loop never
                    # reads, and the socket would be left open.
                    if upstream is not None:
                        upstream.abort()
                    raise
        except (aiohttp.ClientError, ConnectionResetError) as exc:
            if request.transport is None or request.transport.is_closing():
                raise ConnectionResetError from exc
            return web.Response(status=502, text=f"upstream error: {exc}")
        finally:
            self._tasks.pop(task, None)
            self._watch_tasks.discard(task)
