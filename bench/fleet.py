"""Fleet benchmark: N agents (real tunnel clients) against one real aggregator on loopback.

The aggregator (this process) is the product's own ``Aggregator`` with its HTTP app, puller
and federation; the agents run in a child process as ``TunnelClient``s serving a small app
whose ``/status`` and ``/metrics`` are real agent bodies rendered once by the exporter code.
Prints: a full pull round, aggregator memory per cluster, ``/metrics`` serve time next to
prometheus_client rendering the same series, and ``/status`` latency under 50 readers.

    .venv/bin/python bench/fleet.py --agents 2000 --checks 2    # ~50 series per agent
    .venv/bin/python bench/fleet.py --agents 200 --checks 50    # 50 checks per agent
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator

import aiohttp
from aiohttp import web

# bench/tunnel.py would shadow the tunnel package: the repository root must come first.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from kubeprober.aggregator.api import make_app
from kubeprober.aggregator.process import tune_gc
from kubeprober.aggregator.puller import PullSettings
from kubeprober.aggregator.state import Aggregator, AggregatorSettings
from kubeprober.aggregator.tunnel_server import TunnelServerSettings
from kubeprober.exporter.metrics import AgentMetrics
from kubeprober.exporter.status import AgentFacts, status_document
from kubeprober.exporter.store import ResultStore
from kubeprober.exporter.tunnel_client import TunnelClient, TunnelClientSettings
from kubeprober.pacing import BackoffSettings
from kubeprober.probers.probe import Check, Probe
from kubeprober.probers.result import CheckResult
from kubeprober.probers.status import Status
from kubeprober.tunnel.token import new_token


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


RUNS = 4
"""Successive runs an agent's bodies are rendered after; it serves them in turn."""


