"""Kubernetes write benchmark: N Probes x M checks at a fixed interval, results to ProbeStatus.

Runs the agent's Kubernetes mode (watch, conditions, ProbeStatus writer, events) with the
real store and scheduler against the project's API test server, started in a child process
so the two do not share a GIL. The checks are ``tcp`` checks whose prober is replaced by a
no-op (a few flap between PASS and ERROR to produce events), so the figures are the kube
layer's own: API requests per minute, status writes per probe run, and status-write lag
(from a run's result to its ProbeStatus write answered), p50/p99/max.

    .venv/bin/python bench/kube_writes.py                       # 200 x 5 at 10 s for 2 min
    .venv/bin/python bench/kube_writes.py --probes 50 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubeprober.exporter.kube.mode import KubeMode, KubeSettings  # noqa: E402
from kubeprober.exporter.scheduler import Scheduler  # noqa: E402
from kubeprober.exporter.store import ResultStore, Transition  # noqa: E402
from kubeprober.kube.api import KubeApi  # noqa: E402
from kubeprober.kube.resources import PROBES, Resource  # noqa: E402
from kubeprober.probers import tcp  # noqa: E402
from kubeprober.probers.registry import Prober  # noqa: E402
from kubeprober.probers.result import CheckResult  # noqa: E402
from kubeprober.probers.sdk import Context, Outcome  # noqa: E402

NAMESPACE = "bench"
NAMESPACES = Resource("", "v1", "namespaces", "Namespace")
CRDS = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition"
)
_flips: dict[str, int] = {}


async def noop(spec: tcp.Spec, ctx: Context) -> Outcome:
    """Pass at once, or alternate ERROR/PASS for the flapping probes (port 2)."""
    if spec.port != 2:
        return Outcome.passed()
    n = _flips[ctx.probe] = _flips.get(ctx.probe, 0) + 1
    return Outcome.passed() if n % 2 else Outcome.error("flapping on purpose")


class Store(ResultStore):
    """Tells the kube layer about each run, as the agent does."""

    def __init__(self) -> None:
        super().__init__()
        self.mode: KubeMode | None = None
        self.runs = 0

    def record(
        self, key: tuple[str, str], results: Mapping[str, CheckResult], *, duration: float
    ) -> list[Transition]:
        transitions = super().record(key, results, duration=duration)
        self.runs += 1
        if self.mode is not None:
            self.mode.on_record(key, transitions)
        return transitions


def serve(workdir: Path) -> None:
    """Run the API test server until stdin closes (the child process's job)."""
    from tests.harness.apiserver.server import ApiServer

    server = ApiServer(workdir).start()
    print("ready", flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()


def probe(i: int, checks: int, interval: float, flapping: bool) -> dict[str, object]:
    """Return the manifest of bench probe ``i``."""
    return {
        "apiVersion": "kubeprober.io/v1",
        "kind": "Probe",
        "metadata": {"name": f"p{i:04d}", "namespace": NAMESPACE},
        "spec": {
            "layer": "application",
            "interval": f"{interval:g}s",
            "checks": [
                {
                    "name": f"c{j}",
                    "prober": "tcp",
                    "with": {"host": "127.0.0.1", "port": 2 if flapping and j == 0 else 1},
                }
                for j in range(checks)
            ],
        },
    }


def pct(values: Sequence[float], q: float) -> float:
    """Return the q-quantile (0..1) of values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="kube-writes-"))
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(workdir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        asyncio.run(run(workdir / "kubeconfig", args))
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(30)


async def run(kubeconfig: Path, args: argparse.Namespace) -> None:
    setup = KubeApi.from_kubeconfig(kubeconfig)
    crds = ROOT / "manifests" / "crds"
    for name in yaml.safe_load((crds / "kustomization.yaml").read_text())["resources"]:
        body = yaml.safe_load((crds / name).read_text())
        await setup._send("POST", CRDS.path(), CRDS.permission("create"), body=body, action="crd")
    await setup.create(NAMESPACES, {"metadata": {"name": NAMESPACE}}, namespace="")  # cluster
    await asyncio.sleep(1.0)  # CRDs established
    for i in range(args.probes):
        body = probe(i, args.checks, args.interval, i < args.flapping)
        await setup.create(PROBES, body, namespace=NAMESPACE)

    api = KubeApi.from_kubeconfig(kubeconfig)
    store = Store()
    probers = {"tcp": Prober("tcp", "no-op stand-in", tcp.Spec, noop, "bench")}
    scheduler = Scheduler(store, probers)
    lags: list[tuple[float, float]] = []  # (when, lag)
    mode = KubeMode(
        api,
        store,
        scheduler.apply,
        settings=KubeSettings(namespace=NAMESPACE),
        observe_write_lag=lambda lag: lags.append((time.monotonic(), lag)),
    )
    store.mode = mode
    start = time.monotonic()
    await mode.start()
    # Steady state: after every probe's first run (interval spread) and first write.
    warmup = min(args.interval, 10.0) + 5.0
    await asyncio.sleep(warmup)
    base = (api.requests, mode.statuses.stats.writes, store.runs, time.monotonic())
    await asyncio.sleep(max(0.0, args.seconds - warmup))
    end = (api.requests, mode.statuses.stats.writes, store.runs, time.monotonic())
    await mode.stop()
    await scheduler.stop()
    await api.close()
    await setup.close()

    minutes = (end[3] - base[3]) / 60
    steady = [lag for when, lag in lags if when >= base[3]]
    stats = mode.statuses.stats
    print(
        f"{args.probes} probes x {args.checks} checks every {args.interval:g}s, "
        f"{args.flapping} flapping, {end[3] - start:.0f}s ({warmup:.0f}s warm-up)"
    )
    print(f"API requests/min (steady):     {(end[0] - base[0]) / minutes:8.0f}")
    print(f"API requests total:            {api.requests:8d}")
    print(f"status writes/min (steady):    {(end[1] - base[1]) / minutes:8.0f}")
    print(f"status writes per probe run:   {(end[1] - base[1]) / max(1, end[2] - base[2]):8.3f}")
    print(
        f"creates / conflicts / failures: {stats.creates} / {stats.conflicts} / "
        f"{stats.failures}; skipped {stats.skipped}"
    )
    print(f"condition writes:              {mode.conditions.writes:8d}")
    print(f"events sent / dropped:         {mode.events.sent} / {mode.events.dropped}")
    print(
        f"write lag p50/p99/max (steady): {pct(steady, 0.5) * 1000:.0f} / "
        f"{pct(steady, 0.99) * 1000:.0f} / {max(steady, default=0) * 1000:.0f} ms "
        f"over {len(steady)} writes"
    )
    print(
        f"write lag mean (all):           {statistics.fmean(lag for _, lag in lags) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--checks", type=int, default=5)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--flapping", type=int, default=10, help="probes whose c0 flaps")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.serve:
        serve(parsed.serve)
    else:
        main(parsed)
