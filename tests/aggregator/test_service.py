"""The aggregator service over real loopback tunnels: agents in, /status, /metrics and the API out.

Every test runs ``run_aggregator`` and one or more ``run_agent`` in its own event loop; agents
dial the aggregator through the real tunnel and the tests only write the clusters file and
talk HTTP, as an operator and Prometheus would.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from kubeprober import __version__
from kubeprober.aggregator.auth import new_operator_token, token_hash
from kubeprober.aggregator.puller import PullSettings
from kubeprober.aggregator.registry import load_file
from kubeprober.aggregator.state import OWN
from kubeprober.aggregator.tokens import new_token
from kubeprober.exporter.tunnel_client import TunnelClient
from tests.aggregator._fleet_harness import (
    FleetFile,
    Service,
    agent,
    aggregator,
    cluster_of,
    eventually,
    exec_probe,
    get_json,
    has_results,
    make_tls,
    probe,
    probe_names,
    tcp_probe,
    write_operator_tokens,
    write_probes,
)
from tests.binaries import binary
from tests.harness.prometheus import running_prometheus
from tests.ports import free_port

READ_TOKEN = "read-s3cret-token"
T = TypeVar("T")
# The aggregator's own per-cluster families (not from the agent).
OWN_PREFIXES = (
    "kubeprober_agent_up",
    "kubeprober_agent_last_seen",
    "kubeprober_agent_pull_duration",
    "kubeprober_cluster_maintenance",
    "kubeprober_federation_dropped",
)


class Fleet:
    """The test's clusters file, its running services and an HTTP client, torn down in order."""

    def __init__(self, tmp: Path, stack: AsyncExitStack, http: aiohttp.ClientSession) -> None:
        self.tmp = tmp
        self.file = FleetFile(tmp / "clusters.yaml")
        self.stack = stack
        self.http = http
        self.aggregator: Service | None = None
        self.operators: dict[str, str] = {}
        """Operator tokens by name, when the test made some."""

    async def start(self, service: Service) -> Service:
        """Start ``service`` and stop it at teardown (agents before the aggregator)."""
        await service.start()
        self.stack.push_async_callback(service.stop)
        return service

    async def start_aggregator(self, **kwargs: Any) -> Service:
        """Write the clusters file and start the aggregator on it."""
        self.file.write()
        self.aggregator = await self.start(aggregator(self.file.path, **kwargs))
        return self.aggregator

    async def start_agent(
        self, cluster: str, probes: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> Service:
        """Start cluster's agent with local ``probes``, dialling the running aggregator."""
        assert self.aggregator is not None
        path = write_probes(self.tmp / f"{cluster}-probes.yaml", probes or [])
        return await self.start(
            agent(
                cluster, fleet=self.file, aggregator_url=self.aggregator.url, probes=path, **kwargs
            )
        )

    @property
    def url(self) -> str:
        """The aggregator's base URL."""
        assert self.aggregator is not None
        return self.aggregator.url

    async def status(self, query: str = "", *, token: str | None = None) -> dict[str, Any]:
        """GET the aggregator's /status."""
        return await get_json(self.http, f"{self.url}/status{query}", token=token)

    async def metrics(self, *, token: str | None = None, **params: str) -> str:
        """GET the aggregator's /metrics, asserting 200."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.get(f"{self.url}/metrics", params=params, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return await resp.text()

    async def wait_cluster(
        self, name: str, accept: Callable[[dict[str, Any]], bool], what: str, within: float = 10
    ) -> dict[str, Any]:
        """Poll /status until cluster ``name``'s entry satisfies ``accept``."""

        async def fetch() -> dict[str, Any]:
            found = [c for c in (await self.status())["clusters"] if c["name"] == name]
            return found[0] if found else {}

        return await eventually(
            fetch, lambda c: bool(c) and accept(c), within=within, what=f"cluster {name}: {what}"
        )


@pytest_asyncio.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """A fleet to fill in; everything started through it is stopped at teardown."""
    async with aiohttp.ClientSession() as http, AsyncExitStack() as stack:
        yield Fleet(tmp_path, stack, http)


@pytest_asyncio.fixture
async def listening_port() -> AsyncIterator[int]:
    """A loopback TCP port that accepts connections (a healthy service for tcp checks)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def agent_status(http: aiohttp.ClientSession, agent: Service) -> dict[str, Any]:
    """The agent's own /status cluster entry (from its listen address, not the tunnel)."""
    doc = await get_json(http, f"{agent.url}/status")
    entry: dict[str, Any] = doc["clusters"][0]
    return entry


def metric_lines(text: str, name: str) -> list[str]:
    """Sample lines of family ``name`` (exact metric name) in an exposition."""
    return [line for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name]


def values(text: str, name: str) -> dict[str, float]:
    """Family ``name``'s samples as {label text: value}."""
    out = {}
    for line in metric_lines(text, name):
        series, _, value = line.rpartition(" ")
        out[series.partition("{")[2].rstrip("}")] = float(value)  # "" for no labels
    return out


# --- agents report ----------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_agents_report_and_appear_online(
    fleet: Fleet, listening_port: int, tmp_path: Path, tls: bool
) -> None:
    down = free_port()
    fleet.file.add("moon", "api").add("mars", "api").add("venus")
    fleet.file.probes.append(tcp_probe("api", listening_port, layer="application"))
    certs = make_tls(tmp_path) if tls else None
    await fleet.start_aggregator(tls=certs)
    assert fleet.url.startswith("https://" if tls else "http://")
    if certs:
        trusting = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=certs.ca))
        fleet.http = aiohttp.ClientSession(connector=trusting)
        fleet.stack.push_async_callback(fleet.http.close)
    ca = certs.ca if certs else None
    await fleet.start_agent("moon", [exec_probe("disk", "true", layer="infrastructure")], ca=ca)
    await fleet.start_agent(
        "mars", [tcp_probe("db", down, layer="middleware", check="postgres")], ca=ca
    )

    await fleet.wait_cluster("moon", lambda c: has_results(c, "disk", "api"), "results")
    await fleet.wait_cluster("mars", lambda c: has_results(c, "db", "api"), "results")
    doc = await fleet.status()
    assert [c["name"] for c in doc["clusters"]] == ["mars", "moon", "venus"]
    moon, mars, venus = (cluster_of(doc, n) for n in ("moon", "mars", "venus"))
    revisions = load_file(fleet.file.path)
    for entry in (moon, mars):
        assert entry["state"] == "Online"
        assert entry["agentVersion"] == __version__
        assert entry["assignmentRevision"] == revisions.assignment(entry["name"])["revision"]
        assert entry["lastSeen"] is not None
        assert all(p["stale"] is False for p in entry["probes"])
    assert probe_names(moon) == {"disk", "api"}
    assert probe_names(mars) == {"db", "api"}
    assert moon["summary"] == {
        "status": "PASS",
        "total": 2,
        "pending": 0,
        "byStatus": {"PASS": 2, "INFO": 0, "WARN": 0, "ERROR": 0, "UNKNOWN": 0},
    }
    assert moon["layers"]["infrastructure"]["total"] == 1
    (db,) = [p for p in mars["probes"] if p["name"] == "db"]
    assert (db["layer"], db["status"], db["checks"][0]["name"]) == (
        "middleware",
        "ERROR",
        "postgres",
    )
    assert str(down) in db["checks"][0]["message"]
    assert mars["summary"]["status"] == "ERROR"
    assert mars["layers"]["middleware"]["status"] == "ERROR"
    assert (venus["state"], venus["probes"], venus["summary"]["status"]) == ("Pending", [], None)
    assert doc["summary"]["status"] == "ERROR"
    assert doc["summary"]["total"] == 4


