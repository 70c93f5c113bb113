"""A TLS pass-through variant of the fault proxy, for faults below HTTP.

Bytes go through untouched, so the client's TLS session (and client certificate) reaches the
upstream itself; in exchange no HTTP error can be injected. Use it to test connection-level
behaviour with the upstream's real identity: latency, long-lived connections dropped, every
connection cut, new connections refused. ``FaultProxy`` covers HTTP errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from .netutil import wind_down


class TcpFaultProxy:
    """Loopback TCP proxy in front of the cluster; control methods are thread-safe."""

    def __init__(self, upstream_kubeconfig: Path, workdir: Path) -> None:
        self.workdir = workdir
        self.raw = yaml.safe_load(upstream_kubeconfig.read_text())
        ctx_name = self.raw.get("current-context")
        ctx = next(c["context"] for c in self.raw["contexts"] if c["name"] == ctx_name)
        self.cluster = next(
            c["cluster"] for c in self.raw["clusters"] if c["name"] == ctx["cluster"]
        )
        url = urllib.parse.urlsplit(self.cluster["server"])
        self.upstream = (url.hostname or "127.0.0.1", url.port or 443)
        self.port = 0
        self.latency = 0.0
        # Owned by the proxy loop: open connections -> (client writer, start time).
        self._conns: dict[asyncio.Task[None], tuple[asyncio.StreamWriter, float]] = {}
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kube-tcp-fault-proxy", daemon=True
        )

    @property
    def kubeconfig(self) -> Path:
        """Return the kubeconfig that goes through the proxy (same CA and credentials)."""
        return self.workdir / "kubeconfig-tcp-fault-proxy"

    def start(self) -> TcpFaultProxy:
        """Start listening and write the kubeconfig."""
        self._thread.start()
        self._call(self._listen(True))
        config = dict(self.raw)
        clusters = []
        for c in self.raw["clusters"]:
            cluster = dict(c["cluster"])
            if c["cluster"] is self.cluster:
                cluster["server"] = f"https://127.0.0.1:{self.port}"
                # The upstream certificate names the upstream host, not our address.
                if self.upstream[0] not in ("127.0.0.1", "localhost"):
                    cluster.setdefault("tls-server-name", self.upstream[0])
            clusters.append({"name": c["name"], "cluster": cluster})
        config["clusters"] = clusters
        self.kubeconfig.write_text(yaml.safe_dump(config))
        return self

    def stop(self) -> None:
        """Close everything and join the thread."""
        if not self._thread.is_alive():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        self._loop.close()

    def delay(self, seconds: float) -> None:
        """Delay each new connection by seconds before it reaches the upstream."""
        self.latency = seconds

    def drop_watches(self, older_than: float = 1.0) -> int:
        """Abort connections open longer than older_than seconds (watches, keep-alives)."""
        return int(self._call(self._abort(older_than)))

    def cut(self) -> int:
        """Abort every connection."""
        return int(self._call(self._abort(-1.0)))

    def refuse(self, on: bool = True) -> None:
        """Stop (or resume) accepting connections."""
        self._call(self._listen(not on))

    def clear(self) -> None:
        """Remove latency and refusal."""
        self.latency = 0.0
        self.refuse(False)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _listen(self, on: bool) -> None:
        if on and self._server is None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]
        elif not on and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _abort(self, older_than: float) -> int:
        now = time.monotonic()
        victims = [t for t, (_, start) in self._conns.items() if now - start > older_than]
        for task in victims:
            writer = self._conns[task][0]
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*victims, return_exceptions=True)
        return len(victims)

    async def _stop(self) -> None:
        await self._listen(False)
        await self._abort(-1.0)
        await wind_down()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = (writer, time.monotonic())
        up_w: asyncio.StreamWriter | None = None
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            up_r, up_w = await asyncio.open_connection(*self.upstream)
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
        except OSError:
            pass
        finally:
            self._conns.pop(task, None)
            for w in (up_w, writer):
                if w is not None:
                    w.transport.abort()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
