"""Raw HTTP requests to the API server as another user (impersonation), answers unread.

Exists for the agent's `kube-api` tunnel target (exporter/api_proxy.py), which passes an
operator's kubectl requests through byte for byte: :class:`~.api.KubeApi` decodes JSON and
reads whole answers, this streams them. It reuses the API client's server, TLS and credentials
(the bearer token refreshed as the client would) and always adds ``Impersonate-User``, so no
request leaves with the agent's own rights. Must not decide which requests may pass.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from kubernetes import client
from yarl import URL


def _ssl(cfg: Any) -> ssl.SSLContext | bool:
    """TLS to the API server as the kubernetes client would set it up."""
    if not cfg.verify_ssl:
        return False
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    return ctx


class Passthrough:
    """Send requests to the API server as ``user``; open with :meth:`start`, then
    ``async with passthrough.request(...) as answer``."""

    def __init__(
        self, configuration: client.Configuration, *, user: str, connect_timeout: float = 5.0
    ) -> None:
        self._cfg: Any = configuration  # untyped in the client
        self._base = URL(str(self._cfg.host))
        self.user = user
        self._connect_timeout = connect_timeout
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the connection pool."""
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=_ssl(self._cfg)),
            auto_decompress=False,  # gzip passes through as the API server sent it
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
        )

    async def close(self) -> None:
        """Close the pool (and any answer still open)."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    @contextlib.asynccontextmanager
    async def request(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send ``method raw_path`` (already percent-encoded, with its query) as ``user``."""
        if self._http is None:
            raise RuntimeError("Passthrough.start() was not awaited")
        sent = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        # get_api_key_with_prefix refreshes the token when the configuration says so
        # (projected ServiceAccount tokens, exec plugins)
        token = self._cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            sent["Authorization"] = token
        sent["Impersonate-User"] = self.user
        # appended, not joined: a server URL may have a path (https://host/k8s/clusters/c-1)
        url = URL(str(self._base).rstrip("/") + raw_path, encoded=True)
        async with self._http.request(
            method, url, headers=sent, data=body or None, allow_redirects=False
        ) as answer:
            yield answer


def status_answer(code: int, reason: str, message: str) -> web.Response:
    """A Kubernetes ``Status`` answer, which kubectl shows as ``Error from server (...)``: how
    both ends of the API proxy refuse a request."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.Response(status=code, text=json.dumps(body), content_type="application/json")