# --- assignment -------------------------------------------------------------------------------


def _reloads(caplog: pytest.LogCaptureFixture) -> int:
    """How many times the aggregator has taken a changed clusters file so far."""
    return sum(r.getMessage().startswith("clusters file ") for r in caplog.records)


def _async(fetch: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    """Wrap a plain function for ``eventually``."""

    async def call() -> T:
        return fetch()

    return call


async def _assigned(caplog: pytest.LogCaptureFixture, revision: int) -> None:
    """Wait until the aggregator has read the agent's answer to ``revision`` (and logged any
    refusal in it: those lines come first)."""
    line = f"cluster moon has assignment revision {revision} "
    await eventually(
        _async(lambda: [r for r in caplog.records if r.getMessage().startswith(line)]),
        bool,
        within=5,
        what=f"the answer to assignment revision {revision}",
    )


async def test_labels_assign_and_unassign_within_5_seconds(
    fleet: Fleet, listening_port: int
) -> None:
    fleet.file.add("moon").add("mars")
    fleet.file.probes.append(tcp_probe("api", listening_port, interval="1s"))
    # The default reload interval: the 5 s promise is about the real settings.
    await fleet.start_aggregator(reload_interval=2.0)
    moon = await fleet.start_agent("moon")
    mars = await fleet.start_agent("mars")
    await fleet.wait_cluster("moon", lambda c: c["state"] == "Online", "online")
    await fleet.wait_cluster("mars", lambda c: c["state"] == "Online", "online")

    async def moon_probes() -> set[str]:
        return probe_names(await agent_status(fleet.http, moon))

    start = time.monotonic()
    fleet.file.assign("moon", "api")
    await eventually(moon_probes, lambda names: names == {"api"}, within=5, what="api assigned")
    took = time.monotonic() - start
    await fleet.wait_cluster("moon", lambda c: has_results(c, "api"), "api results")
    assert probe_names(await agent_status(fleet.http, mars)) == set()

    start = time.monotonic()
    fleet.file.unassign("moon", "api")
    await eventually(moon_probes, lambda names: names == set(), within=5, what="api removed")
    took = max(took, time.monotonic() - start)
    await fleet.wait_cluster("moon", lambda c: probe_names(c) == set(), "api gone")
    assert took < 5


@pytest.mark.parametrize(
    ("relabel", "keep_state", "wanted"),
    [
        pytest.param(True, True, {"new"}, id="labels-changed-while-away"),
        pytest.param(False, False, {"old"}, id="agent-came-back-without-its-state"),
    ],
)
async def test_offline_agent_gets_the_current_set_on_reconnect(
    fleet: Fleet,
    listening_port: int,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    relabel: bool,
    keep_state: bool,
    wanted: set[str],
) -> None:
    caplog.set_level(logging.INFO)
    fleet.file.add("moon", "old")
    fleet.file.probes += [tcp_probe("old", listening_port), tcp_probe("new", listening_port)]
    await fleet.start_aggregator()
    state = tmp_path / "moon-state"
    first = await fleet.start_agent("moon", state_dir=state)
    await fleet.wait_cluster("moon", lambda c: has_results(c, "old"), "old assigned")
    await first.stop()
    await fleet.wait_cluster("moon", lambda c: c["state"] == "Offline", "offline")

    if relabel:
        fleet.file.unassign("moon", "old")
        fleet.file.assign("moon", "new")
        # Reloads run on this loop: any reload from now on reads the file as written.
        reloads = _reloads(caplog)
        await eventually(
            _async(lambda: _reloads(caplog)), lambda n: n > reloads, within=5, what="a reload"
        )
    second = await fleet.start_agent("moon", state_dir=state if keep_state else None)
    entry = await fleet.wait_cluster(
        "moon",
        lambda c: has_results(c, *wanted) and probe_names(c) == wanted,
        f"{wanted} assigned",
    )
    assert entry["assignmentRevision"] == load_file(fleet.file.path).assignment("moon")["revision"]
    assert probe_names(await agent_status(fleet.http, second)) == wanted
    saved = json.loads((state / "assignment.json").read_text())
    assert {p["metadata"]["name"] for p in saved["probes"]} == ({"new"} if relabel else {"old"})


@pytest.mark.parametrize(
    ("accept", "runs"),
    [
        pytest.param(False, {"api"}, id="refused"),
        pytest.param(True, {"api", "script"}, id="accepted"),
    ],
)
async def test_pushed_exec_probes_need_accept_remote_exec(
    fleet: Fleet,
    listening_port: int,
    caplog: pytest.LogCaptureFixture,
    accept: bool,
    runs: set[str],
) -> None:
    caplog.set_level(logging.INFO)
    fleet.file.add("moon", "api", "script")
    fleet.file.probes += [tcp_probe("api", listening_port), exec_probe("script", "true")]
    await fleet.start_aggregator()
    moon = await fleet.start_agent("moon", accept_remote_exec=accept)
    revision = load_file(fleet.file.path).assignment("moon")["revision"]
    entry = await fleet.wait_cluster(
        "moon", lambda c: c["assignmentRevision"] == revision and has_results(c, *runs), "applied"
    )
    # The agent reports the revision with the probes it applied along with it, in one step:
    # a probe it had taken would be listed here (pending at worst).
    assert probe_names(entry) == runs
    await _assigned(caplog, revision)
    assert probe_names(await agent_status(fleet.http, moon)) == runs
    refusals = [r.getMessage() for r in caplog.records if "refused probe script" in r.getMessage()]
    if accept:
        assert refusals == []
        (script,) = [p for p in entry["probes"] if p["name"] == "script"]
        assert script["status"] == "PASS"
    else:
        assert refusals and "--accept-remote-exec" in refusals[0]


async def test_a_local_probe_of_the_same_name_wins(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fleet.file.add("moon", "api")
    fleet.file.probes.append(tcp_probe("api", free_port(), check="central"))
    await fleet.start_aggregator()
    await fleet.start_agent("moon", [exec_probe("api", "true", check="local")])
    revision = load_file(fleet.file.path).assignment("moon")["revision"]
    entry = await fleet.wait_cluster(
        "moon", lambda c: c["assignmentRevision"] == revision and has_results(c, "api"), "applied"
    )
    await _assigned(caplog, revision)
    (api,) = entry["probes"]
    assert ([c["name"] for c in api["checks"]], api["status"]) == (["local"], "PASS")
    assert any("refused probe api" in r.getMessage() for r in caplog.records)


# --- a cluster going offline ------------------------------------------------------------------


async def test_cluster_going_offline_turns_stale_unknown_and_its_checks_leave_metrics(
    fleet: Fleet, listening_port: int
) -> None:
    fleet.file.add("moon", "api").add("mars", "api")
    fleet.file.probes.append(tcp_probe("api", listening_port))
    await fleet.start_aggregator()
    moon = await fleet.start_agent("moon", [exec_probe("disk", "true")])
    await fleet.start_agent("mars")
    await fleet.wait_cluster("moon", lambda c: has_results(c, "api", "disk"), "results")
    await fleet.wait_cluster("mars", lambda c: has_results(c, "api"), "results")
    text = await fleet.metrics()
    assert values(text, "kubeprober_agent_up") == {'cluster="mars"': 1.0, 'cluster="moon"': 1.0}
    assert any('cluster="moon"' in line for line in metric_lines(text, "kubeprober_check_success"))

    await moon.stop()
    entry = await fleet.wait_cluster("moon", lambda c: c["state"] == "Offline", "offline")
    assert probe_names(entry) == {"api", "disk"}  # last results kept
    assert all(p["stale"] for p in entry["probes"])
    assert all(p["status"] == "PASS" for p in entry["probes"])  # as last reported
    # UNKNOWN, counted as the probes listed say: 2 PASS, not "2 UNKNOWN".
    assert entry["summary"]["status"] == "UNKNOWN"
    assert entry["summary"]["byStatus"]["PASS"] == entry["summary"]["total"] == 2
    mars = cluster_of(await fleet.status(), "mars")
    assert mars["state"] == "Online" and not any(p["stale"] for p in mars["probes"])

    text = await fleet.metrics()
    assert values(text, "kubeprober_agent_up") == {'cluster="mars"': 1.0, 'cluster="moon"': 0.0}
    # Its last check_success 1 must not outlive it: alerts key on agent_up and last_seen.
    assert 'cluster="moon"' in values(text, "kubeprober_agent_last_seen_timestamp_seconds")
    # Only the aggregator's own series of the cluster stay; none of its agent's.
    own = tuple(f.name for f in OWN)
    moon_series = [line for line in text.splitlines() if 'cluster="moon"' in line]
    assert moon_series and all(line.startswith(own) for line in moon_series), moon_series
    assert any('cluster="mars"' in line for line in metric_lines(text, "kubeprober_check_success"))
    assert values(text, "kubeprober_clusters") == {
        'state="Online"': 1.0,
        'state="Offline"': 1.0,
        'state="Pending"': 0.0,
    }


async def test_a_failure_reaches_the_aggregator_within_a_second_through_the_notice(
    fleet: Fleet,
) -> None:
    # The checked service: healthy until told, then 500, noting when it first answered so
    # (the failing run ends after that answer).
    broken = asyncio.Event()
    failed_at: list[float] = []

    async def health(_: web.Request) -> web.Response:
        if not broken.is_set():
            return web.Response(text="ok")
        failed_at.append(time.time())
        return web.Response(status=500)

    app = web.Application()
    app.router.add_get("/", health)
    runner = web.AppRunner(app)
    await runner.setup()
    fleet.stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = "http://127.0.0.1:{}/".format(*runner.addresses[0][1:2])
    fleet.file.add("moon")
    # Beats of an hour: only the agent's change notice can bring the failure in time.
    hour = PullSettings(interval=3600, full_interval=3600, timeout=2, debounce=0.05)
    await fleet.start_aggregator(pull=hour)
    await fleet.start_agent("moon", [probe("web", "http", {"url": url}, interval="1s")])
    await fleet.wait_cluster("moon", lambda c: has_results(c, "web"), "a first result")
    broken.set()

    def failed(entry: dict[str, Any]) -> bool:
        return [p["status"] for p in entry["probes"]] == ["ERROR"]

    await fleet.wait_cluster("moon", failed, "the failure", within=5)
    late = time.time() - failed_at[0]
    # /status is polled every 0.1 s, so this is at most that much later than it showed.
    assert late < 1.0, f"the failure showed {late:.2f} s after the service failed"


# --- federated /metrics -----------------------------------------------------------------------


@pytest_asyncio.fixture
async def two_clusters(fleet: Fleet, listening_port: int) -> Fleet:
    """moon and mars Online with results (one passing, one failing check each)."""
    fleet.file.add("moon", "api").add("mars", "api", maintenance=True)
    fleet.file.probes.append(tcp_probe("api", listening_port, layer="application"))
    await fleet.start_aggregator()
    down = free_port()
    for name in ("moon", "mars"):
        await fleet.start_agent(name, [tcp_probe("db", down, layer="middleware")])
    for name in ("moon", "mars"):
        await fleet.wait_cluster(name, lambda c: has_results(c, "api", "db"), "results")

    async def both() -> str:
        return await fleet.metrics()

    await eventually(
        both,
        lambda t: len(metric_lines(t, "kubeprober_check_success")) == 4,
        within=5,
        what="metrics of both clusters",
    )
    return fleet


async def test_federated_metrics_pass_promtool_and_carry_the_cluster(two_clusters: Fleet) -> None:
    text = await two_clusters.metrics()
    promtool = await asyncio.create_subprocess_exec(
        binary("promtool"),
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    said, _ = await promtool.communicate(text.encode())
    assert promtool.returncode == 0, said.decode()
    success = metric_lines(text, "kubeprober_check_success")
    assert len(success) == 4
    for cluster in ("moon", "mars"):
        mine = [s for s in success if f'cluster="{cluster}"' in s]
        assert len(mine) == 2, success
        assert any('probe="db"' in s and s.endswith(" 0.0") for s in mine), mine
        assert any('probe="api"' in s and s.endswith(" 1.0") for s in mine), mine
    # Every series that came from an agent carries its cluster.
    agent_lines = [
        line
        for line in text.splitlines()
        if line.startswith("kubeprober_check_") or line.startswith("kubeprober_agent_info")
    ]
    assert agent_lines and all('cluster="' in line for line in agent_lines)
    # One HELP/TYPE per family across clusters.
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))
    assert values(text, "kubeprober_cluster_maintenance") == {
        'cluster="mars"': 1.0,
        'cluster="moon"': 0.0,
    }
    assert metric_lines(text, "kubeprober_agent_last_seen_timestamp_seconds")
    assert metric_lines(text, "kubeprober_agent_pull_duration_seconds")


@pytest.mark.parametrize(
    ("accept", "encoding"),
    [
        ("gzip", "gzip"),
        ("br, *;q=0.5", "gzip"),
        ("gzip;q=0, identity", None),
        ("*;q=0.5, gzip;q=0", None),  # gzip refused by name: * does not bring it back
        ("", None),
    ],
)
async def test_metrics_are_gzip_when_asked(
    two_clusters: Fleet, accept: str, encoding: str | None
) -> None:
    async with (
        aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=["Accept-Encoding"]) as raw,
        raw.get(f"{two_clusters.url}/metrics", headers={"Accept-Encoding": accept}) as resp,
    ):
        assert resp.status == 200 and resp.headers.get("Content-Encoding") == encoding
        body = await resp.read()
    text = (gzip.decompress(body) if encoding else body).decode()
    assert len(metric_lines(text, "kubeprober_check_success")) == 4


