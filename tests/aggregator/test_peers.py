"""Requests passed to the replica holding a cluster, when that replica gives no usable answer.

One aggregator in Kubernetes mode runs in the test's loop; the other replicas are stand-ins on
loopback, each named by a membership Lease and holding one Cluster (its ``status.aggregator``):
one whose address nobody listens on, one that takes connections and never answers, one whose
API fails with a plain 500 page. Every request only a cluster's holder can answer (a probe run,
a cluster's history, the Kubernetes API proxy) ends in a 502 naming the cluster and the
replica, within its bound, with the body /openapi.json describes, and the replica asked keeps
serving. Assignments are pushed by the
holder to its own agents, never passed between replicas, so they have no case here. Last, how
a replica reads its peers' answers for the fleet's ``/status``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, cast

import aiohttp
import jsonschema
import pytest
import pytest_asyncio
from aiohttp import web
from kubernetes import client

from kubeprober.aggregator import api, kube_proxy
from kubeprober.aggregator.kube import peers, replicas
from kubeprober.aggregator.openapi import OPENAPI
from kubeprober.aggregator.process import run_aggregator
from kubeprober.aggregator.views import ClusterView, Filters
from tests.aggregator._fleet_harness import PULL, Service, get_json, write_operator_tokens
from tests.aggregator.test_kube_mode import GROUP, VERSION, Objects, kube_aggregator

MARGIN = 0.5
"""Seconds the aggregator here waits for a holder beyond the holder's own bound."""
BOUNDS = {"run": 1.0, "history": PULL.timeout, "kube": 1.0}
"""The holder's own bound on each request here, seconds (the run's and the kube proxy's head
shortened from their 300 s and 75 s)."""
SLACK = 5.0
"""Seconds an answer may take beyond its bound on a loaded machine."""


async def refused(stack: AsyncExitStack) -> str:
    """A loopback address nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def silent(stack: AsyncExitStack) -> str:
    """A loopback address that takes connections (the kernel's backlog) and never answers."""
    sock = stack.enter_context(socket.socket())
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def failing(stack: AsyncExitStack) -> str:
    """A loopback server answering every request with a plain-text 500, as a replica whose
    handler crashed does."""

    async def crash(request: web.Request) -> web.Response:
        raise web.HTTPInternalServerError()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", crash)
    runner = web.AppRunner(app)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}"


HOLDERS: dict[str, tuple[Callable[[AsyncExitStack], Awaitable[str]], str]] = {
    "refused": (refused, "gave no answer: Cannot connect"),
    "silent": (silent, "did not answer within"),
    "failing": (failing, "answered 500 Internal Server Error"),
}
"""Stand-in holder -> (how it is started, what the error says it did)."""


async def ask(
    http: aiohttp.ClientSession, base: str, route: str, cluster: str, operator: str
) -> tuple[int, str, dict[str, Any], float]:
    """Send ``route``'s request about ``cluster``; return status, content type, JSON body and
    seconds taken."""
    headers = {"Authorization": f"Bearer {operator}"}
    method, path = {
        "run": ("POST", f"/api/v1/clusters/{cluster}/probes/default/ok/run"),
        "history": ("GET", f"/status?cluster={cluster}&history=1"),
        "kube": ("GET", f"/api/v1/clusters/{cluster}/kube/api/v1/namespaces?limit=1"),
    }[route]
    started = time.monotonic()
    async with http.request(method, base + path, headers=headers) as resp:
        body = await resp.json()
        return resp.status, resp.content_type, body, time.monotonic() - started