def agent_bodies(checks: int) -> list[tuple[bytes, bytes]]:
    """Render one real agent's /status and /metrics with ``checks`` checks, after each of
    RUNS successive runs of every probe: what an agent serves when every check ran between
    two pulls (timestamps, durations, counters and lag buckets move; statuses do not)."""
    store = ResultStore()
    per_probe = 5
    probes = [
        Probe(
            namespace="kubeprober",
            name=f"probe-{p}",
            layer="application",
            interval=30.0,
            checks=tuple(
                Check(f"check-{c}", "tcp", None, {}, 5.0)
                for c in range(min(per_probe, checks - p * per_probe))
            ),
        )
        for p in range((checks + per_probe - 1) // per_probe)
    ]
    store.set_probes(probes)
    metrics = AgentMetrics(store, version="bench")
    bodies = []
    start = time.time()
    for run in range(RUNS):
        now = start + 30 * run
        took = 0.01 + 0.001 * run
        for p in probes:
            results = {
                c.name: CheckResult(Status.PASS, "", now, took, {"connect": took / 2})
                for c in p.checks
            }
            store.record(p.key, results, duration=took)
            store.set_schedule(p.key, next_run=now + 30, interval=30.0)
            metrics.scheduler_lag.observe(0.001 * (run + 1))
        status = status_document(store, AgentFacts(cluster="bench", version="bench"))
        bodies.append((json.dumps(status).encode(), generate_latest(metrics.registry)))
    return bodies


def agent_app(
    bodies: list[tuple[bytes, bytes]], served: dict[str, int] | None = None
) -> web.Application:
    """What each simulated agent serves through its tunnel: the next run's bodies each pull;
    ``served`` (shared by many agents) counts the /status answered."""
    pulls = {"/status": 0, "/metrics": 0}
    served = {"/status": 0} if served is None else served

    async def get_status(request: web.Request) -> web.Response:
        pulls["/status"] += 1
        served["/status"] += 1
        status = bodies[pulls["/status"] % len(bodies)][0]
        return web.Response(body=status, content_type="application/json")

    async def get_metrics(request: web.Request) -> web.Response:
        pulls["/metrics"] += 1
        metrics = bodies[pulls["/metrics"] % len(bodies)][1]
        return web.Response(body=metrics, content_type="text/plain")

    async def put_assignment(request: web.Request) -> web.Response:
        # The answer docs/tunnel.md requires: anything less is retried by the aggregator.
        body = await request.json()
        names = [p["metadata"]["name"] for p in body["probes"]]
        return web.json_response({"revision": body["revision"], "accepted": names, "refused": []})

    app = web.Application()
    app.router.add_get("/status", get_status)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_put("/v1/assignment", put_assignment)
    return app


async def run_agents(port: int, token_dir: pathlib.Path, checks: int) -> None:
    """Child process: one TunnelClient per token until stdin closes. Each line read from
    stdin is answered with the number of /status pulls served so far; a line ``notify S``
    first makes each agent send a change notice every S seconds (spread over the period), as
    an agent whose checks run at that interval does."""
    bodies = agent_bodies(checks)
    served = {"/status": 0}
    settings = TunnelClientSettings(backoff=BackoffSettings(initial=0.2, maximum=2.0, floor=0.0))
    paths = sorted(token_dir.glob("*.token"))  # noqa: ASYNC240 - once, at start
    clients = [
        TunnelClient(
            f"ws://127.0.0.1:{port}", agent_app(bodies, served), token_file=p, settings=settings
        )
        for p in paths
    ]
    for client in clients:
        await client.start()
    # 300 s: scaleout's 2,500 agents dialling one replica while three others run beside it
    # on the same two cores have taken over 120 s (a slow connect is not a figure of it).
    await asyncio.wait_for(asyncio.gather(*(c.wait_connected() for c in clients)), 300)

    async def notify(client: TunnelClient, offset: float, every: float) -> None:
        await asyncio.sleep(offset)
        revision = 0
        while True:
            revision += 1
            await client.notify({"type": "changed", "revision": revision})
            await asyncio.sleep(every)

    notices: list[asyncio.Task[None]] = []
    print("CONNECTED", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.startswith("notify ") and not notices:
            every = float(line.split()[1])
            notices = [
                asyncio.create_task(notify(c, every * i / len(clients), every))
                for i, c in enumerate(clients)
            ]
        print(served["/status"], flush=True)
    for task in notices:
        task.cancel()
    await asyncio.gather(*notices, return_exceptions=True)
    for client in clients:
        await client.close()


class Replay(Collector):
    """Yields the same series the federation serves, for prometheus_client to render."""

    def __init__(self, clusters: list[str], body: bytes) -> None:
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                self.samples.append((s.name, dict(s.labels), s.value))
        self.clusters = clusters

    def collect(self) -> Iterator[Metric]:
        """One gauge family per sample name, every cluster's copy of each sample."""
        families: dict[str, GaugeMetricFamily] = {}
        for cluster in self.clusters:
            for name, labels, value in self.samples:
                fam = families.get(name)
                if fam is None:
                    fam = families[name] = GaugeMetricFamily(
                        name, name, labels=["cluster", *labels]
                    )
                fam.add_metric([cluster, *labels.values()], value)
        yield from families.values()


def write_fleet(directory: pathlib.Path, names: list[str]) -> pathlib.Path:
    """Write a token file per cluster (``NAME.token``) and the clusters file that defines
    them all; return the clusters file."""
    docs = []
    for name in names:
        token = new_token(name)
        (directory / f"{name}.token").write_text(str(token))
        docs.append(
            f"apiVersion: kubeprober.io/v1\nkind: Cluster\nmetadata: {{name: {name}}}\n"
            f"spec: {{tokenSecretRef: {{name: t-{name}}}}}\n---\napiVersion: v1\n"
            f"kind: Secret\nmetadata: {{name: t-{name}}}\nstringData: {{token: {token}}}\n"
        )
    clusters_file = directory / "clusters.yaml"
    clusters_file.write_text("---\n".join(docs))
    return clusters_file


async def bench(agents: int, checks: int) -> None:
    """Parent: the aggregator, and every measurement."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="kp-fleet-"))
    names = [f"c{i:04d}" for i in range(agents)]
    clusters_file = write_fleet(tmp, names)
    gc.collect()
    rss_start = rss_bytes()
    settings = AggregatorSettings(
        clusters_file=clusters_file,
        pull=PullSettings(timeout=30.0, concurrency=200),
        tunnel=TunnelServerSettings(max_handshakes=agents),
    )
    agg = Aggregator(settings)
    agg.reload()
    agg.ready = True
    agg.connect_puller()
    assert agg.puller is not None
    runner = web.AppRunner(make_app(agg), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=agents)
    await site.start()
    port = runner.addresses[0][1]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child",
        str(port),
        str(tmp),
        str(checks),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdin is not None
    await asyncio.wait_for(child.stdout.readline(), 180)
    while True:  # the child says CONNECTED; the aggregator may still be registering
        if sum(v.connected for v in agg.views.values()) == agents:
            break
        await asyncio.sleep(0.1)

    rounds, cpu = [], []
    collections_before = [s["collections"] for s in gc.get_stats()]
    for _ in range(3):  # the first round opens one agent stream per cluster
        t0, c0 = time.monotonic(), time.process_time()
        ok = await asyncio.gather(*(agg.puller.pull(v) for v in agg.views.values()))
        rounds.append(time.monotonic() - t0)
        cpu.append(time.process_time() - c0)
        assert all(ok), f"{ok.count(False)} pulls failed"
    after = [s["collections"] for s in gc.get_stats()]
    collections = [a - b for a, b in zip(after, collections_before, strict=True)]
    gc.collect()
    per_cluster = (rss_bytes() - rss_start) / agents

    # Readers run in their own process, as Prometheus and browsers would: measuring from
    # this event loop would add the client's own work to the server's latency.
    reader = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--readers",
        f"http://127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(reader.communicate(), 300)
    figures = json.loads(out)
    serve, latencies, size = figures["metrics"], figures["status"], figures["size"]
    cold = figures["cold"]
    series = sum(1 for line in agg.federation.render().splitlines() if not line.startswith(b"#"))

    _, agent_metrics = agent_bodies(checks)[0]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Replay(names, agent_metrics))
    t0 = time.monotonic()
    generate_latest(registry)
    client_python = time.monotonic() - t0

    child.stdin.close()
    await asyncio.wait_for(child.wait(), 120)
    agg.agents.close()
    await runner.cleanup()

    med = statistics.median(serve)
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(f"agents={agents} checks/agent={checks} series={series} /metrics={size / 1e6:.1f} MB")
    print(
        "full pull round          "
        + ", ".join(f"{r:.2f} s" for r in rounds)
        + "   (target <= 2 s; the first opens streams)"
    )
    print(
        "  aggregator CPU in it   "
        + ", ".join(f"{c:.2f} s" for c in cpu)
        + "   (the rest is waiting for the agents' process)"
    )
    print(
        "  garbage collections    "
        + " / ".join(f"gen{g} {n}" for g, n in enumerate(collections))
        + "   (in the three rounds, with the aggregator's thresholds)"
    )
    print(f"aggregator RSS/cluster   {per_cluster / 1024:.0f} KiB   (target <= 150 KB)")
    print(
        f"/metrics served          median {med * 1000:.1f} ms, max {max(serve) * 1000:.1f} ms"
        "   (target median <= 50 ms)"
    )
    print(
        f"prometheus_client render {client_python * 1000:.0f} ms for the same series: "
        f"{client_python / med:.0f}x slower   (target >= 20x)"
    )
    print(
        f"/status, 50 readers      p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms   (target p99 <= 50 ms; 10 rounds on open connections)"
    )
    print(f"  first round            max {max(cold) * 1000:.1f} ms   (it opens the 50 connections)")
    print(f"machine load average     {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


async def readers(base: str) -> None:
    """Reader process: time /metrics scrapes, then /status under 50 concurrent readers."""
    # Time to receive the (gzip) response; decompressing 50 copies at once would time this
    # one Python client rather than the server.
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        serve, size = [], 0
        for _ in range(30):
            # curl, like Prometheus a compiled client: a Python client reading 12 MB would
            # time itself as much as the server.
            out = await asyncio.create_subprocess_exec(
                "curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download}",
                base + "/metrics", stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            took, got = (await out.communicate())[0].split()
            serve.append(float(took))
            size = int(got)

        async def read_status() -> float:
            t0 = time.monotonic()
            async with http.get(base + "/status") as resp:
                await resp.read()
            return time.monotonic() - t0

        # The first round opens the 50 connections (about 50 ms for all of them on this
        # machine); readers then keep them alive, as browsers and scrapers do.
        cold = await asyncio.gather(*(read_status() for _ in range(50)))
        latencies: list[float] = []
        for _ in range(10):
            latencies += await asyncio.gather(*(read_status() for _ in range(50)))
    print(json.dumps({"metrics": serve, "status": latencies, "cold": cold, "size": size}))


def main() -> None:
    """Run the benchmark, or the agents' child process."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--checks", type=int, default=2)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--readers", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.readers:
        asyncio.run(readers(args.readers))
    elif args.child:
        port, directory, checks = args.child
        asyncio.run(run_agents(int(port), pathlib.Path(directory), int(checks)))
    else:
        tune_gc()  # as `kubeprober aggregator` does
        asyncio.run(bench(args.agents, args.checks))


if __name__ == "__main__":
    main()