async def test_a_real_prometheus_ingests_the_gzip_federation(
    two_clusters: Fleet, tmp_path: Path
) -> None:
    """Prometheus asks for gzip; the joined gzip members must read as one stream in Go too."""
    served: list[tuple[str, str]] = []  # (Accept-Encoding asked, Content-Encoding answered)

    async def relay(request: web.Request) -> web.Response:
        async with (
            aiohttp.ClientSession(
                auto_decompress=False, skip_auto_headers=["Accept-Encoding"]
            ) as up,
            up.get(f"{two_clusters.url}/metrics", headers=dict(request.headers)) as resp,
        ):
            body = await resp.read()
            served.append(
                (
                    request.headers.get("Accept-Encoding", ""),
                    resp.headers.get("Content-Encoding", ""),
                )
            )
            keep = ("Content-Type", "Content-Encoding")
            return web.Response(
                body=body, headers={k: resp.headers[k] for k in keep if k in resp.headers}
            )

    app = web.Application()
    app.router.add_get("/metrics", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    relay_port = runner.addresses[0][1]
    job = {
        "job_name": "kubeprober",
        "honor_labels": True,
        "scrape_timeout": "1s",
        "static_configs": [{"targets": [f"127.0.0.1:{relay_port}"]}],
    }
    try:
        async with running_prometheus(tmp_path, [job]) as prom:
            query = "count by (cluster) (kubeprober_check_success)"

            async def counts() -> dict[str, str]:
                return {r["metric"]["cluster"]: r["value"][1] for r in await prom.query(query)}

            await eventually(
                counts,
                lambda c: c == {"moon": "2", "mars": "2"},
                within=30,
                what="series in Prometheus",
            )
    finally:
        await runner.cleanup()
    assert served and all(e == "gzip" for a, e in served if "gzip" in a), served
    assert any("gzip" in a for a, _ in served), served


async def test_a_cluster_over_the_series_cap_is_capped_and_counted(fleet: Fleet) -> None:
    fleet.file.add("moon").add("mars")
    await fleet.start_aggregator(max_series_per_cluster=20)
    await fleet.start_agent("moon", [exec_probe(f"p{i}", "true") for i in range(5)])
    await fleet.wait_cluster("moon", lambda c: has_results(c, *(f"p{i}" for i in range(5))), "")

    async def dropped() -> str:
        return await fleet.metrics()

    text = await eventually(
        dropped,
        lambda t: values(t, "kubeprober_federation_dropped_series_total").get('cluster="moon"'),
        within=10,
        what="moon's dropped series counted",
    )
    moon = [
        line
        for line in text.splitlines()
        if 'cluster="moon"' in line and not line.startswith(("#", "kubeprober_agent_up"))
    ]
    agent_series = [line for line in moon if not line.startswith(OWN_PREFIXES)]
    assert 0 < len(agent_series) <= 20, agent_series
    # A cluster that sent nothing yet has the counter at 0: alerts can key on it at once.
    assert values(text, "kubeprober_federation_dropped_series_total")['cluster="mars"'] == 0.0
    promtool = await asyncio.create_subprocess_exec(
        binary("promtool"), "check", "metrics",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    said, _ = await promtool.communicate(text.encode())
    assert promtool.returncode == 0, said.decode()


async def test_an_agent_answer_over_the_limit_fails_its_pull(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    fleet.file.add("moon").add("mars")
    await fleet.start_aggregator(max_answer=8000)
    await fleet.start_agent("moon", [exec_probe(f"p{i}", "true") for i in range(10)])
    await fleet.start_agent("mars", [])  # its /status and /metrics are short enough

    async def metrics() -> str:
        return await fleet.metrics()

    await eventually(
        metrics,
        lambda t: values(t, "kubeprober_agent_up").get('cluster="mars"') == 1.0,
        within=10,
        what="mars pulled",
    )
    text = await eventually(
        metrics,
        lambda t: any("pull of cluster moon failed" in r.getMessage() for r in caplog.records),
        within=10,
        what="moon's pull refused",
    )
    assert values(text, "kubeprober_agent_up")['cluster="moon"'] == 0.0
    refused = [r.getMessage() for r in caplog.records if "pull of cluster moon" in r.getMessage()]
    assert "larger than 8000" in refused[0], refused


@pytest.mark.parametrize(
    ("matches", "expect"),
    [
        pytest.param(
            ['{cluster="moon"}'],
            lambda lines: lines and all('cluster="moon"' in line for line in lines),
            id="cluster",
        ),
        pytest.param(
            ['kubeprober_check_success{probe="db"}'],
            lambda lines: (
                sorted(line.split("{")[0] for line in lines) == ["kubeprober_check_success"] * 2
                and all('probe="db"' in line for line in lines)
            ),
            id="family-and-label",
        ),
        pytest.param(
            ['kubeprober_agent_up{cluster="mars"}', 'kubeprober_agent_up{cluster="moon"}'],
            lambda lines: len(lines) == 2 and all("kubeprober_agent_up{" in x for x in lines),
            id="two-selectors",
        ),
        pytest.param(
            ['{__name__=~"kubeprober_check_status", status="ERROR"}'],
            lambda lines: len(lines) == 4 and all('status="ERROR"' in x for x in lines),
            id="regex-name",
        ),
    ],
)
async def test_metrics_match(
    two_clusters: Fleet, matches: list[str], expect: Callable[[list[str]], bool]
) -> None:
    params = [("match[]", m) for m in matches]
    async with two_clusters.http.get(f"{two_clusters.url}/metrics", params=params) as resp:
        assert resp.status == 200
        text = await resp.text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert expect(lines), text


@pytest.mark.parametrize(
    "selector", ["{", "kubeprober_up{cluster=moon}", "", '{cluster~"x"}', "up{} or down"]
)
async def test_metrics_bad_selector_is_400(two_clusters: Fleet, selector: str) -> None:
    url = f"{two_clusters.url}/metrics"
    async with two_clusters.http.get(url, params={"match[]": selector}) as resp:
        assert resp.status == 400, await resp.text()


# --- authentication ---------------------------------------------------------------------------

RUN = "/api/v1/clusters/moon/probes/default/disk/run"
# (method, path, whether the read token guards it)
ENDPOINTS = [
    ("GET", "/status", True),
    ("GET", "/status?cluster=moon", True),
    ("GET", "/metrics", True),
    ("GET", "/healthz", False),
    ("GET", "/readyz", False),
    ("GET", "/", False),
    ("GET", "/openapi.json", False),
]


@pytest_asyncio.fixture
async def guarded(fleet: Fleet) -> Fleet:
    """An aggregator with a read token and moon's agent connected through the tunnel."""
    token_file = fleet.tmp / "read-token"
    token_file.write_text(READ_TOKEN + "\n")
    fleet.operators = write_operator_tokens(fleet.tmp / "operators", "alice", "bob")
    fleet.file.add("moon")
    await fleet.start_aggregator(
        read_token_file=token_file, operator_tokens_file=fleet.tmp / "operators"
    )
    await fleet.start_agent("moon", [exec_probe("disk", "true")])
    # The tunnel is not guarded: the agent got in, and its results are served.
    await eventually(
        lambda: fleet.status(token=READ_TOKEN),
        lambda d: has_results(cluster_of(d, "moon"), "disk"),
        within=10,
        what="moon online behind the read token",
    )
    return fleet


@pytest.mark.parametrize(
    ("header", "answer"),
    [
        pytest.param(None, "token required", id="none"),
        pytest.param(f"Bearer {READ_TOKEN}", "", id="right"),
        pytest.param(f"bearer {READ_TOKEN}", "", id="scheme-in-lower-case"),
        pytest.param(f"BEARER  {READ_TOKEN} ", "", id="scheme-in-upper-case"),
        pytest.param("operator", "", id="an-operator-token"),
        pytest.param("Bearer wrong-token", "invalid token", id="wrong"),
        pytest.param(f"Bearer {READ_TOKEN}x", "invalid token", id="longer"),
        pytest.param(f"Basic {READ_TOKEN}", "token required", id="other-scheme"),
        pytest.param("Bearer ", "token required", id="empty"),
    ],
)
async def test_read_token_guards_data_but_not_health_or_board(
    guarded: Fleet, header: str | None, answer: str
) -> None:
    if header == "operator":
        header = f"Bearer {guarded.operators['bob']}"
    headers = {"Authorization": header} if header is not None else {}
    for method, path, protected in ENDPOINTS:
        async with guarded.http.request(method, guarded.url + path, headers=headers) as resp:
            text = await resp.text()
            if protected and answer:
                assert resp.status == 401, (method, path)
                assert text.startswith(answer), (method, path, text)
                assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer")
            else:
                assert resp.status != 401, (method, path)
                wanted = 404 if "/nope/" in path else 200
                assert resp.status == wanted, (method, path, resp.status)


@pytest.mark.parametrize(
    ("header", "status", "answer"),
    [
        pytest.param(None, 401, "operator token required", id="none"),
        pytest.param(f"Bearer {READ_TOKEN}", 403, "the read token cannot run probes", id="read"),
        pytest.param("Bearer not-an-operator", 401, "invalid token", id="wrong"),
    ],
)
async def test_run_api_refuses_all_but_operator_tokens(
    guarded: Fleet, header: str | None, status: int, answer: str
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    async with guarded.http.post(guarded.url + RUN, headers=headers) as resp:
        assert resp.status == status
        assert (await resp.text()).startswith(answer)


async def test_run_api_runs_for_an_operator_and_logs_its_name_only(
    guarded: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    token = guarded.operators["alice"]
    caplog.set_level(logging.INFO)
    headers = {"Authorization": f"bearer {token}"}
    async with guarded.http.post(guarded.url + RUN, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["name"] == "disk"
    said = [r.getMessage() for r in caplog.records]
    assert "operator alice runs default/disk on cluster moon" in said
    assert not [line for line in said if token in line]


async def test_operator_tokens_are_revoked_and_added_without_a_restart(
    guarded: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = guarded.operators["alice"], guarded.operators["bob"]
    path = guarded.tmp / "operators"
    lines = path.read_text().splitlines(keepends=True)
    carol = new_operator_token()
    path.write_text(lines[1] + f"carol: {token_hash(carol)}\n")  # bob stays, alice goes

    async def answer(token: str) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {token}"}
        async with guarded.http.post(guarded.url + RUN, headers=headers) as resp:
            return resp.status, await resp.text()

    await eventually(
        lambda: answer(alice), lambda a: a[0] == 401, within=10, what="alice's token revoked"
    )
    assert (await answer(alice))[1].startswith("invalid token")
    assert (await answer(carol))[0] == 200
    assert (await answer(bob))[0] == 200
    # A broken edit changes nothing, and says where it is broken.
    path.write_text("carol\n")

    async def reported() -> list[str]:
        return [r.getMessage() for r in caplog.records if "tokens unusable" in r.getMessage()]

    said = await eventually(
        reported,
        bool,
        within=10,
        what="the broken file reported",
    )
    assert ":1: expected 'NAME: SHA256'" in said[0], said
    assert (await answer(carol))[0] == 200


async def test_run_api_is_off_without_operator_tokens(fleet: Fleet) -> None:
    fleet.file.add("moon")
    await fleet.start_aggregator()
    async with fleet.http.post(fleet.url + RUN, headers={"Authorization": "Bearer x"}) as resp:
        assert resp.status == 403
        assert "--operator-tokens" in await resp.text()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no operator tokens"),
        ("alice\n", ":1: expected 'NAME: SHA256'"),
        ("# ops\nalice: abc\n", ":2: alice: expected the token's sha256"),
        (f"alice: {'a' * 64}\nalice: {'b' * 64}\n", ":2: alice: name already used"),
    ],
)
async def test_a_bad_operator_tokens_file_refuses_to_start(
    fleet: Fleet, text: str, error: str
) -> None:
    path = fleet.tmp / "operators"
    path.write_text(text)
    fleet.file.add("moon")
    with pytest.raises(ValueError, match=re.escape(f"{path}{error}" if ":" in error else error)):
        await fleet.start_aggregator(operator_tokens_file=path)


async def test_empty_read_token_file_refuses_to_start(fleet: Fleet) -> None:
    token_file = fleet.tmp / "read-token"
    token_file.write_text("\n")
    fleet.file.add("moon")
    with pytest.raises(ValueError, match="read-token"):
        await fleet.start_aggregator(read_token_file=token_file)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(str(new_token("ghost")), id="unknown-cluster"),
        pytest.param(str(new_token("moon")), id="wrong-secret"),
        pytest.param("kp1.moon", id="malformed"),
        pytest.param("", id="empty"),
        pytest.param(None, id="no-header"),
    ],
)
async def test_unknown_agent_token_gets_401_and_registers_nothing(
    fleet: Fleet, token: str | None
) -> None:
    fleet.file.add("moon")
    await fleet.start_aggregator()
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with fleet.http.ws_connect(
            fleet.url + "/api/v1/tunnel", headers=headers, protocols=("kubeprober.v1",)
        ):
            pass
    assert refused.value.status == 401  # answered before anything could be registered
    doc = await fleet.status()
    assert [(c["name"], c["state"]) for c in doc["clusters"]] == [("moon", "Pending")]
    text = await fleet.metrics()
    assert "ghost" not in text
    assert values(text, "kubeprober_clusters")['state="Pending"'] == 1.0


# --- the rest of the API ----------------------------------------------------------------------


async def test_health_and_openapi(fleet: Fleet) -> None:
    fleet.file.add("moon")
    await fleet.start_aggregator()
    for path in ("/healthz", "/readyz"):
        async with fleet.http.get(fleet.url + path) as resp:
            assert resp.status == 200
    async with fleet.http.get(fleet.url + "/openapi.json") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        doc = json.loads(await resp.read())
    assert str(doc["openapi"]).startswith("3.")
    assert {
        "/status",
        "/metrics",
        "/api/v1/clusters/{cluster}/probes/{namespace}/{name}/run",
        "/api/v1/tunnel",
        "/",
        "/healthz",
        "/readyz",
        "/openapi.json",
    } <= set(doc["paths"])
    status_params = {p["name"] for p in doc["paths"]["/status"]["get"]["parameters"]}
    assert {"cluster", "status", "layer"} <= status_params
    run = doc["paths"]["/api/v1/clusters/{cluster}/probes/{namespace}/{name}/run"]["post"]
    # Running needs an operator token, always; reads may be open, or take either token.
    assert run["security"] == [{"operatorToken": []}]
    assert {"401", "403"} <= set(run["responses"])
    schemes = doc["components"]["securitySchemes"]
    assert {n: (s["type"], s["scheme"]) for n, s in schemes.items()} == {
        "agentToken": ("http", "bearer"),
        "readToken": ("http", "bearer"),
        "operatorToken": ("http", "bearer"),
    }
    assert doc["paths"]["/api/v1/tunnel"]["get"]["security"] == [{"agentToken": []}]
    for path in ("/status", "/metrics"):
        assert {"readToken": []} in doc["paths"][path]["get"]["security"]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        pytest.param("?status=BROKEN", ["status", "BROKEN"], id="status"),
        pytest.param("?layer=network", ["layer", "network"], id="layer"),
        pytest.param("?cluster=moon&history=yes", ["history", "yes"], id="history-value"),
        pytest.param("?history=1", ["exactly one cluster"], id="history-no-cluster"),
        pytest.param("?history=1&cluster=moon,mars", ["exactly one cluster"], id="history-two"),
    ],
)
async def test_status_filter_with_unknown_value_is_400(
    fleet: Fleet, query: str, words: list[str]
) -> None:
    fleet.file.add("moon")
    await fleet.start_aggregator()
    async with fleet.http.get(f"{fleet.url}/status{query}") as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert all(w in error for w in words), error


async def test_status_filters_over_http(two_clusters: Fleet) -> None:
    doc = await two_clusters.status("?cluster=mars&status=error&layer=middleware")
    assert [(c["name"], probe_names(c)) for c in doc["clusters"]] == [("mars", {"db"})]
    assert doc["clusters"][0]["summary"]["total"] == 2  # summaries still cover the cluster


def histories(doc: dict[str, Any]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Every check's ``history`` in a /status document, by (cluster, probe, check)."""
    return {
        (cl["name"], p["name"], c["name"]): c["history"]
        for cl in doc["clusters"]
        for p in cl["probes"]
        for c in p["checks"]
        if "history" in c
    }


async def test_one_clusters_history_is_fetched_from_its_agent_and_never_kept(
    fleet: Fleet,
) -> None:
    fleet.file.add("moon").add("mars")
    await fleet.start_aggregator()
    flips = fleet.tmp / "runs"
    script = f"echo run >> {flips}; test $(($(wc -l < {flips}) % 2)) = 1"
    await fleet.start_agent(
        "moon",
        [
            exec_probe("flip", "sh", "-c", script, interval="0.2s"),
            exec_probe("disk", "true", layer="infrastructure"),
        ],
    )
    await fleet.wait_cluster("moon", lambda c: has_results(c, "flip", "disk"), "results")

    async def moon_history() -> dict[str, Any]:
        return await fleet.status("?cluster=moon&history=1")

    doc = await eventually(
        moon_history,
        lambda d: len(histories(d).get(("moon", "flip", "check"), [])) >= 3,
        within=10,
        what="three runs of flip in its history",
    )
    assert [c["name"] for c in doc["clusters"]] == ["moon"]
    moon = doc["clusters"][0]
    (flip,) = (p["checks"][0] for p in moon["probes"] if p["name"] == "flip")
    statuses = [h["status"] for h in flip["history"]]
    assert set(statuses) == {"PASS", "ERROR"}  # each run alternates
    assert all(a != b for a, b in itertools.pairwise(statuses))
    newest = flip["history"][-1]
    assert (newest["startedAt"], newest["status"]) == (flip["lastRun"], flip["status"])
    assert set(newest) == {"startedAt", "status", "durationSeconds", "message"}
    assert histories(doc)[("moon", "disk", "check")][0]["status"] == "PASS"
    # Filters narrow it as they narrow any /status.
    narrowed = await fleet.status("?cluster=moon&history=1&layer=infrastructure")
    assert set(histories(narrowed)) == {("moon", "disk", "check")}

    # The fleet's document never carries histories, whatever was asked before.
    for query in ("", "?cluster=moon", "?status=ERROR"):
        assert histories(await fleet.status(query)) == {}, query

    # mars is defined but has no agent: nobody holds its history.
    async with fleet.http.get(f"{fleet.url}/status?cluster=mars&history=1") as resp:
        assert resp.status == 503
        assert "not connected" in (await resp.json())["error"]
    async with fleet.http.get(f"{fleet.url}/status?cluster=pluto&history=1") as resp:
        assert resp.status == 404


async def test_histories_in_flight_are_bounded(fleet: Fleet) -> None:
    """Readers beyond --max-history-requests get 503 at once rather than waiting on agents."""
    fleet.file.add("moon")
    await fleet.start_aggregator(max_history_requests=1)
    asked, release = asyncio.Event(), asyncio.Event()

    async def status(request: web.Request) -> web.Response:
        if request.query.get("history") == "1":
            asked.set()
            await release.wait()
        return web.json_response({"clusters": [{"name": "moon", "probes": []}]})

    async def assignment(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"revision": body["revision"], "accepted": [], "refused": []})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="")

    slow = web.Application()  # an agent whose history takes as long as the test wants
    slow.router.add_get("/status", status)
    slow.router.add_get("/metrics", metrics)
    slow.router.add_put("/v1/assignment", assignment)
    client = TunnelClient(
        fleet.url.replace("http", "ws", 1), slow, token_file=fleet.file.token_file("moon")
    )
    await client.start()
    fleet.stack.push_async_callback(client.close)
    await fleet.wait_cluster("moon", lambda c: c["state"] == "Online", "moon online")

    history = f"{fleet.url}/status?cluster=moon&history=1"
    first = asyncio.create_task(fleet.http.get(history))
    await asked.wait()
    async with fleet.http.get(history) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert "retry" in (await resp.json())["error"]
    await fleet.status()  # reads and pulls go on meanwhile
    release.set()
    async with await first as resp:
        assert resp.status == 200
    async with fleet.http.get(history) as resp:  # the slot is free again
        assert resp.status == 200