@pytest.fixture
def short_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorten the bounds a silent holder is waited for, so the test takes seconds."""
    monkeypatch.setattr(peers, "PEER_MARGIN", MARGIN)
    monkeypatch.setattr(api, "RUN_TIMEOUT", BOUNDS["run"])
    monkeypatch.setattr(kube_proxy, "HEAD_TIMEOUT", BOUNDS["kube"])


@pytest_asyncio.fixture
async def stand_ins() -> AsyncIterator[AsyncExitStack]:
    """What the stand-in holders keep open, closed after the test."""
    async with AsyncExitStack() as stack:
        yield stack


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the aggregator's API."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.usefixtures("crds", "short_bounds")
async def test_an_unusable_holder_gives_a_502_naming_it(
    kube_api: client.ApiClient,
    kube_namespace: str,
    kube_config_path: Path,
    http: aiohttp.ClientSession,
    stand_ins: AsyncExitStack,
    tmp_path: Path,
) -> None:
    objects = Objects(kube_api, kube_namespace)
    coordination = client.CoordinationV1Api(objects.custom.api_client)
    addresses = {}
    for kind, (start, _) in HOLDERS.items():
        addresses[kind] = url = await start(stand_ins)
        lease = {
            "metadata": {
                "name": replicas.member_lease(f"ghost-{kind}"),
                "labels": {replicas.ROLE_LABEL: "member"},
                "annotations": {replicas.ADDRESS: url},
            },
            "spec": {"holderIdentity": f"ghost-{kind}", "leaseDurationSeconds": 300},
        }
        await asyncio.to_thread(coordination.create_namespaced_lease, kube_namespace, lease)
        await asyncio.to_thread(objects.cluster, f"c-{kind}")
        await asyncio.to_thread(
            objects.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            kube_namespace,
            "clusters",
            f"c-{kind}",
            {"status": {"aggregator": f"ghost-{kind}"}},
        )
    (operator,) = write_operator_tokens(tmp_path / "operators", "ops").values()
    base = kube_aggregator(kube_config_path, kube_namespace).settings
    settings = dataclasses.replace(base, operator_tokens_file=tmp_path / "operators")
    agg = await Service("aggregator", run_aggregator, settings).start()
    try:
        cases = [(kind, route) for kind in HOLDERS for route in BOUNDS]
        answers = await asyncio.gather(
            *(ask(http, agg.url, route, f"c-{kind}", operator) for kind, route in cases)
        )
        for (kind, route), (status, content_type, body, seconds) in zip(
            cases, answers, strict=True
        ):
            case = f"{route} with a {kind} holder: {status} {body} in {seconds:.1f}s"
            assert status == 502 and content_type == "application/json", case
            schema = "KubeStatus" if route == "kube" else "Error"  # as /openapi.json says
            jsonschema.validate(body, {**OPENAPI, "$ref": f"#/components/schemas/{schema}"})
            if route == "kube":  # what kubectl shows as "Error from server (InternalError)"
                assert body["code"] == 502, case
                message = body["message"]
            else:
                assert list(body) == ["error"], case
                message = body["error"]
            assert message.startswith(
                f"cluster c-{kind}: replica ghost-{kind} at {addresses[kind]}, which holds its "
                f"tunnel, {HOLDERS[kind][1]}"
            ), case
            assert seconds < BOUNDS[route] + MARGIN + SLACK, case

        # The replica asked keeps serving, its peers' clusters shown from their status.
        async with http.get(f"{agg.url}/healthz") as resp:
            assert resp.status == 200
        doc = await get_json(http, f"{agg.url}/status")
        assert {c["name"]: c.get("stale") for c in doc["clusters"]} == {
            f"c-{kind}": True for kind in HOLDERS
        }
    finally:
        await agg.stop()


class OnePeer:
    """What :class:`peers.Peers` reads of the membership: this replica holds nothing, and one
    peer, a stand-in on loopback, answers ``/status?held=1`` with :attr:`entries`."""

    identity = "me"

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.url = ""

    async def start(self, stack: AsyncExitStack) -> peers.Peers:
        """Serve the peer; return the gathering of a replica that has it as only peer."""

        async def held(request: web.Request) -> web.Response:
            lines = "".join(json.dumps(e) + "\n" for e in self.entries.values())
            return web.Response(text=lines, content_type="application/x-ndjson")

        app = web.Application()
        app.router.add_get("/status", held)
        runner = web.AppRunner(app)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        gather = peers.Peers(cast(replicas.Replicas, self), timeout=5)
        stack.push_async_callback(gather.close)
        return gather

    def members(self) -> dict[str, str]:
        return {"me": "", "peer": self.url}

    def held(self) -> set[str]:
        return set()

    async def fleet(self, gather: peers.Peers, filters: Filters | None = None) -> dict[str, Any]:
        """The fleet's document as the replica asking this peer serves it."""
        views = [ClusterView(name) for name in self.entries]
        body = await gather.fleet_status(
            views, ttl=45, filters=filters or Filters(), authorization=None
        )
        doc: dict[str, Any] = json.loads(body)
        return doc


def held_entry(name: str, status: str) -> dict[str, Any]:
    counts = dict.fromkeys(("PASS", "INFO", "WARN", "ERROR", "UNKNOWN"), 0)
    summary = {"status": status, "total": 1, "pending": 0, "byStatus": {**counts, status: 1}}
    probe = {"name": "p", "layer": "application", "status": status, "checks": []}
    return {"name": name, "summary": summary, "probes": [probe]}


async def test_a_peers_lines_as_in_its_last_answer_are_not_decoded_again(
    monkeypatch: pytest.MonkeyPatch, stand_ins: AsyncExitStack
) -> None:
    peer = OnePeer()
    peer.entries = {name: held_entry(name, "PASS") for name in ("a", "b", "c")}
    gather = await peer.start(stand_ins)
    decoded: list[bytes] = []
    check = peers._checked_line

    def counted(line: bytes, n: int, summaries: Any) -> Any:
        decoded.append(line)
        return check(line, n, summaries)

    monkeypatch.setattr(peers, "_checked_line", counted)
    assert [c["summary"]["status"] for c in (await peer.fleet(gather))["clusters"]] == ["PASS"] * 3
    assert len(decoded) == 3
    peer.entries["b"] = held_entry("b", "ERROR")
    doc = await peer.fleet(gather)
    assert decoded[3:] == [json.dumps(peer.entries["b"]).encode()]
    assert doc["summary"]["status"] == "ERROR"
    assert [c["summary"]["status"] for c in doc["clusters"]] == ["PASS", "ERROR", "PASS"]
    assert not any(c.get("stale") for c in doc["clusters"])


@pytest.mark.parametrize(
    ("filters", "listed"),
    [
        (Filters(clusters=frozenset({"b"})), {"b": ["ERROR"]}),
        (Filters(statuses=frozenset({"ERROR"})), {"a": [], "b": ["ERROR"], "c": []}),
        (Filters(layers=frozenset({"middleware"})), {"a": [], "b": [], "c": []}),
    ],
)
async def test_a_filtered_fleet_lists_what_the_filters_accept_and_sums_it_all(
    stand_ins: AsyncExitStack, filters: Filters, listed: dict[str, list[str]]
) -> None:
    peer = OnePeer()
    peer.entries = {n: held_entry(n, "ERROR" if n == "b" else "PASS") for n in ("c", "a", "b")}
    doc = await peer.fleet(await peer.start(stand_ins), filters)
    assert {c["name"]: [p["status"] for p in c["probes"]] for c in doc["clusters"]} == listed
    assert [c["name"] for c in doc["clusters"]] == sorted(listed)
    assert doc["summary"]["byStatus"] == {"PASS": 2, "INFO": 0, "WARN": 0, "ERROR": 1, "UNKNOWN": 0}
