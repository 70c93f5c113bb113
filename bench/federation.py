"""Federation benchmark: ingest a fleet's agent expositions, then serve the merged /metrics.

Builds N real agent expositions (exporter.metrics over a ResultStore, rendered by
prometheus_client as the agent serves them, about 50 series each), then times in one run:
one full ingest round (parse + relabel), the join that serves /metrics (and a few match[]
queries), and prometheus_client rendering the very same series from a custom collector. It
prints the memory the caches hold per cluster (tracemalloc and RSS). No networking: the pull
through the tunnel is bench/fleet.py's business.

    .venv/bin/python bench/federation.py --clusters 2000 --runs 50
"""

from __future__ import annotations

import argparse
import functools
import gc
import gzip
import itertools
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from kubeprober.aggregator.federation import Federation, OwnFamily
from kubeprober.exporter.metrics import AgentMetrics
from kubeprober.exporter.store import ResultStore
from kubeprober.probers.probe import Check, Layer, Probe
from kubeprober.probers.result import CheckResult
from kubeprober.probers.status import Status

OWN = (
    OwnFamily("kubeprober_agent_up", "1 if the last pull of the cluster's agent succeeded."),
    OwnFamily("kubeprober_agent_last_seen_timestamp_seconds", "When the agent was last heard."),
    OwnFamily("kubeprober_agent_pull_duration_seconds", "How long the last pull took."),
    OwnFamily("kubeprober_cluster_maintenance", "1 while the cluster is in maintenance."),
)
PROBES: list[tuple[str, Layer, tuple[str, ...]]] = [
    ("web", "application", ("home", "login")),
    ("dns", "kubernetes", ("resolve", "search")),
    ("db", "middleware", ("tcp", "query")),
    ("etcd", "infrastructure", ("write", "read")),
]


def rss_kb() -> int:
    """Current resident set size in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def agent_body(rng: random.Random) -> bytes:
    """Render one agent's /metrics: one probe of two checks with a random outcome."""
    name, layer, checks = rng.choice(PROBES)
    probe = Probe(
        namespace=rng.choice(("default", "kubeprober", "team-a")),
        name=name,
        layer=layer,
        checks=tuple(Check(c, "bench", None, {}, 10.0) for c in checks),
        interval=30.0,
    )
    store = ResultStore()
    store.set_probes([probe])
    store.set_schedule(probe.key, next_run=1_800_000_030.0, interval=30.0)
    for _ in range(rng.randint(1, 3)):
        results = {
            c: CheckResult(
                rng.choice((Status.PASS, Status.PASS, Status.PASS, Status.WARN, Status.ERROR)),
                "",
                1_800_000_000.0 + rng.random() * 30,
                rng.random(),
                {"connect": rng.random() / 10},
            )
            for c in checks
        }
        store.record(probe.key, results, duration=1.0)
    metrics = AgentMetrics(store, version=rng.choice(("1.0.0", "1.1.0")))
    for _ in range(5):
        metrics.scheduler_lag.observe(rng.random() / 50)
    return generate_latest(metrics.registry)


class Replay(Collector):
    """Yields prebuilt families: prometheus_client's render cost alone, no family building."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        """Yield the families."""
        return iter(self._families)


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    """Run ``fn`` ``runs`` times; return each duration in seconds."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def ms(values: list[float]) -> str:
    """Format median and p99 in milliseconds."""
    values = sorted(values)
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    return f"median={statistics.median(values) * 1000:.1f}ms p99={p99 * 1000:.1f}ms"


def ingest_round(fed: Federation, bodies: dict[str, bytes]) -> None:
    """Ingest every cluster's body and set its own series, as one pull round does."""
    for name, body in bodies.items():
        fed.ingest(name, body)
        fed.set_own(
            name,
            {
                "kubeprober_agent_up": 1.0,
                "kubeprober_agent_last_seen_timestamp_seconds": 1_800_000_000.0,
                "kubeprober_agent_pull_duration_seconds": 0.01,
                "kubeprober_cluster_maintenance": 0.0,
            },
        )