async def start_with_operator(fleet: Fleet) -> dict[str, str]:
    """Start the aggregator with one operator token; return the header that carries it."""
    token = write_operator_tokens(fleet.tmp / "operators", "ops")["ops"]
    await fleet.start_aggregator(operator_tokens_file=fleet.tmp / "operators")
    return {"Authorization": f"Bearer {token}"}


async def test_run_api_returns_fresh_results(fleet: Fleet) -> None:
    counter = fleet.tmp / "runs"
    script = f'echo run >> {counter}; echo "run $(wc -l < {counter})"'
    fleet.file.add("moon").add("mars")
    operator = await start_with_operator(fleet)
    await fleet.start_agent("moon", [exec_probe("count", "sh", "-c", script, layer="kubernetes")])
    entry = await fleet.wait_cluster("moon", lambda c: has_results(c, "count"), "first run")
    assert entry["probes"][0]["checks"][0]["message"] == "run 1"

    url = f"{fleet.url}/api/v1/clusters/moon/probes/default/count/run"
    async with fleet.http.post(url, headers=operator) as resp:
        assert resp.status == 200, await resp.text()
        view = await resp.json()
    assert (view["namespace"], view["name"], view["layer"], view["status"]) == (
        "default",
        "count",
        "kubernetes",
        "PASS",
    )
    (check,) = view["checks"]
    assert (check["name"], check["status"], check["message"]) == ("check", "PASS", "run 2")
    assert check["durationSeconds"] is not None
    assert counter.read_text() == "run\nrun\n"


