"""The agent's `kube-api` tunnel target: the aggregator's requests to this cluster's API server,
made as a dedicated ServiceAccount, read-only unless told otherwise, and audited.

Exists so an operator can point plain kubectl at the aggregator and see a managed cluster
while the agent stays the only holder of credentials for it: every request is sent with
``Impersonate-User: system:serviceaccount:NS:kubeprober-api-proxy``, so the API server grants
what the cluster's admin bound to that ServiceAccount and nothing else. The API server adds the
ServiceAccount's groups itself (sending them would need ``impersonate`` on groups as well).
Read verbs only (GET, which covers get, list, watch and logs) unless built with ``write``;
connection upgrades (exec, attach, port-forward) never pass. Refusals are Kubernetes
``Status`` objects, so kubectl prints the reason. Answers stream through with the tunnel's flow
control, cut after ``max_seconds`` or ``max_bytes``. Must not decide who may ask: the
aggregator authenticates operators and names them in ``X-Kubeprober-Operator``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from kubeprober.http_server import BodyRefused, last_answer, read_body
from kubeprober.kube.passthrough import Passthrough, status_answer

log = logging.getLogger("kubeprober.exporter.audit")

TARGET = "kube-api"
SERVICE_ACCOUNT = "kubeprober-api-proxy"
OPERATOR_HEADER = "X-Kubeprober-Operator"
READ_METHODS = frozenset({"GET", "HEAD"})
# request headers passed on to the API server; everything else (Authorization, Impersonate-*,
# cookies) stays behind
_REQUEST_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
# answer headers passed back; hop-by-hop and framing headers are the tunnel's own business
_ANSWER_HEADERS = ("Content-Type", "Content-Encoding", "Warning", "Audit-Id", "Cache-Control")
# bytes of request body accepted (the API server's own limit is 3 MiB)
MAX_REQUEST_BODY = 3 * 1024 * 1024


class ApiProxyMode(enum.Enum):
    """What the agent lets the aggregator do with its cluster's API; reported in /status."""

    OFF = "off"
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class ApiProxySettings:
    """What the `kube-api` target lets through."""

    namespace: str
    """Namespace of the impersonated ServiceAccount: the agent's own."""
    service_account: str = SERVICE_ACCOUNT
    write: bool = False
    """Pass other methods than GET/HEAD (``--api-proxy-write``); RBAC still decides."""
    max_seconds: float = 1800.0
    """Seconds one answer may stream (a watch, ``logs -f``) before it is cut; kubectl's
    ``get -w`` then ends, as it does when the API server ends a watch."""
    max_bytes: int = 256 * 1024 * 1024
    """Bytes of one answer before it is cut."""

    @property
    def user(self) -> str:
        """The impersonated user name."""
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def verb(method: str, query: str) -> str:
    """The request's verb for audit lines: WATCH for a watching GET, else the method."""
    watching = any(part in ("watch=true", "watch=1") for part in query.split("&"))
    return "WATCH" if method == "GET" and watching else method


def audit(
    who: str, cluster: str, request: web.BaseRequest, code: int, size: int, started: float
) -> None:
    """One line per request: who, where, what, the answer; never a token or a body."""
    log.info(
        "api-proxy operator=%s cluster=%s verb=%s path=%s code=%d bytes=%d seconds=%.3f",
        who,
        cluster,
        verb(request.method, request.query_string),
        request.path,
        code,
        size,
        time.monotonic() - started,
    )


class ApiProxy:
    """An aiohttp app forwarding each request to the API server as the proxy ServiceAccount."""

    def __init__(self, api: Passthrough, cluster: str, settings: ApiProxySettings) -> None:
        self._api = api
        self._cluster = cluster
        self.settings = settings
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self.app.on_startup.append(self._start)
        self.app.on_cleanup.append(self._stop)

    async def _start(self, _: web.Application) -> None:
        await self._api.start()

    async def _stop(self, _: web.Application) -> None:
        await self._api.close()

    def _refusal(self, request: web.Request) -> str | None:
        """Why this request may not pass, or None."""
        if (
            request.headers.get("Upgrade")
            or "upgrade" in request.headers.get("Connection", "").lower()
        ):
            return (
                "the kube-api proxy carries no connection upgrades: exec, attach and "
                "port-forward do not pass"
            )
        if any(name.lower().startswith("impersonate-") for name in request.headers):
            return "the kube-api proxy already impersonates its ServiceAccount: drop --as"
        if request.method not in READ_METHODS and not self.settings.write:
            return (
                f"{request.method} refused: the agent of cluster {self._cluster} lets only "
                "reads through (it runs without --api-proxy-write)"
            )
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        who = request.headers.get(OPERATOR_HEADER, "-")
        refusal = self._refusal(request)
        if refusal is not None:
            audit(who, self._cluster, request, 403, 0, started)
            return status_answer(403, "Forbidden", refusal)
        try:
            body = await read_body(request, MAX_REQUEST_BODY)
        except BodyRefused as exc:
            audit(who, self._cluster, request, exc.status, 0, started)
            cut = (
                status_answer(413, "RequestEntityTooLarge", "request body larger than 3 MiB")
                if exc.status == 413
                else status_answer(408, "Timeout", exc.text)
            )
            return await last_answer(request, cut)
        headers = {n: request.headers[n] for n in _REQUEST_HEADERS if n in request.headers}
        code, sent = 502, 0
        try:
            async with self._api.request(
                request.method, request.raw_path, headers, body
            ) as upstream:
                code = upstream.status
                answer = web.StreamResponse(
                    status=upstream.status,
                    reason=upstream.reason,
                    headers={
                        n: upstream.headers[n] for n in _ANSWER_HEADERS if n in upstream.headers
                    },
                )
                await answer.prepare(request)
                # Cut at max_seconds or max_bytes: the answer then ends, as a watch does when
                # the API server ends it. Each write waits while the tunnel has no credit.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.max_seconds):
                        async for chunk in upstream.content.iter_any():
                            room = self.settings.max_bytes - sent
                            await answer.write(chunk[:room])
                            sent += min(len(chunk), room)
                            if sent >= self.settings.max_bytes:
                                break
                await answer.write_eof()
                return answer
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if code != 502:
                raise  # the answer began: all that is left is to end the stream
            return status_answer(502, "InternalError", f"API server of {self._cluster}: {exc}")
        finally:
            audit(who, self._cluster, request, code, sent, started)
