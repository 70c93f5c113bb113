"""Discovered targets: one HTTP check over 1,000 Services at a 30 s interval, in a real agent.

A child process runs the API test server and 1,000 HTTP servers on loopback (one port per
Service), so the agent's CPU is its own. The agent is ``kubeprober agent`` in Kubernetes
mode, as deployed: it lists and watches the Services, runs one check per target and writes
its ProbeStatus. Measured over a window once every target has a result: the agent's CPU and
RSS (from /proc), scheduling lag p99 (its ``kubeprober_scheduler_lag_seconds``, which counts
every target's start against its offset), then the time from creating an Ingress to its
first result in ``/status`` (a second check follows Ingresses).

    .venv/bin/python bench/targets.py                       # 1,000 targets, 120 s window
    .venv/bin/python bench/targets.py --targets 200 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubeprober.kube.api import KubeApi  # noqa: E402
from kubeprober.kube.resources import INGRESSES, PROBES, SERVICES, Resource  # noqa: E402

NAMESPACE = "default"
CRDS = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition"
)
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class _Answer(asyncio.Protocol):
    """Answer any request with 200 and close: a target that costs the agent, not itself."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.transport.write(ANSWER)  # type: ignore[attr-defined]
            self.transport.close()


def serve(workdir: Path, count: int) -> None:
    """Run the API test server and ``count`` HTTP servers until stdin closes."""
    from tests.harness.apiserver.server import ApiServer

    server = ApiServer(workdir).start()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(_Answer, "127.0.0.1", 0) for _ in range(count)]
        ports = [s.sockets[0].getsockname()[1] for s in servers]
        print(json.dumps({"kubeconfig": str(server.kubeconfig), "ports": ports}), flush=True)
        await loop.run_in_executor(None, sys.stdin.read)

    try:
        asyncio.run(run())
    finally:
        server.stop()