@pytest.mark.parametrize(
    ("path", "status", "word"),
    [
        pytest.param("/api/v1/clusters/pluto/probes/default/count/run", 404, "pluto", id="cluster"),
        pytest.param("/api/v1/clusters/mars/probes/default/count/run", 503, "mars", id="offline"),
        pytest.param("/api/v1/clusters/moon/probes/default/nope/run", 404, "nope", id="probe"),
        pytest.param("/api/v1/clusters/moon/probes/other/count/run", 404, "other", id="namespace"),
        # decoded by the aggregator, encoded again for the agent: an answer, not a crash
        pytest.param("/api/v1/clusters/moon/probes/default/no%20pe/run", 404, "no pe", id="space"),
    ],
)
async def test_run_api_errors(fleet: Fleet, path: str, status: int, word: str) -> None:
    fleet.file.add("moon").add("mars")
    operator = await start_with_operator(fleet)
    await fleet.start_agent("moon", [exec_probe("count", "true")])
    await fleet.wait_cluster("moon", lambda c: has_results(c, "count"), "results")
    async with fleet.http.post(fleet.url + path, headers=operator) as resp:
        assert resp.status == status
        error = (await resp.json())["error"]
    assert word in error


# --- the clusters file changing under a connected agent ---------------------------------------


async def test_a_removed_cluster_is_cut_off_and_comes_back_online_when_re_added(
    fleet: Fleet,
) -> None:
    fleet.file.add("moon").add("mars")
    await fleet.start_aggregator()
    moon = await fleet.start_agent("moon", [exec_probe("disk", "true")])
    await fleet.wait_cluster("moon", lambda c: has_results(c, "disk"), "results")

    async def tunnel_up() -> float:
        async with fleet.http.get(f"{moon.url}/metrics") as resp:
            return values(await resp.text(), "kubeprober_agent_tunnel_connected")[""]

    assert await tunnel_up() == 1.0

    token, labels = fleet.file.tokens.pop("moon"), fleet.file.labels.pop("moon")
    fleet.file.write()

    async def names() -> list[str]:
        return [c["name"] for c in (await fleet.status())["clusters"]]

    await eventually(names, lambda n: n == ["mars"], within=5, what="moon removed")
    assert 'cluster="moon"' not in await fleet.metrics()
    # Its token is no longer valid, so its session must not outlive it.
    await eventually(tunnel_up, lambda up: up == 0.0, within=5, what="moon's tunnel cut")

    fleet.file.tokens["moon"], fleet.file.labels["moon"] = token, labels
    fleet.file.write()
    await fleet.wait_cluster(
        "moon", lambda c: has_results(c, "disk"), "moon back online", within=15
    )
