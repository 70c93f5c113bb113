"""Benchmark the reverse tunnel on loopback and print its figures.

Exists to check the issue's targets with real processes: one aggregator (this process) and N
agents (a child process of TunnelClients, so the two sides do not share a CPU or a heap).
Prints memory per idle session, one round of N concurrent small requests, one stream's
throughput, and head-of-line latency under a throttled stream. Loopback only, plain ws:// (TLS
is usually terminated by the Ingress), bounded in time. Must not be imported by the product.

    .venv/bin/python bench/tunnel.py            # 1,000 agents
    .venv/bin/python bench/tunnel.py --agents 200
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time

from aiohttp import web

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from kubeprober.aggregator.tokens import TokenStore, new_token
from kubeprober.aggregator.tunnel_server import TunnelServer, TunnelServerSettings
from kubeprober.exporter.tunnel_client import TunnelClient, TunnelClientSettings
from kubeprober.pacing import BackoffSettings
from kubeprober.tunnel import Stream

BIG = 256 * 1024 * 1024  # bytes streamed for the throughput figure


def rss_bytes() -> int:
    """Return this process's resident set size."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def agent_app() -> web.Application:
    """The agents' app: a small JSON answer and an endless-ish byte stream."""

    async def small(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def big(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", str(BIG)))
        response = web.StreamResponse()
        response.content_length = size
        await response.prepare(request)
        chunk = b"x" * (256 * 1024)
        sent = 0
        try:
            while sent < size:
                part = chunk[: size - sent]
                await response.write(part)
                sent += len(part)
        except ConnectionError:
            pass  # the head-of-line reader hangs up mid-body on purpose
        return response

    app = web.Application()
    app.router.add_get("/small", small)
    app.router.add_get("/big", big)
    return app


async def run_agents(port: int, token_dir: pathlib.Path) -> None:
    """Child process: run one TunnelClient per token file until stdin closes."""
    settings = TunnelClientSettings(backoff=BackoffSettings(initial=0.2, maximum=2.0, floor=0.0))
    clients = [
        TunnelClient(f"ws://127.0.0.1:{port}", agent_app(), token_file=path, settings=settings)
        for path in sorted(token_dir.glob("*.token"))  # noqa: ASYNC240 - once, at start
    ]
    for client in clients:
        await client.start()
    await asyncio.wait_for(asyncio.gather(*(c.wait_connected() for c in clients)), 60)
    print(f"CONNECTED {len(clients)} {rss_bytes()}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for client in clients:
        await client.close()


async def wait_for(predicate: object, within: float) -> None:
    """Poll a callable until it returns true."""
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark setup timed out")
        await asyncio.sleep(0.05)


async def bench(agents: int) -> None:
    """Parent process: the aggregator side, and every measurement."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="kp-bench-"))
    tokens = TokenStore()
    names = [f"c{i:04d}" for i in range(agents)]
    for name in names:
        token = new_token(name)
        tokens.set(name, str(token))
        (tmp / f"{name}.token").write_text(str(token))
    server = TunnelServer(tokens, TunnelServerSettings(max_handshakes=agents))
    app = web.Application()
    server.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=agents)
    await site.start()
    port = runner.addresses[0][1]

    gc.collect()
    rss_before = rss_bytes()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child",
        str(port),
        str(tmp),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdin is not None
    started = time.monotonic()
    line = (await asyncio.wait_for(child.stdout.readline(), 90)).decode().split()
    await wait_for(lambda: len(server.clusters) == agents, 30)
    connect_s = time.monotonic() - started
    agent_rss = int(line[2])
    await asyncio.sleep(1.0)
    gc.collect()
    per_session = (rss_bytes() - rss_before) / agents

    client = server.client()

    async def get(cluster: str) -> int:
        async with asyncio.timeout(30):
            return (await client.get(cluster, "/small")).status

    async def raw_get(cluster: str, path: str) -> Stream:
        """A stream with ``path``'s answer coming, for reading at our own pace."""
        session = server.session(cluster)
        assert session is not None
        stream = await session.open("agent")
        await stream.write(f"GET {path} HTTP/1.1\r\nHost: {cluster}\r\n\r\n".encode())
        return stream

    rounds = []
    for _ in range(3):  # the first round opens streams; later ones reuse them
        t0 = time.monotonic()
        statuses = await asyncio.gather(*(get(n) for n in names))
        rounds.append(time.monotonic() - t0)
        assert statuses == [200] * agents, "some requests failed"

    # One stream's throughput.
    t0 = time.monotonic()
    got = 0
    big = await raw_get(names[0], "/big")
    while got < BIG:  # the head's few bytes are counted too: noise at 256 MiB
        got += len(await big.read(1024 * 1024))
    big.reset()
    throughput = got / (time.monotonic() - t0) / 1e6

    # Head-of-line: a throttled stream on the same session, small requests next to it.
    latencies = []
    throttled = await raw_get(names[1], "/big")
    for _ in range(30):
        await throttled.read(16 * 1024)  # read a little, slowly
        t0 = time.monotonic()
        assert await get(names[1]) == 200
        latencies.append(time.monotonic() - t0)
        await asyncio.sleep(0.02)
    throttled.reset()

    client.close()
    child.stdin.close()
    await asyncio.wait_for(child.wait(), 60)
    await server.close()
    await runner.cleanup()

    print(f"agents connected               {agents} in {connect_s:.1f} s (ws:// on loopback)")
    print(
        f"aggregator memory per session  {per_session / 1024:.1f} KiB (RSS delta; target <= 50 KB)"
    )
    print(f"agent process memory per agent {agent_rss / agents / 1024:.1f} KiB (whole child RSS)")
    print(
        f"{agents} concurrent requests      "
        + ", ".join(f"{r:.3f} s" for r in rounds)
        + " (first opens streams; target <= 1 s)"
    )
    print(
        f"one stream throughput          {throughput:.0f} MB/s over {got / 1e6:.0f} MB"
        " (target >= 100)"
    )
    print(
        f"head-of-line, small request    p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms (target < 50 ms)"
    )


def main() -> None:
    """Run the benchmark, or the agents' child process."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--child", nargs=2, metavar=("PORT", "TOKEN_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.child:
        asyncio.run(run_agents(int(args.child[0]), pathlib.Path(args.child[1])))
        return
    asyncio.run(asyncio.wait_for(bench(args.agents), 300))


if __name__ == "__main__":
    main()
