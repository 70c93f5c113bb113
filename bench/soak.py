"""Soak benchmark: N real agents against one aggregator process for a long while, then a kill.

Three processes. The aggregator is ``run_aggregator`` as ``kubeprober aggregator`` runs it
(shipped settings: 15 s pull rounds, 64 handshakes), plus a sampler in its event loop that
prints, every ``--sample`` seconds, its RSS, open file descriptors, asyncio tasks, how late
its own loop woke, and each pull round's start and duration. The agents (one child process)
are each the agent's real parts: ``Agent`` (store, scheduler, runner, metrics, assignment),
its HTTP app behind a ``TunnelClient`` with the shipped reconnect back-off, and its change
notices; their checks are real ``tcp`` checks on loopback banner servers, some always
passing, some always failing, some flapping on periods of 1 to 5 minutes, 1 to 20 checks
per agent at 30 s or 60 s. This process scrapes ``/metrics`` every 15 s as Prometheus would
and prints the figures. At the end it kills the aggregator (SIGKILL), starts it again on the
same port, and times until every cluster is Online with every check's result back, and
checks that no result shown before the kill is older after it.

    .venv/bin/python bench/soak.py                              # 500 agents, 30 min + restart
    .venv/bin/python bench/soak.py --agents 100 --minutes 3     # a quick try
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import logging
import os
import pathlib
import random
import signal
import statistics
import sys
import tempfile
import time
from typing import Any

import aiohttp
from fleet import write_fleet  # bench/ is this script's directory: first on sys.path

# bench/tunnel.py would shadow the tunnel package: the repository root must come first.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from kubeprober.aggregator.process import run_aggregator, tune_gc
from kubeprober.aggregator.puller import Puller
from kubeprober.aggregator.state import Aggregator, AggregatorSettings
from kubeprober.exporter.agent import Agent, AgentSettings, _notify_loop
from kubeprober.exporter.http import make_app
from kubeprober.exporter.tunnel_client import TunnelClient
from kubeprober.probers.probe import Probe, parse_probe

FLAP_PERIODS = (60, 120, 300)
"""Seconds each flapping banner server says OK, then as long BAD."""


def proc_figures(pid: int | str = "self") -> tuple[int, int]:
    """RSS in bytes and open file descriptors of a process."""
    with open(f"/proc/{pid}/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the aggregator process ------------------------------------------------------------------


async def serve_aggregator(clusters: pathlib.Path, port: int, every: float) -> None:
    """Child: the aggregator as the CLI runs it, and a sampler printing JSON lines."""
    pullers: list[Puller] = []
    connect = Aggregator.connect_puller

    def capture(agg: Aggregator) -> Puller:  # instrumentation: the sampler reads the puller
        pullers.append(connect(agg))
        return pullers[-1]

    Aggregator.connect_puller = capture  # type: ignore[method-assign, assignment]
    settings = AggregatorSettings(clusters_file=clusters, host="127.0.0.1", port=port)
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_aggregator(settings, on_listening=listening.set_result), name="aggregator"
    )
    url = await listening
    print(json.dumps({"listening": int(url.rsplit(":", 1)[1])}), flush=True)
    loop = asyncio.get_running_loop()
    rounds: list[tuple[float, float]] = []
    seen = None
    next_print = loop.time() + every
    lag = 0.0
    while not task.done():
        woke = loop.time()
        await asyncio.sleep(0.1)
        lag = max(lag, loop.time() - woke - 0.1)
        puller = pullers[0]
        if puller.last_round is not None and puller.last_round != seen:
            seen = puller.last_round
            rounds.append((time.time() - seen, seen))  # (start, duration), within 0.1 s
        if loop.time() >= next_print:
            next_print += every
            rss, fds = proc_figures()
            sample = {
                "t": time.time(),
                "rss": rss,
                "fds": fds,
                "tasks": len(asyncio.all_tasks()),
                "loop_lag": lag,
                "rounds": rounds,
            }
            print(json.dumps(sample), flush=True)
            rounds, lag = [], 0.0
    task.result()


# -- the agents' process ---------------------------------------------------------------------


async def banner_server(say: Any) -> int:
    """A loopback server that writes ``say()`` and closes; return its port."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(say())
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return int(server.sockets[0].getsockname()[1])