def probe(ingress_port: int, count: int) -> dict[str, Any]:
    """One Probe: an HTTP check per Service, and one per Ingress host."""
    return {
        "apiVersion": "kubeprober.io/v1",
        "kind": "Probe",
        "metadata": {"name": "bench"},
        "spec": {
            "layer": "application",
            "interval": "30s",
            "checks": [
                {
                    "name": "services",
                    "prober": "http",
                    "targets": {
                        "fromObjects": {"kind": "Service", "labelSelector": "bench=1"},
                        "max": count,
                    },
                    "with": {"url": "http://127.0.0.1:${target.port}/"},
                },
                {
                    "name": "hosts",
                    "prober": "http",
                    "targets": {"fromObjects": {"kind": "Ingress"}},
                    "with": {
                        "url": f"http://127.0.0.1:{ingress_port}/",
                        "headers": {"Host": "${target.host}"},
                    },
                },
            ],
        },
    }


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    """A process's resident set size in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def lag_buckets(text: str) -> dict[float, float]:
    """The cumulative buckets of kubeprober_scheduler_lag_seconds."""
    out = {}
    for line in text.splitlines():
        if line.startswith("kubeprober_scheduler_lag_seconds_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> tuple[float, int]:
    """The bucket bound under which ``q`` of the observations between two scrapes fall."""
    counts = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = counts[float("inf")]
    bound = next(le for le, n in counts.items() if n >= q * total)
    return bound, int(total)


async def main(kubeconfig: Path, ports: list[int], args: argparse.Namespace) -> None:
    api = KubeApi.from_kubeconfig(kubeconfig)
    agent: asyncio.subprocess.Process | None = None
    try:
        for crd in sorted((ROOT / "manifests" / "crds").glob("*s.yaml")):
            await api.create(CRDS, yaml.safe_load(crd.read_text()), namespace="")
        for i, port in enumerate(ports[1:]):
            body = {
                "metadata": {"name": f"svc-{i:04d}", "labels": {"bench": "1"}},
                # Headless: the test server's ClusterIP range (a /24) holds 254 Services.
                "spec": {"clusterIP": "None", "ports": [{"port": port}]},
            }
            await api.create(SERVICES, body, namespace=NAMESPACE)
        await api.create(PROBES, probe(ports[0], args.targets), namespace=NAMESPACE)
        agent = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("kubeprober")), "--log-level", "WARNING", "agent",
            "--kubeconfig", str(kubeconfig), "--namespace", NAMESPACE, "--listen", "127.0.0.1:0",
            stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        assert agent.stdout is not None
        url = (await agent.stdout.readline()).decode().split("serving ")[1].split("/metrics")[0]
        async with aiohttp.ClientSession() as http:

            async def get(path: str) -> Any:
                async with http.get(url + path) as resp:
                    return await (resp.json() if path == "/status" else resp.text())

            async def results() -> dict[str, Any]:
                doc = await get("/status")
                (entry,) = doc["clusters"][0]["probes"] or [{"checks": []}]
                return {c["name"]: c["status"] for c in entry["checks"]}

            started = time.monotonic()
            # Polling: the agent's /status is what a user sees; there is no event to wait on.
            while True:
                if sum(s is not None for s in (await results()).values()) >= args.targets:
                    break
                await asyncio.sleep(1)
            ran = await results()
            tally = {s: list(ran.values()).count(s) for s in sorted(set(ran.values()), key=str)}
            print(
                f"every target had a result {time.monotonic() - started:.1f} s after start: {tally}"
            )

            # The window: nothing polls /status; /metrics is scraped at both ends, as Prometheus.
            rss = [proc_rss_mb(agent.pid)]
            lag0, cpu0, t0 = (
                lag_buckets(await get("/metrics")),
                proc_cpu(agent.pid),
                time.monotonic(),
            )
            while time.monotonic() - t0 < args.seconds:
                await asyncio.sleep(1)
                rss.append(proc_rss_mb(agent.pid))
            cpu1, t1 = proc_cpu(agent.pid), time.monotonic()
            scraped = time.monotonic()
            text = await get("/metrics")
            scrape = time.monotonic() - scraped
            lag1 = lag_buckets(text)
            p99, observed = quantile(lag0, lag1, 0.99)
            p50, _ = quantile(lag0, lag1, 0.50)
            cpu = (cpu1 - cpu0) / (t1 - t0) * 100
            print(
                f"window {t1 - t0:.0f} s: agent CPU {cpu:.1f}% of one core, "
                f"RSS {statistics.median(rss):.0f} MB (max {max(rss):.0f} MB), "
                f"scheduling lag p50 <= {p50 * 1000:g} ms, p99 <= {p99 * 1000:g} ms "
                f"({observed} starts)"
            )

            series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
            print(f"/metrics: {len(text) / 1024:.0f} KiB, {series} series, {scrape * 1000:.0f} ms")
            latencies = []
            for i in range(args.ingresses):
                host = f"new-{i}.bench.test"
                body = {"metadata": {"name": f"ing-{i}"}, "spec": {"rules": [{"host": host}]}}
                created = time.monotonic()
                await api.create(INGRESSES, body, namespace=NAMESPACE)
                name = f"hosts/{NAMESPACE}/ing-{i}/{host}"
                while True:
                    if (await results()).get(name) is not None:
                        break
                    await asyncio.sleep(0.05)
                latencies.append(time.monotonic() - created)
                await asyncio.sleep(2)
            print(
                f"new Ingress -> first result: median {statistics.median(latencies):.2f} s, "
                f"max {max(latencies):.2f} s ({len(latencies)} Ingresses)"
            )
    finally:
        if agent is not None and agent.returncode is None:
            agent.terminate()
            await agent.wait()
        await api.close()


def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="targets-bench-"))
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(workdir), "--targets", str(args.targets)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        ready = json.loads(child.stdout.readline())
        asyncio.run(main(Path(ready["kubeconfig"]), ready["ports"], args))
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(60)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=1000, help="Services to discover (max 1000)")
    parser.add_argument("--seconds", type=float, default=120, help="measurement window")
    parser.add_argument("--ingresses", type=int, default=5, help="Ingresses created one by one")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.serve:
        serve(parsed.serve, parsed.targets + 1)
    else:
        run(parsed)
