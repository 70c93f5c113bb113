"""The aggregator's HTTP API: /status, /metrics, the run API, health, OpenAPI and the board.

Handlers read the live state of :class:`~.state.Aggregator` and never change the fleet; the
guard in front of them is :mod:`.auth`, the tunnel's own routes are :mod:`.tunnel_server`'s.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from kubeprober.aggregator import auth, board, kube_proxy
from kubeprober.aggregator.kube import FORWARDED, Holder, HolderFailed
from kubeprober.aggregator.openapi import OPENAPI
from kubeprober.aggregator.state import Aggregator
from kubeprober.aggregator.views import (
    Filters,
    entry_lines,
    unified_status,
    unified_status_bytes,
)
from kubeprober.tasks import spawn, stop
from kubeprober.tunnel import TunnelError

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RUN_TIMEOUT = 300.0
"""Seconds a probe run asked through the run API may take, the agent's answer included."""


@dataclass
class CachedBody:
    """A rendered response body and its gzip."""

    made_at: float = float("-inf")
    """``time.monotonic()`` when it was rendered."""
    body: bytes = b""
    gzipped: bytes = b""
    """Compressed in a thread with the rendering: at 10,000 clusters it takes longer than
    the readers should wait, who meanwhile are served the last one."""
    rendering: asyncio.Task[None] | None = None
    """The rendering under way, if any: readers arriving meanwhile are served the last one
    (or, when that is too old, wait for this one) rather than render (and, in Kubernetes
    mode, ask every peer) again."""


AGGREGATOR = web.AppKey("aggregator", Aggregator)
STATUS_CACHE = web.AppKey("status_cache", CachedBody)
"""The unfiltered /status as last rendered (see ``status_max_age``, ``status_serve_stale``)."""


async def get_status(request: web.Request) -> web.Response:
    """Serve the unified status, filtered by ``?cluster=&status=&layer=``; with ``history=1``,
    one cluster's, asked of its agent now."""
    try:
        filters = Filters.from_query(request.query)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    agg = request.app[AGGREGATOR]
    unknown = sorted(c for c in filters.clusters if c not in agg.views)  # not a set of them all
    if unknown:
        return web.json_response({"error": f"unknown cluster {unknown[0]!r}"}, status=404)
    if filters.history:
        (name,) = filters.clusters
        holder = _holder(agg, name, request)
        if holder is not None:  # another replica holds its tunnel, so the agent's history
            return await _on_holder(agg, name, holder, request, within=agg.settings.pull.timeout)
        return await _status_with_history(agg, filters)
    if filters.held:  # what replicas ask each other: this one's clusters, an entry a line
        held = list(agg.views.values())
        if agg.kube is not None:
            mine = agg.kube.replicas.held()
            held = [v for v in held if v.name in mine]
        body = entry_lines(held, ttl=agg.settings.offline_after, filters=filters)
        return web.Response(body=body, content_type="application/x-ndjson")
    if filters != Filters():
        body = await _status_body(agg, filters, request.headers.get("Authorization"))
        return web.Response(body=body, content_type="application/json")
    # The common case: one rendering (and one gzip) serves every reader for a second, and
    # past that while the next one is made.
    cached = request.app[STATUS_CACHE]
    age = time.monotonic() - cached.made_at
    if age > agg.settings.status_max_age:
        if cached.rendering is None:
            auth_header = request.headers.get("Authorization")
            cached.rendering = spawn(_refresh(agg, cached, auth_header), "status-rendering")
        if age > agg.settings.status_serve_stale:
            # Shielded: a reader that leaves does not cancel the others' rendering.
            await asyncio.shield(cached.rendering)
    headers = {"Content-Type": "application/json", "Vary": "Accept-Encoding"}
    if accepts_gzip(request.headers.get("Accept-Encoding", "")):
        return web.Response(body=cached.gzipped, headers={**headers, "Content-Encoding": "gzip"})
    return web.Response(body=cached.body, headers=headers)


async def _refresh(agg: Aggregator, cached: CachedBody, authorization: str | None) -> None:
    """Render the unfiltered /status into ``cached``."""
    try:
        started = time.monotonic()
        body = await _status_body(agg, Filters(), authorization)
        gzipped = await asyncio.to_thread(gzip.compress, body, compresslevel=1)
        cached.made_at, cached.body, cached.gzipped = started, body, gzipped
    finally:
        cached.rendering = None


async def _stop_rendering(app: web.Application) -> None:
    """Stop a rendering no reader waits for, before the peers' client it uses is closed."""
    rendering = app[STATUS_CACHE].rendering
    if rendering is not None:
        await stop([rendering])


async def _status_body(agg: Aggregator, filters: Filters, authorization: str | None) -> bytes:
    """The /status document of the whole fleet; ``authorization`` is the reader's, handed on
    to the peer replicas asked."""
    ttl = agg.settings.offline_after
    if agg.kube is not None:
        return await agg.kube.peers.fleet_status(
            agg.views.values(), ttl=ttl, filters=filters, authorization=authorization
        )
    if filters == Filters():
        return unified_status_bytes(agg.views.values(), ttl=ttl)
    return json.dumps(
        unified_status(agg.views.values(), ttl=ttl, filters=filters), separators=(",", ":")
    ).encode()


