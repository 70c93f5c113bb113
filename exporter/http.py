"""The agent's HTTP API: ``/metrics``, ``/status``, ``/healthz``, ``/readyz``.

The same application is served on the listen address and, later, through the tunnel's
``agent`` target, so it holds no socket-specific logic.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter.status import AgentFacts, status_document
from exporter.store import ResultStore


@dataclass
class AgentState:
    """What the handlers read. ``ready`` is set by the agent once probes are loaded."""

    store: ResultStore
    registry: CollectorRegistry
    facts: Callable[[], AgentFacts]
    ready: bool = False
    not_ready_reason: str = "probes not loaded yet"


STATE = web.AppKey("state", AgentState)


async def metrics(request: web.Request) -> web.Response:
    """Serve Prometheus text 0.0.4, or OpenMetrics when the scraper asks for it."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    # Rendering thousands of series takes tens of milliseconds; in a thread the GIL is
    # handed back every few milliseconds, so probe runs stay on time during a scrape.
    body = await asyncio.to_thread(encoder, request.app[STATE].registry)
    return web.Response(body=body, headers={"Content-Type": content_type})


async def status(request: web.Request) -> web.Response:
    """Serve the status document of DESIGN.md with this agent's one cluster."""
    state = request.app[STATE]
    doc = status_document(state.store, state.facts())
    return web.Response(text=json.dumps(doc, indent=1) + "\n", content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    """Answer while the process is alive and its event loop turns."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Answer 200 once probes are loaded and scheduled, 503 with the reason before."""
    state = request.app[STATE]
    if state.ready:
        return web.Response(text="ok\n")
    return web.Response(status=503, text=f"not ready: {state.not_ready_reason}\n")


def make_app(state: AgentState) -> web.Application:
    """Build the agent's application around ``state``."""
    app = web.Application()
    app[STATE] = state
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
