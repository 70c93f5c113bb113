"""Scale-out benchmark: aggregator replicas in Kubernetes mode sharing one fleet.

R replicas (``run_aggregator`` in Kubernetes mode, one process each, the product's default
settings but for their identity and a loopback listener) hold N clusters each; the Cluster
and token Secret objects live in a real kube-apiserver (etcd, kube-apiserver and
kube-controller-manager from ``K8S_TEST_BINARIES``, started by the test harness's
``ControlPlane``), which counts every request it serves (``apiserver_request_total``). The
agents are ``bench/fleet.py``'s (real ``TunnelClient``s serving real agent bodies), one
child process per replica: group k dials replica k directly, except the last group, which
dials through a loopback TCP balancer (the one of tests/aggregator/test_replicas.py, in a
process of its own) so that when its replica is SIGKILLed its agents land on the survivors.

Replica 0 is measured: CPU (``/proc``) over a steady-state window, RSS growth from its
agents, ``/status`` latency while it gathers its peers' clusters. The last replica is
killed (never the leader) to time the rebalance. Prints its figures against the goals.

    .venv/bin/python bench/scaleout.py                     # 4 x 2,500 clusters, ~25 min
    .venv/bin/python bench/scaleout.py --quick             # 4 x 50, about a minute
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

# bench/tunnel.py would shadow the tunnel package: the repository root must come first.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubeprober.aggregator.kube import KubeModeSettings  # noqa: E402
from kubeprober.aggregator.kube.add import add_cluster  # noqa: E402
from kubeprober.aggregator.kube.replicas import LEADER_LEASE, ROLE_LABEL  # noqa: E402
from kubeprober.aggregator.kube.status import rewrite_phase  # noqa: E402
from kubeprober.aggregator.process import run_aggregator, tune_gc  # noqa: E402
from kubeprober.aggregator.state import AggregatorSettings  # noqa: E402
from kubeprober.kube.api import KubeApi  # noqa: E402
from kubeprober.kube.resources import CLUSTERS, LEASES, Resource  # noqa: E402

NAMESPACE = "bench"
NAMESPACES = Resource("", "v1", "namespaces", "Namespace")
CRDS = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition"
)
REQUEST = re.compile(r"^apiserver_request_total\{([^}]*)\} (\S+)$", re.M)
LABEL = re.compile(r'(\w+)="([^"]*)"')
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


# -- children ------------------------------------------------------------------------------


def replica(kubeconfig: str, identity: str, level: str, trace: str) -> None:
    """Child: one replica with the product's defaults, until SIGTERM or SIGKILL. With a
    ``trace`` directory, it traces allocations (10 frames) and writes a tracemalloc snapshot
    there on each SIGUSR1."""
    logging.basicConfig(level=level, format=f"%(asctime)s {identity} %(name)s %(message)s")
    if trace:
        import tracemalloc

        tracemalloc.start(10)
        taken = [0]

        def snapshot(signum: int, frame: object) -> None:
            taken[0] += 1
            path = f"{trace}/{identity}-{taken[0]}.snap"
            tracemalloc.take_snapshot().dump(path + ".part")
            os.rename(path + ".part", path)  # whole, when the parent sees it

        signal.signal(signal.SIGUSR1, snapshot)
    settings = AggregatorSettings(
        kube=KubeModeSettings(kubeconfig=Path(kubeconfig), namespace=NAMESPACE, identity=identity),
        host="127.0.0.1",
        port=0,
    )
    tune_gc()  # as `kubeprober aggregator` does
    log_full_collections()

    async def serve() -> None:
        watcher = asyncio.create_task(watch_loop())
        try:
            await run_aggregator(settings, on_listening=lambda url: print(url, flush=True))
        finally:
            watcher.cancel()

    asyncio.run(serve())


STALL = 0.1
"""Seconds: a replica logs each time its event loop was held at least this long, and each
full garbage collection (what held it, when that was the cause)."""
DIAGNOSTIC = re.compile(r"^(\S+ \S+) \S+ bench\.diagnostic (loop held|full collection) (\d+) ms")


def log_full_collections() -> None:
    """Log every full (generation 2) garbage collection with how long it took."""
    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            took = (time.perf_counter() - started[0]) * 1000
            logging.getLogger("bench.diagnostic").warning("full collection %d ms", took)

    gc.callbacks.append(timed)


async def watch_loop() -> None:
    """Log each time the event loop was held ``STALL`` seconds or more."""
    while True:
        asked = time.perf_counter()
        await asyncio.sleep(0.02)
        held = time.perf_counter() - asked - 0.02
        if held >= STALL:
            logging.getLogger("bench.diagnostic").warning("loop held %d ms", held * 1000)


def diagnostics(log: Path, start: float, end: float) -> str:
    """What a replica's log says of its loop and collections between two unix times."""
    held: list[int] = []
    collections: list[int] = []
    for line in log.read_text(errors="replace").splitlines():
        if not (m := DIAGNOSTIC.match(line)):
            continue
        at = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if start <= at <= end:
            (held if m[2] == "loop held" else collections).append(int(m[3]))
    return (
        f"event loop held >= {STALL * 1000:.0f} ms {len(held)} times (longest "
        f"{max(held, default=0)} ms), {len(collections)} full collections (longest "
        f"{max(collections, default=0)} ms)"
    )