def probe_set(index: int, ports: dict[str, int]) -> list[Probe]:
    """Agent ``index``'s probes: 1 to 4 probes of 1 to 5 tcp checks, some failing or flapping."""
    rng = random.Random(index)
    targets = ["ok"] * 16 + ["down", "bad"] + [f"flap{p}" for p in FLAP_PERIODS]
    probes = []
    for p in range(rng.randint(1, 4)):
        checks = []
        for c in range(rng.randint(1, 5)):
            target = rng.choice(targets)
            port = ports[target]
            checks.append(
                {"name": f"{target}-{c}", "prober": "tcp",
                 "with": {"host": "127.0.0.1", "port": port, "expect": "^OK"}}
            )  # fmt: skip
        doc = {
            "apiVersion": "kubeprober.io/v1",
            "kind": "Probe",
            "metadata": {"name": f"a{index}-p{p}", "namespace": "kubeprober"},
            "spec": {
                "layer": rng.choice(["application", "middleware", "infrastructure"]),
                "interval": rng.choice(["30s", "60s"]),
                "timeout": "5s",
                "checks": checks,
            },
        }
        probes.append(parse_probe(doc))
    return probes


async def run_agents(url: str, token_dir: pathlib.Path, agents: int) -> None:
    """Child: the banner servers and one Agent + TunnelClient per cluster, until stdin closes."""
    down = __import__("socket").socket()
    down.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    ports = {
        "ok": await banner_server(lambda: b"OK\n"),
        "bad": await banner_server(lambda: b"BAD\n"),
        "down": down.getsockname()[1],
    }
    for period in FLAP_PERIODS:
        ports[f"flap{period}"] = await banner_server(
            lambda p=period: b"OK\n" if int(time.time() // p) % 2 == 0 else b"BAD\n"
        )
    running = []
    for i in range(agents):
        name = f"c{i:04d}"
        agent = Agent(AgentSettings(probes=None, cluster=name))
        agent.tunnel = TunnelClient(  # the shipped reconnect back-off and session settings
            url, make_app(agent.state, control=agent), token_file=token_dir / f"{name}.token"
        )
        agent.set_local(probe_set(i, ports))
        agent.state.ready = True
        await agent.tunnel.start()
        running.append((agent, asyncio.create_task(_notify_loop(agent))))
    checks = sum(len(p.checks) for a, _ in running for p in a.local)
    print(json.dumps({"agents": agents, "checks": checks}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for agent, notify in running:
        notify.cancel()
        assert agent.tunnel is not None
        await agent.tunnel.close()
        await agent.scheduler.stop()
    down.close()


# -- this process ----------------------------------------------------------------------------


class AggregatorProcess:
    """The aggregator child, its samples, and how to kill it."""

    def __init__(self, clusters: pathlib.Path, port: int, every: float) -> None:
        self.args = (str(clusters), str(port), str(every))
        self.samples: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Start it; return its port once it listens."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--aggregator-child", *self.args,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        port = int(json.loads(line)["listening"])
        self._reader = asyncio.create_task(self._read(self.proc.stdout))
        return port

    async def _read(self, out: asyncio.StreamReader) -> None:
        while line := await out.readline():
            self.samples.append(json.loads(line))

    async def kill(self) -> None:
        """SIGKILL it and reap it."""
        assert self.proc is not None and self._reader is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        await self._reader

    async def stop(self) -> None:
        """SIGTERM it (a clean shutdown) and reap it."""
        assert self.proc is not None and self._reader is not None
        self.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.proc.wait(), 60)
        await self._reader


async def get_status(http: aiohttp.ClientSession, base: str) -> dict[str, Any] | None:
    """The fleet's /status, or None while the aggregator does not answer."""
    try:
        async with http.get(base + "/status") as resp:
            if resp.status != 200:
                return None
            doc: dict[str, Any] = await resp.json()
            return doc
    except aiohttp.ClientError:
        return None


def last_runs(doc: dict[str, Any]) -> dict[tuple[str, str, str, str], str | None]:
    """Every check's last run time in a /status document, by (cluster, namespace, probe, check)."""
    runs = {}
    for cluster in doc["clusters"]:
        for probe in cluster["probes"]:
            for check in probe["checks"]:
                key = (cluster["name"], probe["namespace"], probe["name"], check["name"])
                runs[key] = check.get("lastRun")
    return runs


def all_back(doc: dict[str, Any] | None, agents: int) -> bool:
    """Whether every cluster is Online and each of its checks has a result."""
    if doc is None or len(doc["clusters"]) != agents:
        return False
    return all(
        c["state"] == "Online" and c["probes"] and all(r is not None for r in last_runs_of(c))
        for c in doc["clusters"]
    )


def last_runs_of(cluster: dict[str, Any]) -> list[str | None]:
    """The last run times of one cluster's checks."""
    return [k.get("lastRun") for p in cluster["probes"] for k in p["checks"]]


async def scrape(http: aiohttp.ClientSession, base: str) -> int:
    """One Prometheus-like scrape of /metrics (gzip, as Prometheus asks); return its size."""
    async with http.get(base + "/metrics", headers={"Accept-Encoding": "gzip"}) as resp:
        return len(await resp.read())


async def soak(agents: int, minutes: float, every: float) -> None:
    """Parent: start everything, watch, restart the aggregator, report."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="kp-soak-"))
    names = [f"c{i:04d}" for i in range(agents)]
    clusters = write_fleet(tmp, names)
    aggregator = AggregatorProcess(clusters, 0, every)
    port = await aggregator.start()
    aggregator.args = (str(clusters), str(port), str(every))  # restarts take the same port
    base = f"http://127.0.0.1:{port}"
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--agents-child", base.replace("http", "ws"), str(tmp),
        str(agents), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    fleet = json.loads(await asyncio.wait_for(child.stdout.readline(), 300))
    print(f"agents={agents} checks={fleet['checks']} minutes={minutes:g}", flush=True)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        t0 = loop.time()
        doc = None
        while not all_back(doc, agents):
            await asyncio.sleep(1)
            doc = await get_status(http, base)
        print(f"all {agents} Online with results after {loop.time() - t0:.1f} s", flush=True)

        # The soak: Prometheus' scrape every 15 s, a line of figures every minute.
        start = loop.time()
        cpu0 = (cpu_seconds(aggregator.proc.pid), cpu_seconds(child.pid))  # type: ignore[union-attr]
        next_line = start + 60
        size = 0
        while loop.time() - start < minutes * 60:
            size = await scrape(http, base)
            if loop.time() >= next_line:
                next_line += 60
                print_minute(aggregator.samples, (loop.time() - start) / 60, size)
            await asyncio.sleep(15)
        wall = loop.time() - start
        cpu = (
            cpu_seconds(aggregator.proc.pid) - cpu0[0],  # type: ignore[union-attr]
            cpu_seconds(child.pid) - cpu0[1],
        )
        report(aggregator.samples, minutes, wall, cpu)

        # The fault: the aggregator killed and started again, the agents as shipped.
        before = await get_status(http, base)
        assert before is not None
        await aggregator.kill()
        killed = loop.time()
        samples = aggregator.samples
        aggregator.samples = []
        await aggregator.start()
        listening = loop.time() - killed
        after, online = None, None
        while not all_back(after, agents):
            await asyncio.sleep(0.5)
            after = await get_status(http, base)
            if online is None and after and all(c["state"] == "Online" for c in after["clusters"]):
                online = loop.time() - killed
        back = loop.time() - killed
        old, new = last_runs(before), last_runs(after)  # type: ignore[arg-type]
        lost = [k for k, t in old.items() if t is not None and (new.get(k) or "") < t]
        print(f"aggregator killed and restarted: listening again after {listening:.1f} s")
        print(f"  all {agents} Online after {online:.1f} s, every result back after {back:.1f} s")
        print(f"  results shown before the kill and missing or older after: {len(lost)}")
        print(f"machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        aggregator.samples = samples
    child.stdin.close()
    await asyncio.wait_for(child.wait(), 120)
    await aggregator.stop()


def print_minute(samples: list[dict[str, Any]], minute: float, size: int) -> None:
    """One line of the aggregator's figures, from its latest sample and rounds."""
    if not samples:
        return
    s = samples[-1]
    rounds = [r for x in samples[-6:] for r in x["rounds"]]
    durations = [d for _, d in rounds] or [0.0]
    print(
        f"{minute:5.1f} min  RSS {s['rss'] / 2**20:6.1f} MiB  fds {s['fds']}  "
        f"tasks {s['tasks']}  round max {max(durations):.2f} s  "
        f"loop lag max {max(x['loop_lag'] for x in samples[-6:]) * 1000:.0f} ms  "
        f"/metrics {size / 1e6:.1f} MB",
        flush=True,
    )


def report(
    samples: list[dict[str, Any]], minutes: float, wall: float, cpu: tuple[float, float]
) -> None:
    """Memory growth after warm-up, tasks and fds start against end, rounds on time."""
    warm = samples[0]["t"] + min(300.0, minutes * 60 / 3)
    steady = [s for s in samples if s["t"] >= warm]
    window = max(1, len(steady) // 10)
    first = statistics.median(s["rss"] for s in steady[:window])
    last = statistics.median(s["rss"] for s in steady[-window:])
    peak = max(s["rss"] for s in steady)
    starts = [st for s in samples for st, _ in s["rounds"]]
    durations = [d for s in samples for _, d in s["rounds"]]
    late = [b - a - 15.0 for a, b in itertools.pairwise(starts)]
    print(f"--- after {wall / 60:.1f} min ({len(samples)} samples, warm-up ends at "
          f"{(warm - samples[0]['t']) / 60:.1f} min) ---")  # fmt: skip
    print(
        f"aggregator RSS after warm-up {first / 2**20:.1f} MiB, at the end {last / 2**20:.1f} MiB:"
        f" {100 * (last - first) / first:+.2f}%   (goal < 5%; peak {peak / 2**20:.1f} MiB)"
    )
    for what in ("tasks", "fds"):
        low, high = min(s[what] for s in steady), max(s[what] for s in steady)
        print(f"{what:6} after warm-up {steady[0][what]}, at the end {steady[-1][what]}   "
              f"(min {low}, max {high})")  # fmt: skip
    print(
        f"pull rounds    {len(durations)}: duration median {statistics.median(durations):.2f} s,"
        f" max {max(durations):.2f} s (interval 15 s); start late against the 15 s beat:"
        f" median {statistics.median(late):+.2f} s, max {max(late):+.2f} s (0.1 s resolution)"
    )
    print(f"event loop lag max {max(s['loop_lag'] for s in steady) * 1000:.0f} ms (0.1 s sleeps)")
    print(f"CPU: aggregator {100 * cpu[0] / wall:.1f}% of a core, agents' process "
          f"{100 * cpu[1] / wall:.1f}%")  # fmt: skip


def main() -> None:
    """Run the benchmark, or one of its child processes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--aggregator-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--agents-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.aggregator_child or args.agents_child:
        # Reconnects and flapping checks are the point here, not news: errors only.
        logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    if args.aggregator_child:
        clusters, port, every = args.aggregator_child
        tune_gc()  # as `kubeprober aggregator` does
        asyncio.run(serve_aggregator(pathlib.Path(clusters), int(port), float(every)))
    elif args.agents_child:
        url, directory, agents = args.agents_child
        asyncio.run(run_agents(url, pathlib.Path(directory), int(agents)))
    else:
        gc.collect()
        asyncio.run(soak(args.agents, args.minutes, args.sample))


if __name__ == "__main__":
    main()
