"""Cost of the ``service`` prober (and of ``dns`` in cluster mode) per run, to the API server and
to the agent.

The API test server and the cluster simulator (nodes, kubelet, kube-proxy and cluster DNS
stand-ins; needs root) run in a child process, so the agent's CPU is this process's alone. Each
run is one check through the runner, as the agent runs it: ``service`` deploys its own server
(a local process in the simulator) behind a Service of its own, waits for a ready endpoint,
resolves the Service's name through the cluster DNS, requests the ClusterIP and deletes what it
made. Printed per prober: API requests per run, agent CPU per run, wall time per run.

    sudo .venv/bin/python bench/service_prober.py              # 20 runs of each
    sudo .venv/bin/python bench/service_prober.py --runs 5
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubeprober.exporter.kube.access import ProberAccess  # noqa: E402
from kubeprober.exporter.runner import run_check  # noqa: E402
from kubeprober.kube.api import KubeApi  # noqa: E402
from kubeprober.probers import registry  # noqa: E402
from kubeprober.probers.options import parse_options  # noqa: E402
from kubeprober.probers.probe import Check, Probe  # noqa: E402
from kubeprober.probers.status import Status  # noqa: E402
from tests.harness.simulator import LOCAL_IMAGE, http_server  # noqa: E402

NAMESPACE = "default"
CHECKS: dict[str, dict[str, Any]] = {
    "service": {"image": LOCAL_IMAGE, "command": http_server(), "args": [], "dns": True},
    "dns": {"cluster": True, "name": "kubernetes.default.svc.cluster.local"},
}


def serve(workdir: Path) -> None:
    """Run the API test server and the simulator with its cluster DNS until stdin closes."""
    from tests.binaries import binary
    from tests.harness.apiserver.server import ApiServer
    from tests.harness.simulator import Simulator

    server = ApiServer(workdir).start()
    sim = Simulator(server.kubeconfig, ip=binary("ip"), nsenter=binary("nsenter"))
    try:
        sim.start()
        sim.start_dns()
        print(f"ready {server.kubeconfig}", flush=True)
        sys.stdin.read()
    finally:
        sim.stop()
        server.stop()


async def measure(kubeconfig: Path, prober: str, options: dict[str, Any], runs: int) -> None:
    """Run ``runs`` checks of ``prober`` with ``options`` one after another; print the cost."""
    api = KubeApi.from_kubeconfig(kubeconfig)
    access = ProberAccess(api)
    found = registry.get(prober)
    assert found is not None
    check = Check(
        name="bench",
        prober=prober,
        spec=parse_options(found.spec, options, "with"),
        options=options,
        timeout=30,
    )
    probe = Probe(namespace=NAMESPACE, name="bench", layer="kubernetes", checks=(check,))
    requests, cpu, wall = [], [], []
    try:
        for _ in range(runs):
            r0, c0, w0 = api.requests, time.process_time(), time.monotonic()
            result = await run_check(probe, check, found, kube=access)
            requests.append(api.requests - r0)
            cpu.append(time.process_time() - c0)
            wall.append(time.monotonic() - w0)
            if result.status is not Status.PASS:
                raise SystemExit(f"{prober}: {result.status}: {result.message}")
    finally:
        await api.close()
    print(
        f"{prober:13s} runs {runs:3d}  API requests/run {statistics.mean(requests):5.1f} "
        f"(min {min(requests)}, max {max(requests)})  agent CPU/run "
        f"{statistics.median(cpu) * 1000:6.1f} ms median, {max(cpu) * 1000:6.1f} ms max  "
        f"wall/run {statistics.median(wall):5.2f} s median"
    )


def main(args: argparse.Namespace, checks: dict[str, dict[str, Any]] = CHECKS) -> None:
    """Start the servers in a child process (this file's ``--serve``) and measure ``checks``."""
    workdir = Path(tempfile.mkdtemp(prefix="kube-prober-bench-"))
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", str(workdir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().split()
        if line[:1] != ["ready"]:
            raise SystemExit("the API test server or the simulator did not start (root?)")
        for prober, options in checks.items():
            asyncio.run(measure(Path(line[1]), prober, options, args.runs))
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(60)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="checks run per prober")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.serve:
        serve(parsed.serve)
    else:
        main(parsed)