async def balancer() -> None:
    """Child: the tests' loopback balancer; each stdin line replaces its backends."""
    from tests.aggregator.test_replicas import Balancer

    bal = await Balancer().start()
    print(bal.url, flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        bal.backends = line.decode().split()
    await bal.stop()


async def readers(url: str, seconds: float, concurrency: int) -> None:
    """Child: ``concurrency`` readers of ``/status`` (kept-alive connections, gzip as browsers
    ask, body not decoded), each reading every 0.1 s for ``seconds``; then 10 filtered reads
    one at a time (a filter skips the once-a-second cache: a whole gather each)."""
    async with aiohttp.ClientSession(auto_decompress=False) as http:

        async def read(path: str) -> float:
            t0 = time.monotonic()
            async with http.get(url + path) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            return time.monotonic() - t0

        async def reader(out: list[float]) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                out.append(await read("/status"))
                await asyncio.sleep(0.1)

        await asyncio.gather(*(read("/status") for _ in range(concurrency)))  # open them
        latencies: list[float] = []
        await asyncio.gather(*(reader(latencies) for _ in range(concurrency)))
        gathers = [await read("/status?layer=application") for _ in range(10)]
    print(json.dumps({"status": latencies, "gathers": gathers}))


# -- the parent ----------------------------------------------------------------------------


class Proc:
    """A child process of this script, its stdout read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *argv: str, log: Path | None = None, script: str = __file__) -> Proc:
        err = log.open("wb") if log else None
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, script, *argv, cwd=ROOT, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, limit=2**26,  # the readers' latencies
            )  # fmt: skip
        finally:
            if err:
                err.close()
        return cls(proc)

    async def line(self, within: float) -> str:
        """The next line it prints, within ``within`` seconds."""
        assert self.proc.stdout is not None
        got = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not got:
            raise RuntimeError(f"child {self.proc.pid} ended before answering")
        return got.decode().strip()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    async def end(self) -> None:
        """Close its stdin and SIGTERM it (a replica stops on that), then wait for it."""
        if self.proc.returncode is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:  # a replica whose API server is gone may take longer
                self.proc.kill()
                await self.proc.wait()


@dataclass
class Steady:
    """What one steady-state window measured."""

    seconds: float
    cpu: float
    """Replica r0's CPU seconds."""
    pulls: int
    """Pulls r0 made (its agents' /status answers)."""
    writes: dict[str, int]
    """Write requests the API server served, by kind, for every replica."""
    transitions: int
    """Clusters whose Ready condition changed (a new lastTransitionTime) over the window."""
    rewrites: int
    """Clusters whose lastSeen alone was rewritten over the window."""
    due: int
    """Clusters whose moment to rewrite lastSeen fell in the write counters' window: the
    rewrites to expect there (a window shorter than the period sees its share of moments)."""
    diagnostics: str
    """What r0's log says of its event loop and garbage collections in the window."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid``."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


class ApiCounter:
    """Reads kube-apiserver's own request counters."""

    def __init__(self, plane: Any) -> None:
        self.url = plane.server + "/metrics"
        self.token = (plane.workdir / "tokens.csv").read_text().split(",")[0]
        import ssl

        self.tls = ssl.create_default_context(cafile=str(plane.workdir / "certs/apiserver.crt"))

    def read(self) -> Counter[tuple[str, str]]:
        """Requests served so far by (verb, resource[/subresource])."""
        request = urllib.request.Request(
            self.url, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, context=self.tls, timeout=30) as resp:
            text = resp.read().decode()
        counts: Counter[tuple[str, str]] = Counter()
        for labels, value in REQUEST.findall(text):
            got = dict(LABEL.findall(labels))
            what = got.get("resource", "") + (
                "/" + got["subresource"] if got.get("subresource") else ""
            )
            counts[(got.get("verb", ""), what)] += int(float(value))
        return counts


async def cluster_table(api: KubeApi) -> dict[str, tuple[str, str]]:
    """Each Cluster's (status.aggregator, status.state)."""
    found = await api.list(CLUSTERS, namespace=NAMESPACE)
    table = {}
    for item in found["items"]:
        status = item.get("status") or {}
        table[item["metadata"]["name"]] = (status.get("aggregator") or "", status.get("state", ""))
    return table


async def status_marks(api: KubeApi) -> dict[str, tuple[str, str]]:
    """Each Cluster's (Ready lastTransitionTime, lastSeen): which kind of write it had."""
    found = await api.list(CLUSTERS, namespace=NAMESPACE)
    marks = {}
    for item in found["items"]:
        status = item.get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        marks[item["metadata"]["name"]] = (
            str(ready.get("lastTransitionTime", "")),
            str(status.get("lastSeen", "")),
        )
    return marks


async def lease_ages(api: KubeApi) -> str:
    """Each replica Lease's holder and seconds since its renewTime (one machine: one clock)."""
    found = await api.list(LEASES, namespace=NAMESPACE, label_selector=ROLE_LABEL)
    ages = []
    for lease in found["items"]:
        spec = lease["spec"]
        renewed = datetime.fromisoformat(spec["renewTime"].replace("Z", "+00:00")).timestamp()
        role = lease["metadata"]["labels"][ROLE_LABEL]
        ages.append(f"{role} {spec.get('holderIdentity') or '-'} {time.time() - renewed:.0f} s")
    return "Leases renewed: " + ", ".join(sorted(ages))


async def snapshot(pid: int, trace: str, n: int) -> None:
    """Have replica ``pid`` write its tracemalloc snapshot ``n`` into ``trace`` (if given)."""
    if not trace:
        return
    os.kill(pid, signal.SIGUSR1)
    done = Path(trace) / f"r0-{n}.snap"

    async def written() -> bool:
        return done.exists()

    await wait_for(f"snapshot {done}", written, within=300)


async def wait_for(what: str, check: Any, *, within: float, every: float = 1.0) -> float:
    """Await ``check()`` until true; return the seconds it took."""
    t0 = time.monotonic()
    while not await check():
        if time.monotonic() - t0 > within:
            raise RuntimeError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(every)
    return time.monotonic() - t0


async def create_fleet(api: KubeApi, groups: list[list[str]], tmp: Path) -> None:
    """Create every Cluster and token Secret; write group k's tokens to ``tmp/gk``."""
    crds = ROOT / "manifests" / "crds"
    import yaml

    for name in yaml.safe_load((crds / "kustomization.yaml").read_text())["resources"]:
        body = yaml.safe_load((crds / name).read_text())
        await api._send("POST", CRDS.path(), CRDS.permission("create"), body=body, action="crd")
    await api.create(NAMESPACES, {"metadata": {"name": NAMESPACE}}, namespace="")
    for _ in range(100):  # the CRD served
        try:
            await api.list(CLUSTERS, namespace=NAMESPACE)
            break
        except Exception:
            await asyncio.sleep(0.2)
    limit = asyncio.Semaphore(32)

    async def add(name: str, directory: Path) -> None:
        async with limit:
            token = await add_cluster(api, name)
        (directory / f"{name}.token").write_text(token)

    for k, names in enumerate(groups):
        directory = tmp / f"g{k}"
        directory.mkdir()
        await asyncio.gather(*(add(n, directory) for n in names))


def writes_of(delta: Counter[tuple[str, str]]) -> dict[str, int]:
    """Write requests by kind, from a difference of counters. The replicas create, patch
    and delete Leases; kube-apiserver renews its own identity Lease with PUT (every 10 s),
    which is left out."""
    return {
        f"{verb} {what}": n
        for (verb, what), n in sorted(delta.items())
        if verb in WRITES
        and n
        and what in ("leases", "clusters", "clusters/status")
        and (verb, what) != ("PUT", "leases")
    }


async def bench(args: argparse.Namespace) -> None:
    from tests.harness import realcluster

    per, count = args.per_replica, args.replicas
    n = per * count
    tmp = Path(tempfile.mkdtemp(prefix="kp-scaleout-"))
    groups = [[f"c{k}-{i:04d}" for i in range(per)] for k in range(count)]
    plane = realcluster.ControlPlane(realcluster.unpack(realcluster.binaries_dir())).start()
    counter = ApiCounter(plane)
    api = KubeApi.from_kubeconfig(plane.kubeconfig)
    api.namespace = NAMESPACE
    children: list[Proc] = []
    try:
        t0 = time.monotonic()
        await create_fleet(api, groups, tmp)
        print(f"fleet of {n} Clusters and Secrets created in {time.monotonic() - t0:.0f} s")

        replicas = []
        for k in range(count):
            p = await Proc.start(
                "--replica", str(plane.kubeconfig), f"r{k}", args.log_level, args.trace,
                log=tmp / f"r{k}.log",
            )  # fmt: skip
            children.append(p)
            replicas.append((p, await p.line(60)))
        urls = [url for _, url in replicas]

        async def all_ready() -> bool:
            async with aiohttp.ClientSession() as http:
                for url in urls:
                    async with http.get(url + "/readyz") as resp:
                        if resp.status != 200:
                            return False
            return True

        await wait_for("replicas ready", all_ready, within=120)
        measured = replicas[0][0].proc.pid
        await asyncio.sleep(5)  # the first Lease renewals and watch events
        rss_idle = rss_bytes(measured)
        await snapshot(measured, args.trace, 1)

        bal = await Proc.start("--balancer")
        children.append(bal)
        bal_url = await bal.line(30)
        victim_url = urls[-1]
        bal.send(victim_url)
        agents = []
        t0 = time.monotonic()
        for k in range(count):
            port = (bal_url if k == count - 1 else urls[k]).rsplit(":", 1)[1]
            p = await Proc.start(
                "--child", port, str(tmp / f"g{k}"), str(args.checks),
                script=str(ROOT / "bench" / "fleet.py"), log=tmp / f"agents{k}.log",
            )  # fmt: skip
            children.append(p)
            agents.append(p)
            # One group at a time: 10,000 agents dialling at once on two cores time out.
            assert await p.line(600) == "CONNECTED"
        print(f"{n} agents connected in {time.monotonic() - t0:.0f} s; replica logs in {tmp}")
        names = [name for g in groups for name in g]
        identities = [f"r{k}" for k in range(count)]

        shown = [time.monotonic()]

        async def held_online(which: list[str], by: list[str]) -> bool:
            table = await cluster_table(api)
            done = all(table.get(c, ("", ""))[0] in by and table[c][1] == "Online" for c in which)
            if not done and time.monotonic() - shown[0] >= 10:  # where a slow wait stands
                shown[0] = time.monotonic()
                now = Counter(
                    f"{h or '-'}/{s or '-'}" for h, s in (table.get(c, ("", "")) for c in which)
                )
                print("  waiting: " + ", ".join(f"{k} {v}" for k, v in sorted(now.items())))
                print("    " + await lease_ages(api), flush=True)
            return done

        took = await wait_for(
            "every cluster held and Online",
            lambda: held_online(names, identities),
            within=3600,
            every=2.0,
        )
        print(f"every cluster held and Online {took:.0f} s later")
        table = await cluster_table(api)
        by_holder = Counter(h for h, _ in table.values())
        print(
            "clusters per replica: " + ", ".join(f"{h} {c}" for h, c in sorted(by_holder.items()))
        )
        lease = await api.get(LEASES, LEADER_LEASE, namespace=NAMESPACE)
        leader = lease["spec"]["holderIdentity"]
        print(f"leader: {leader}")

        async def pulls() -> int:
            """/status pulls group 0's agents served so far (all of them r0's)."""
            agents[0].send("count")
            return int(await agents[0].line(30))

        async def steady() -> Steady:
            await asyncio.sleep(args.warmup)
            print(f"steady window of {args.window:.0f} s", flush=True)
            s0 = await status_marks(api)
            c0, w0, p0, m0 = cpu_seconds(measured), counter.read(), await pulls(), time.monotonic()
            t0 = time.time()
            await asyncio.sleep(args.window)
            c1, w1, p1, m1 = cpu_seconds(measured), counter.read(), await pulls(), time.monotonic()
            said = diagnostics(tmp / "r0.log", t0, time.time())
            s1 = await status_marks(api)
            moved = [(s0[c], s1[c]) for c in s0.keys() & s1.keys() if s0[c] != s1[c]]
            transitions = sum(1 for a, b in moved if a[0] != b[0])
            period, end = KubeModeSettings().last_seen_every, t0 + (m1 - m0)
            due = sum((end - rewrite_phase(c, period)) % period <= end - t0 for c in names)
            return Steady(
                m1 - m0,
                c1 - c0,
                p1 - p0,
                writes_of(w1 - w0),
                transitions,
                len(moved) - transitions,
                due,
                said,
            )

        # First agents that send no change notice (pulled every interval, as the single
        # aggregator's bench pulls), then agents whose checks change every 30 s.
        quiet = await steady()
        rss_steady = rss_bytes(measured)
        # Printed now: a run that fails later (its victim leads) has measured this already.
        print(
            f"replica r0 RSS              {rss_steady / 2**20:.0f} MiB ({rss_idle / 2**20:.0f} "
            f"MiB before its agents): {(rss_steady - rss_idle) / per / 1024:.0f} KiB per held "
            "cluster   (goal <= 72 KiB)",
            flush=True,
        )
        await snapshot(measured, args.trace, 2)
        if args.trace:  # the snapshots are what such a run is for; tracing slows the rest
            print(f"tracemalloc snapshots in {args.trace}")
            return
        for p in agents:
            p.send(f"notify {args.notify}")
            await p.line(30)
        noticed = await steady()

        print("reading /status from r0", flush=True)
        reader = await Proc.start("--readers", urls[0], str(args.read_seconds), "50")
        children.append(reader)
        t0 = time.time()
        figures = json.loads(await reader.line(args.read_seconds + 300))
        while_read = diagnostics(tmp / "r0.log", t0, time.time())
        latencies, gathers = figures["status"], figures["gathers"]

        # The rebalance: a replica that is not the leader (nor the measured one) dies.
        victim = replicas[-1][0]
        if f"r{count - 1}" == leader:
            raise RuntimeError("the replica to kill leads: start again")
        survivors = identities[:-1]
        bal.send(" ".join(urls[:-1]))
        t0 = time.monotonic()
        victim.proc.send_signal(signal.SIGKILL)
        moved = await wait_for(
            "the dead replica's clusters Online on survivors",
            lambda: held_online(groups[-1], survivors),
            within=600,
            every=0.5,
        )
        rebalance = time.monotonic() - t0
        table = await cluster_table(api)
        after = Counter(h for h, _ in table.values())

        print()
        print(
            f"replicas={count} clusters/replica={per} clusters={n} checks/agent={args.checks} "
            f"steady windows of {args.window:.0f} s after {args.warmup:.0f} s each"
        )
        for title, w in (
            ("agents sending no change notice (pulled every 15 s)", quiet),
            (f"agents sending a change notice every {args.notify:g} s", noticed),
        ):
            print(f"steady state, {title}: {w.seconds:.0f} s window")
            print(
                f"  replica r0 CPU            {w.cpu / w.seconds * 100:.1f}% of a core, "
                f"{w.pulls / w.seconds * 60 / per:.1f} pulls per cluster a minute: "
                f"{w.cpu / max(1, w.pulls) * 1000:.2f} ms per pull (all its work counted), "
                f"{w.cpu / (w.seconds / 15):.2f} s per 15 s   (goal <= 0.7 ms a pull)"
            )
            leases = sum(v for k, v in w.writes.items() if k.endswith(" leases"))
            statuses = sum(v for k, v in w.writes.items() if "clusters" in k)
            minutes = w.seconds / 60
            print(
                f"  API writes/min per replica {(leases + statuses) / minutes / count:.0f} "
                f"(Leases {leases / minutes / count:.1f}, Cluster status "
                f"{statuses / minutes / count:.0f}; lastSeen due at the clusters' moments in "
                f"the window {w.due / minutes / count:.0f})   (goal <= {per / 10 + 6:.0f}: "
                f"{per}/10 + 6)"
            )
            print(
                f"  Clusters written in the window: {w.transitions} changed state (Ready "
                f"transition), {w.rewrites} had lastSeen alone rewritten (once every 600 s)"
            )
            print(f"  r0: {w.diagnostics}")
            print("  all replicas, per minute  " + ", ".join(
                f"{k} {v / minutes:.1f}" for k, v in w.writes.items()
            ))  # fmt: skip
        p99 = statistics.quantiles(latencies, n=100)[98]
        print(
            f"fleet /status from r0       p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms over "
            f"{len(latencies)} reads by 50 readers   (goal p99 <= 100 ms)"
        )
        print(f"  r0 while read: {while_read}")
        print(
            f"  uncached (whole gather)   median {statistics.median(gathers) * 1000:.0f} ms, "
            f"max {max(gathers) * 1000:.0f} ms"
        )
        print(
            f"rebalance after SIGKILL     {rebalance:.1f} s for {per} clusters to be Online on "
            f"survivors ({moved:.1f} s of polling)   (goal <= 60 s); now "
            + ", ".join(f"{h or '-'} {c}" for h, c in sorted(after.items()))
        )
        print(f"machine load average        {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        for p in reversed(children):
            await p.end()
        await api.close()
        plane.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--replicas", type=int, default=4, help="replica processes (the last one is killed)"
    )
    parser.add_argument(
        "--per-replica", type=int, default=2500, help="clusters (agents) first held by each"
    )
    parser.add_argument("--checks", type=int, default=2, help="checks per agent")
    parser.add_argument(
        "--warmup",
        type=float,
        default=150.0,
        help="seconds before each window: at 2,500 a replica, the start's deferred lastSeen "
        "rewrites are written by then",
    )
    parser.add_argument("--window", type=float, default=180.0, help="steady-state seconds")
    parser.add_argument(
        "--read-seconds", type=float, default=20.0, help="seconds 50 readers read r0's /status"
    )
    parser.add_argument("--notify", type=float, default=30.0, help="seconds between notices")
    parser.add_argument("--quick", action="store_true", help="4 x 50 clusters, short windows")
    parser.add_argument("--log-level", default="WARNING", help="the replicas' (in their logs)")
    parser.add_argument(
        "--trace",
        default="",
        help="directory for replica r0's tracemalloc snapshots (before its agents, after the "
        "first window): slows the replicas",
    )
    parser.add_argument("--replica", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--balancer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--readers", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replica:
        replica(*args.replica)
    elif args.balancer:
        asyncio.run(balancer())
    elif args.readers:
        url, seconds, concurrency = args.readers
        asyncio.run(readers(url, float(seconds), int(concurrency)))
    else:
        if args.quick:
            args.per_replica, args.warmup, args.window, args.read_seconds = 50, 5.0, 30.0, 5.0
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