def main(args: argparse.Namespace) -> None:
    rng = random.Random(42)
    # This machine's speed right now (other work shares its 2 cores): read figures against it.
    calib = statistics.median(timed(lambda: sum(range(1000)), 200))
    print(f"calibration: sum(range(1000)) takes {calib * 1e6:.1f}us here")
    t0 = time.perf_counter()
    bodies = {f"cluster-{i:05d}": agent_body(rng) for i in range(args.clusters)}
    series = sum(b.count(b"\n") - b.count(b"\n#") for b in bodies.values())
    print(
        f"clusters={args.clusters} agent series={series} (~{series / args.clusters:.0f}/cluster) "
        f"body bytes={sum(map(len, bodies.values())) / 1e6:.1f}MB "
        f"(generated in {time.perf_counter() - t0:.1f}s)"
    )

    gc.collect()
    rss0 = rss_kb()
    fed = Federation(OWN)
    wall, cpu = time.perf_counter(), time.process_time()
    ingest_round(fed, bodies)
    first = (time.perf_counter() - wall, time.process_time() - cpu)
    gc.collect()
    rss1 = rss_kb()
    # Every agent's body changed (a check ran): the lag histogram's count differs each round.
    changed = [
        {
            k: v.replace(b"lag_seconds_count 5.0", f"lag_seconds_count {n}.0".encode())
            for k, v in bodies.items()
        }
        for n in (6, 7, 8)
    ]
    rounds = []
    for variant in changed:
        wall, cpu = time.perf_counter(), time.process_time()
        ingest_round(fed, variant)
        rounds.append((time.perf_counter() - wall, time.process_time() - cpu))
    wall, cpu = time.perf_counter(), time.process_time()
    ingest_round(fed, changed[-1])
    same = (time.perf_counter() - wall, time.process_time() - cpu)
    steady = statistics.median(r[1] for r in rounds)
    steady_wall = statistics.median(r[0] for r in rounds)
    print(
        f"ingest round (parse+relabel+own series), wall/CPU: first={first[0] * 1000:.0f}/"
        f"{first[1] * 1000:.0f}ms; all bodies changed: median CPU={steady * 1000:.0f}ms "
        f"({steady / series * 1e6:.2f}us/series, wall {steady_wall * 1000:.0f}ms); "
        f"no body changed: {same[0] * 1000:.0f}/{same[1] * 1000:.0f}ms"
    )

    own = {n.name: 1.0 for n in OWN}
    refresh = timed(lambda: fed.set_own_many(dict.fromkeys(bodies, own)), 10)
    print(f"refresh every cluster's own series (set_own_many): {ms(refresh)}")

    text = fed.render()
    total = sum(1 for line in text.split(b"\n") if line and not line.startswith(b"#"))
    serve = timed(fed.render, args.runs)
    print(
        f"serve /metrics (join): {ms(serve)} over {args.runs} runs; "
        f"{total} series, {len(text) / 1e6:.1f}MB   (target median <= 50ms)"
    )
    # gzip as Prometheus asks for it. The puller compresses what a round changed right after
    # the round; before each scrape the aggregator refreshes its own series (last_seen moves),
    # so those families' groups are compressed again within the scrape itself.
    fed.compress()
    seen = itertools.count()

    def scrape(render: Callable[[], bytes]) -> Callable[[], bytes]:
        def run() -> bytes:
            now = {**own, OWN[1].name: 1.8e9 + next(seen)}
            fed.set_own_many({name: now for name in bodies})
            return render()

        return run

    zipped = scrape(fed.render_gzip)()
    assert sorted(gzip.decompress(zipped).splitlines()) == sorted(fed.render().splitlines())
    plain_t, gzip_t = (
        timed(scrape(fed.render), args.runs),
        timed(scrape(fed.render_gzip), args.runs),
    )
    whole = timed(functools.partial(gzip.compress, text, 1), 3)
    print(
        f"scrape after the own-series refresh: plain {ms(plain_t)}, gzip {ms(gzip_t)} -> "
        f"{statistics.median(gzip_t) / statistics.median(plain_t):.2f}x the plain time "
        f"(target <= 1.5x); {len(zipped) / 1e6:.2f}MB gzip, {len(text) / len(zipped):.1f}x "
        f"smaller (target >= 10x); gzip of the whole body instead: {ms(whole)}"
    )
    ingest_round(fed, bodies)  # every body changed back: every group is stale
    print(f"compress after a round that changed every body: {ms(timed(fed.compress, 1))}")
    queries = {
        "match[]={__name__=~'kubeprober_check_.*'}": ['{__name__=~"kubeprober_check_.*"}'],
        "match[]=kubeprober_check_success{cluster='cluster-00042'}": [
            'kubeprober_check_success{cluster="cluster-00042"}'
        ],
        "match[]={cluster='cluster-00042'}": ['{cluster="cluster-00042"}'],
        "match[]={probe='web'} (reads candidate lines)": ['{probe="web"}'],
    }
    for label, match in queries.items():
        print(
            f"  {label}: {ms(timed(functools.partial(fed.render, match), max(5, args.runs // 5)))}"
        )

    families = list(text_string_to_metric_families(text.decode()))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Replay(families))
    prom = timed(lambda: generate_latest(registry), args.prom_runs)
    ratio = statistics.median(prom) / statistics.median(serve)
    print(
        f"prometheus_client generate_latest of the same series: {ms(prom)} "
        f"over {args.prom_runs} runs -> ours is {ratio:.0f}x faster   (target >= 20x)"
    )
    del families, text

    gc.collect()
    tracemalloc.start()
    traced = Federation(OWN)
    ingest_round(traced, bodies)
    traced.compress()  # the gzip groups are part of the cache
    gc.collect()
    cache = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(
        f"cache memory: tracemalloc={cache / args.clusters / 1024:.1f}KiB/cluster "
        f"RSS delta of first round={(rss1 - rss0) / args.clusters:.1f}KiB/cluster "
        f"(RSS now {rss_kb() / 1024:.0f}MiB incl. the bench's own bodies; "
        f"target <= 150KB/cluster for the whole aggregator)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=50, help="serve runs")
    parser.add_argument("--prom-runs", type=int, default=5, help="prometheus_client runs")
    main(parser.parse_args())
