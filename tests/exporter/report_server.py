"""The agent's listen address as the agent serves it, with a run desk tests open runs on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from kubeprober.exporter.http import AgentState, make_runner
from kubeprober.exporter.metrics import AgentMetrics
from kubeprober.exporter.reports import RunDesk
from kubeprober.exporter.status import AgentFacts
from kubeprober.exporter.store import ResultStore


@dataclass
class ReportServer:
    """Where the agent listens and its open runs."""

    url: str
    runs: RunDesk


@asynccontextmanager
async def serve_reports(
    port: int = 0, *, runs: RunDesk | None = None
) -> AsyncIterator[ReportServer]:
    """Serve the agent's app on 127.0.0.1:``port`` through the agent's own runner."""
    store = ResultStore()
    metrics = AgentMetrics(store, version="1.2.3", tunnel_connected=lambda: None)
    facts = AgentFacts("moon", "1.2.3")
    state = AgentState(store=store, registry=metrics.registry, facts=lambda: facts)
    if runs is not None:
        state.runs = runs
    runner = make_runner(state)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        host, bound = runner.addresses[0][:2]
        yield ReportServer(f"http://{host}:{bound}", state.runs)
    finally:
        await runner.cleanup()
