"""The agent's HTTP API: ``/metrics``, ``/status``, ``/healthz``, ``/readyz``, ``POST /report``.

The tunnel's ``agent`` target serves the same handlers plus the control routes
(``PUT /v1/assignment``, ``POST /v1/run/{namespace}/{name}``), which exist only in the
application built with a ``control``: the listen address never offers them, so only the
aggregator, through the agent's own outbound tunnel, can assign or trigger probes.
``POST /report`` takes container probes' results; a run token (:mod:`exporter.reports`)
says which run a report belongs to, and never appears in an answer or a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from kubeprober.exporter.reports import ReportRefused, RunDesk
from kubeprober.exporter.status import (
    AgentFacts,
    History,
    add_histories,
    histories,
    status_document,
)
from kubeprober.exporter.store import ResultStore
from kubeprober.http_log import SERVER_LOG, AccessLog
from kubeprober.http_server import BodyRefused, last_answer, read_body
from kubeprober.probers.report import MAX_BODY_BYTES, ReportError, parse_report
from kubeprober.tunnel.http.client import decode_json
from kubeprober.tunnel.http.serve import IDLE_TIMEOUT


@dataclass
class AgentState:
    """What the handlers read. ``ready`` is set by the agent once probes are loaded."""

    store: ResultStore
    registry: CollectorRegistry
    facts: Callable[[], AgentFacts]
    runs: RunDesk = field(default_factory=RunDesk)
    """Container probe runs waiting for reports."""
    ready: bool = False
    not_ready_reason: str = "probes not loaded yet"


class Control(Protocol):
    """What the aggregator may ask of the agent through the tunnel."""

    def assign(self, body: object) -> dict[str, Any]:
        """Take a new assignment; raise ValueError if the body is unusable."""

    async def run_now(self, namespace: str, name: str) -> dict[str, Any]:
        """Run a probe now and return its probe view; raise KeyError if unknown."""


ACCESS_LOG = logging.getLogger("kubeprober.exporter.access")
STATE = web.AppKey("state", AgentState)
CONTROL = web.AppKey("control", Control)


async def metrics(request: web.Request) -> web.Response:
    """Serve Prometheus text 0.0.4, or OpenMetrics when the scraper asks for it."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    # Rendering thousands of series takes tens of milliseconds; in a thread the GIL is
    # handed back every few milliseconds, so probe runs stay on time during a scrape.
    body = await asyncio.to_thread(encoder, request.app[STATE].registry)
    return web.Response(body=body, headers={"Content-Type": content_type})


async def status(request: web.Request) -> web.Response:
    """Serve the status document (docs/contracts.md) with this agent's one cluster.

    ``?history=1`` adds each check's last results (the aggregator asks for it through the
    tunnel when someone opens the cluster). That is many times larger (20 results a check:
    2 MB for 1,000 checks), so it is written compactly, and in a thread like ``/metrics``.
    """
    state = request.app[STATE]
    doc = status_document(state.store, state.facts())
    if request.query.get("history") == "1":
        text = await asyncio.to_thread(_with_history, doc, histories(state.store))
    else:
        text = json.dumps(doc, indent=1)
    return web.Response(text=text + "\n", content_type="application/json")


def _with_history(doc: dict[str, Any], history: History) -> str:
    add_histories(doc, history)
    return json.dumps(doc, separators=(",", ":"))


async def healthz(request: web.Request) -> web.Response:
    """Answer while the process is alive and its event loop turns."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Answer 200 once probes are loaded and scheduled, 503 with the reason before."""
    state = request.app[STATE]
    if state.ready:
        return web.Response(text="ok\n")
    return web.Response(status=503, text=f"not ready: {state.not_ready_reason}\n")


async def put_assignment(request: web.Request) -> web.Response:
    """Take the aggregator's probe assignment; 400 names what is wrong with the body."""
    try:
        body = await request.json()
        report = request.app[CONTROL].assign(body)
    except ValueError as exc:  # JSONDecodeError is a ValueError too
        return web.json_response({"error": f"bad assignment: {exc}"}, status=400)
    return web.json_response(report)


async def post_run(request: web.Request) -> web.Response:
    """Run one probe now and answer with its results."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    try:
        view = await request.app[CONTROL].run_now(namespace, name)
    except KeyError:
        return web.json_response({"error": f"no probe {namespace}/{name}"}, status=404)
    return web.json_response(view)


async def post_report(request: web.Request) -> web.Response:
    """Take a container probe's report for the run its token names.

    Answers 200 when taken; 400 naming what is wrong with the body; 401 without a known
    token; 410 for a superseded or ended run (400 to the original kubeprober SDK, which
    retries every answer but 200 and 400); 413 over the size limit; 408 for a body that
    takes longer than ``BODY_TIMEOUT`` to arrive.
    """
    token = request.match_info.get("token") or _bearer(request.headers.get("Authorization", ""))
    if not token:
        return _refuse(401, "run token required: Authorization: Bearer, or POST /report/TOKEN")
    try:
        data = await read_body(request, MAX_BODY_BYTES)
    except BodyRefused as exc:
        text = f"report larger than {MAX_BODY_BYTES} bytes" if exc.status == 413 else exc.text
        return await last_answer(request, _refuse(exc.status, text))
    try:
        report = parse_report(decode_json(data))
    except ReportError as exc:
        return _refuse(400, f"bad report: {exc}")
    except ValueError as exc:  # not JSON (or nested too deeply), or not UTF-8
        return _refuse(400, f"bad report: not JSON: {exc}")
    try:
        run = request.app[STATE].runs.deliver(token, report)
    except ReportRefused as exc:
        status = {"unknown": 401, "invalid": 400, "gone": 400 if report.original else 410}
        return _refuse(status[exc.kind], str(exc))
    return web.json_response({"run": run.run_id, "accepted": [c.name for c in report.checks]})


def _bearer(header: str) -> str:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _refuse(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_app(state: AgentState, *, control: Control | None = None) -> web.Application:
    """Build the agent's application; with ``control``, the tunnel-only routes too."""
    app = web.Application()
    app[STATE] = state
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_post("/report", post_report)
    app.router.add_post("/report/{token}", post_report)
    if control is not None:
        app[CONTROL] = control
        app.router.add_put("/v1/assignment", put_assignment)
        app.router.add_post("/v1/run/{namespace}/{name}", post_run)
    return app


def make_runner(state: AgentState) -> web.AppRunner:
    """Build the server of the listen address: its app, the access log (DEBUG), one-line
    bad requests, and no signal handling (the agent owns SIGTERM)."""
    return web.AppRunner(
        make_app(state),
        handle_signals=False,
        access_log=ACCESS_LOG,
        access_log_class=AccessLog,
        logger=SERVER_LOG,
        keepalive_timeout=IDLE_TIMEOUT,
    )