async def _status_with_history(agg: Aggregator, filters: Filters) -> web.Response:
    (name,) = filters.clusters
    if not agg.views[name].connected:
        error = f"cluster {name} is not connected: its agent keeps the history"
        return web.json_response({"error": error}, status=503)
    if agg.history_slots.locked():
        error = f"{agg.settings.max_history_requests} histories are being fetched; retry shortly"
        return web.json_response({"error": error}, status=503, headers={"Retry-After": "1"})
    try:
        async with agg.history_slots:
            doc = await agg.status_with_history(filters)
    except TimeoutError:
        error = f"no answer within {agg.settings.pull.timeout:g}s"
    except (TunnelError, ValueError) as exc:
        error = str(exc) or type(exc).__name__
    else:
        return web.Response(
            text=json.dumps(doc, separators=(",", ":")), content_type="application/json"
        )
    return web.json_response({"error": f"cluster {name}: {error}"}, status=502)


async def get_metrics(request: web.Request) -> web.Response:
    """Serve the federated exposition (text 0.0.4), narrowed by ``match[]``; gzip if asked."""
    agg = request.app[AGGREGATOR]
    agg.refresh_own_metrics()
    match = request.query.getall("match[]", [])
    headers = {"Content-Type": METRICS_CONTENT_TYPE, "Vary": "Accept-Encoding"}
    try:
        if accepts_gzip(request.headers.get("Accept-Encoding", "")):
            # Off the loop: the groups changed since the last pull round are compressed here.
            body = await asyncio.to_thread(agg.federation.render_gzip, match)
            headers["Content-Encoding"] = "gzip"
        else:
            body = agg.federation.render(match)
    except ValueError as exc:
        return web.Response(status=400, text=f"bad match[]: {exc}\n")
    return web.Response(body=body, headers=headers)


def accepts_gzip(accept_encoding: str) -> bool:
    """Tell whether an Accept-Encoding header allows gzip (RFC 9110 12.5.3): ``gzip`` named
    with a non-zero q, or else ``*`` with one."""
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        q = params.strip().lower().removeprefix("q=") if params.strip() else "1"
        try:
            weights[coding.strip().lower()] = float(q)
        except ValueError:
            weights[coding.strip().lower()] = 0.0
    return weights.get("gzip", weights.get("*", 0.0)) > 0


async def post_run(request: web.Request) -> web.Response:
    """Run a probe now on a cluster, through its tunnel, and answer with the result."""
    agg = request.app[AGGREGATOR]
    cluster = request.match_info["cluster"]
    key = (request.match_info["namespace"], request.match_info["name"])
    auth.log.info("operator %s runs %s/%s on cluster %s", request[auth.OPERATOR], *key, cluster)
    view = agg.views.get(cluster)
    if view is None:
        return web.json_response({"error": f"no cluster {cluster}"}, status=404)
    holder = _holder(agg, cluster, request)
    if holder is not None:  # another replica holds its tunnel: that one runs it (and bounds it)
        return await _on_holder(agg, cluster, holder, request, within=RUN_TIMEOUT)
    if not view.connected:
        return web.json_response({"error": f"cluster {cluster} is not connected"}, status=503)
    # Decoded from the request's path, so encoded again: "a b" must not break the request line.
    namespace, name = (quote(part, safe="") for part in key)
    path = f"/v1/run/{namespace}/{name}"
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            reply = await agg.agents.request(cluster, "POST", path)
    except (TunnelError, TimeoutError) as exc:
        return web.json_response({"error": f"cluster {cluster}: {exc}"}, status=502)
    return web.Response(body=reply.body, status=reply.status, content_type="application/json")


def _holder(agg: Aggregator, cluster: str, request: web.Request) -> Holder | None:
    """The replica holding ``cluster``'s tunnel when it is not here and the request was not
    passed here by another replica already; else None."""
    if agg.kube is None or request.headers.get(FORWARDED) or agg.views[cluster].connected:
        return None
    return agg.kube.peers.holder(cluster)


async def _on_holder(
    agg: Aggregator, cluster: str, holder: Holder, request: web.Request, *, within: float
) -> web.Response:
    """Answer with what ``holder`` answers this request about ``cluster`` (which it bounds by
    ``within`` seconds), or 502 if it gives no usable answer."""
    assert agg.kube is not None
    try:
        status, content_type, body = await agg.kube.peers.ask_holder(
            holder,
            cluster,
            method=request.method,
            path=request.path_qs,
            authorization=request.headers.get("Authorization"),
            within=within,
        )
    except HolderFailed as exc:
        return web.json_response({"error": str(exc)}, status=502)
    return web.Response(body=body, status=status, content_type=content_type)


async def healthz(request: web.Request) -> web.Response:
    """Answer while the process is alive."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Answer 200 once the cluster registry is loaded."""
    if request.app[AGGREGATOR].ready:
        return web.Response(text="ok\n")
    return web.Response(status=503, text="not ready: cluster registry not loaded\n")


async def openapi(request: web.Request) -> web.Response:
    """Describe the HTTP API."""
    return web.json_response(OPENAPI)


def make_app(
    agg: Aggregator,
    *,
    read_token: str | None = None,
    operators: auth.OperatorTokensFile | None = None,
) -> web.Application:
    """Build the aggregator's application."""
    app = web.Application(middlewares=[auth.guard(read_token, operators)])
    app[AGGREGATOR] = agg
    app[STATUS_CACHE] = CachedBody()
    app.on_shutdown.append(_stop_rendering)
    agg.tunnel.add_routes(app)
    app.router.add_get("/status", get_status)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_post("/api/v1/clusters/{cluster}/probes/{namespace}/{name}/run", post_run)
    app.router.add_route("*", kube_proxy.ROUTE, kube_proxy.handler(agg))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
    board.add_routes(app, links=agg.settings.board_links)
    return app
