"""Scheduler benchmark: N probes of a trivial prober at a fixed interval, in the agent's core.

Runs the real store, scheduler, runner, metrics and HTTP app in this process (the prober is
a no-op, so the figures are the agent's own overhead), scrapes /metrics every 15 s like
Prometheus would, and prints scheduling lag p50/p99, peak RSS and CPU use.

    .venv/bin/python bench/scheduler.py --probes 500 --interval 1 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from kubeprober.exporter.http import AgentState, make_app
from kubeprober.exporter.metrics import AgentMetrics
from kubeprober.exporter.scheduler import Scheduler
from kubeprober.exporter.status import AgentFacts
from kubeprober.exporter.store import ResultStore
from kubeprober.probers.probe import Check, Probe
from kubeprober.probers.registry import Prober
from kubeprober.probers.sdk import Context, Outcome


@dataclass(frozen=True)
class NoopSpec:
    """The trivial prober takes no options."""


async def noop(spec: NoopSpec, ctx: Context) -> Outcome:
    """Pass at once: the benchmark measures the agent, not a target."""
    return Outcome.passed()


def rss_mb() -> float:
    """Current resident set size in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main(args: argparse.Namespace) -> None:
    probers = {"noop": Prober("noop", "does nothing", NoopSpec, noop, "bench")}
    probes = [
        Probe(
            namespace="bench",
            name=f"p{i:04d}",
            layer="application",
            interval=args.interval,
            checks=(Check("c", "noop", NoopSpec(), {}, 5.0),),
        )
        for i in range(args.probes)
    ]
    store = ResultStore()
    metrics = AgentMetrics(store, version="bench")
    lags: list[float] = []

    def observe(lag: float) -> None:
        lags.append(lag)
        metrics.scheduler_lag.observe(lag)

    scheduler = Scheduler(store, probers, observe_lag=observe)
    state = AgentState(
        store=store,
        registry=metrics.registry,
        facts=lambda: AgentFacts("bench", "bench"),
        ready=True,
    )
    runner = web.AppRunner(make_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.monotonic()
    scheduler.apply(probes)
    scrape_sizes = []
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - wall0 < args.seconds:
            await asyncio.sleep(min(15.0, args.seconds))
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                scrape_sizes.append(len(await resp.read()))
    wall = time.monotonic() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    await scheduler.stop()
    await runner.cleanup()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    # Drop the first interval: every probe starts at once, by design, on startup.
    steady = lags[args.probes :] or lags
    q = statistics.quantiles(steady, n=100)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"probes={args.probes} interval={args.interval}s duration={wall:.0f}s runs={len(lags)}")
    print(
        f"scheduling lag p50={q[49] * 1000:.2f}ms p99={q[98] * 1000:.2f}ms "
        f"max={max(steady) * 1000:.2f}ms   (target p99 <= 20ms)"
    )
    print(f"RSS now={rss_mb():.1f}MB peak={peak:.1f}MB   (target <= 80MB)")
    print(f"CPU {100 * cpu / wall:.1f}% of one core   (target <= 25%)")
    print(f"/metrics size {scrape_sizes[-1] / 1024:.0f} KiB")
    print(
        f"machine load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=500)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    asyncio.run(main(parser.parse_args()))
