"""kubectl through the aggregator: a list of N pods through the proxy against the same list
straight from the API server, latency and the aggregator's CPU per request.

Four processes on loopback, so the figures are not one process's GIL: the project's API test
server (child), ``kubeprober aggregator`` (child; its CPU is read from /proc), ``kubeprober
agent --accept-api-proxy`` in Kubernetes mode (child), and this one, the client. The client is
aiohttp for both paths (plain ws:// and http:// on loopback; kubectl would need TLS, which
would cost both paths the same).

    .venv/bin/python bench/kube_proxy.py                 # 1,000 pods, 20 lists each way
    .venv/bin/python bench/kube_proxy.py --pods 200 --lists 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kube_writes import NAMESPACE, NAMESPACES, pct, serve  # noqa: E402

from kubeprober.aggregator.auth import new_operator_token, token_hash  # noqa: E402
from kubeprober.kube.api import KubeApi  # noqa: E402
from kubeprober.kube.passthrough import Passthrough  # noqa: E402
from kubeprober.kube.resources import PODS  # noqa: E402
from kubeprober.tunnel.token import new_token  # noqa: E402
from tests.ports import free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def clusters_file(path: Path, token: str) -> None:
    docs = [
        {
            "apiVersion": "kubeprober.io/v1",
            "kind": "Cluster",
            "metadata": {"name": "bench"},
            "spec": {"tokenSecretRef": {"name": "token-bench"}},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "token-bench"},
            "stringData": {"token": token},
        },
    ]
    path.write_text(yaml.safe_dump_all(docs))


async def timed_lists(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], lists: int
) -> tuple[list[float], int]:
    took, size = [], 0
    for _ in range(lists):
        start = time.perf_counter()
        async with http.get(url, headers=headers) as answer:
            body = await answer.read()
            assert answer.status == 200, body[:200]
        took.append(time.perf_counter() - start)
        size = len(body)
    return took, size


async def run(workdir: Path, args: argparse.Namespace, agg_pid: int, agg_url: str) -> None:
    kubeconfig = workdir / "kubeconfig"
    api = KubeApi.from_kubeconfig(kubeconfig)
    try:
        await api.create(NAMESPACES, {"metadata": {"name": NAMESPACE}}, namespace="")
        pod = {"containers": [{"name": "c", "image": "registry.example/app:1"}]}
        for i in range(0, args.pods, 50):
            await asyncio.gather(
                *(
                    api.create(
                        PODS, {"metadata": {"name": f"p{j:05d}"}, "spec": pod}, namespace=NAMESPACE
                    )
                    for j in range(i, min(i + 50, args.pods))
                )
            )
        direct = Passthrough(
            api.configuration, user="system:serviceaccount:bench:kubeprober-api-proxy"
        )
    finally:
        await api.close()
    path = f"/api/v1/namespaces/{NAMESPACE}/pods"
    auth = {"Authorization": f"Bearer {args.operator_token}", "Accept": "application/json"}
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 30
        while True:  # the agent is connected once the proxy answers
            url = f"{agg_url}/api/v1/clusters/bench/kube{path}?limit=1"
            try:
                async with http.get(url, headers=auth) as a:
                    if a.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                pass  # the aggregator is not listening yet
            assert time.monotonic() < deadline, "the agent never connected"
            await asyncio.sleep(0.2)
        await direct.start()
        try:
            direct_took: list[float] = []
            for _ in range(args.lists):
                start = time.perf_counter()
                async with direct.request("GET", path, {"Accept": "application/json"}, b"") as a:
                    await a.read()
                direct_took.append(time.perf_counter() - start)
        finally:
            await direct.close()
        before = cpu_seconds(agg_pid)
        proxy_took, size = await timed_lists(
            http, f"{agg_url}/api/v1/clusters/bench/kube{path}", auth, args.lists
        )
        cpu = cpu_seconds(agg_pid) - before
    print(f"list of {args.pods} pods ({size / 1e6:.2f} MB), {args.lists} lists each way")
    for name, took in (("direct", direct_took), ("through the proxy", proxy_took)):
        print(f"  {name:18} p50 {pct(took, 0.5) * 1000:7.1f} ms   max {max(took) * 1000:7.1f} ms")
    print(f"  aggregator CPU per proxied list: {cpu / args.lists * 1000:.1f} ms")


def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="kube-proxy-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(workdir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    children: list[subprocess.Popen[str]] = []
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        token = str(new_token("bench"))
        clusters_file(workdir / "clusters.yaml", token)
        (workdir / "agent-token").write_text(token + "\n")
        args.operator_token = new_operator_token()
        (workdir / "operators").write_text(f"bench: {token_hash(args.operator_token)}\n")
        port = free_port()
        kubeprober = [sys.executable, "-m", "kubeprober.cli", "--log-level", "WARNING"]
        children.append(
            subprocess.Popen(
                [*kubeprober, "aggregator", "--clusters", str(workdir / "clusters.yaml"),
                 "--operator-tokens", str(workdir / "operators"), "--listen", f"127.0.0.1:{port}"],
                cwd=ROOT, env=env, text=True,
            )
        )  # fmt: skip
        children.append(
            subprocess.Popen(
                [*kubeprober, "agent", "--kubeconfig", str(workdir / "kubeconfig"),
                 "--namespace", NAMESPACE, "--listen", "127.0.0.1:0",
                 "--aggregator", f"ws://127.0.0.1:{port}", "--token-file",
                 str(workdir / "agent-token"), "--accept-api-proxy"],
                cwd=ROOT, env=env, text=True, stdout=subprocess.DEVNULL,
            )
        )  # fmt: skip
        asyncio.run(run(workdir, args, children[0].pid, f"http://127.0.0.1:{port}"))
    finally:
        for child in children:
            child.terminate()
            child.wait(30)
        assert server.stdin is not None
        server.stdin.close()
        server.wait(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--lists", type=int, default=20)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.serve:
        serve(parsed.serve)
    else:
        main(parsed)
