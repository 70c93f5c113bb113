"""How long kubeprober takes to heal after each fault, and what it says meanwhile.

Two parts, each with the product's default timers unless told otherwise:

- ``api``: the API test server (in this process, on loopback) behind the harness's fault
  proxy; the agent's Kubernetes mode (one Probe, a tcp check every second) and an aggregator in
  Kubernetes mode (one Cluster whose file-mode agent comes and goes during each fault) reach
  the API through the proxy. Each fault (503s, 429 with Retry-After 3600, 2 s of latency, a
  restart: connections reset then refused) lasts ``--fault-seconds``; then the time from its
  end until the ProbeStatus holds a newer run, the Cluster status the new state, and the
  replica's Lease a newer renewTime, and the warning lines logged during it.
- ``tunnel``: an aggregator and an agent in file mode with a TCP proxy between them, cut
  (every connection reset, redials too) and blackholed (bytes dropped, nothing closed): the
  time until the agent notices, until the aggregator shows the cluster Offline, and from the
  path's return until the cluster is Online with a new result.

Prometheus is played by a scraper reading the aggregator's /metrics every 0.5 s throughout:
every answer must be 200 and parse.

    .venv/bin/python bench/faults.py                      # both parts, default timers
    .venv/bin/python bench/faults.py --part tunnel --fast-tunnel --fault-seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubeprober.aggregator.kube import KubeModeSettings  # noqa: E402
from kubeprober.aggregator.kube.replicas import LEADER_LEASE  # noqa: E402
from kubeprober.aggregator.process import run_aggregator  # noqa: E402
from kubeprober.aggregator.state import AggregatorSettings  # noqa: E402
from kubeprober.aggregator.tunnel_server import TunnelServerSettings  # noqa: E402
from kubeprober.exporter.kube.mode import KubeMode, KubeSettings  # noqa: E402
from kubeprober.exporter.scheduler import Scheduler  # noqa: E402
from kubeprober.kube.api import KubeApi  # noqa: E402
from kubeprober.kube.errors import NotFound  # noqa: E402
from kubeprober.kube.resources import CLUSTERS, LEASES, PROBE_STATUSES, PROBES  # noqa: E402
from kubeprober.probers import registry  # noqa: E402
from tests.aggregator._fleet_harness import (  # noqa: E402
    FleetFile,
    Service,
    agent,
    aggregator,
    cluster_of,
    exec_probe,
    get_json,
    write_probes,
)
from tests.aggregator.test_kube_mode import Objects, file_agent  # noqa: E402
from tests.conftest import install_crds  # noqa: E402
from tests.exporter.kube.conftest import NotifyingStore, probe_body, tcp_check  # noqa: E402
from tests.harness.apiserver.server import ApiServer  # noqa: E402
from tests.harness.faultproxy import FaultProxy as ApiFaultProxy  # noqa: E402
from tests.harness.rawapi import call  # noqa: E402
from tests.reliability.scraping import Scraper  # noqa: E402
from tests.reliability.test_tunnel_faults import CLIENT, SESSION  # noqa: E402
from tests.tunnel.faultproxy import FaultProxy as TcpProxy  # noqa: E402

NAMESPACE = "bench-faults"
API_FAULTS = ("5xx", "429", "slow", "restart")


class Warnings(logging.Handler):
    """Counts our WARNING lines per logger; :meth:`take` returns and resets the counts."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("kubeprober"):
            self.counts[record.name.removeprefix("kubeprober.")] += 1

    def take(self) -> dict[str, int]:
        counts, self.counts = dict(self.counts), Counter()
        return counts


async def until(check: Callable[[], Awaitable[bool]], *, within: float = 300.0) -> float:
    """Poll ``check`` every 50 ms; return the seconds it took to hold (inf if it never did)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if await check():
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    return float("inf")


def start_fault(proxy: ApiFaultProxy, fault: str) -> None:
    if fault == "5xx":
        proxy.fail(503)
    elif fault == "429":
        proxy.fail(429, retry_after=3600)
    elif fault == "slow":
        proxy.delay(2.0)
    else:
        proxy.refuse(True)
    proxy.cut()


async def api_part(args: argparse.Namespace, workdir: Path, said: Warnings) -> None:
    (workdir / "api").mkdir()
    server = ApiServer(workdir / "api").start()
    client = config.new_client_from_config(config_file=str(server.kubeconfig))
    install_crds(client)
    call(client, "POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    proxy = ApiFaultProxy(server.kubeconfig, workdir).start()
    direct = KubeApi.from_kubeconfig(server.kubeconfig)
    listener = socket.create_server(("127.0.0.1", 0))  # the tcp check's target: accepts
    listener.listen(100)
    objects = Objects(client, NAMESPACE)
    token = objects.cluster("moon")

    # The agent's Kubernetes mode, default settings, through the proxy.
    api = KubeApi.from_kubeconfig(proxy.kubeconfig)
    store = NotifyingStore()
    scheduler = Scheduler(store, registry.probers())
    mode = KubeMode(api, store, scheduler.apply, settings=KubeSettings(namespace=NAMESPACE))
    store.listeners.append(mode.on_record)
    await mode.start()
    port = listener.getsockname()[1]
    await direct.create(
        PROBES, probe_body("web", [tcp_check("up", port)], interval="1s"), namespace=NAMESPACE
    )

    # The aggregator in Kubernetes mode, default settings, through the proxy; its agent direct.
    agg = Service(
        "aggregator",
        run_aggregator,
        AggregatorSettings(
            kube=KubeModeSettings(
                kubeconfig=proxy.kubeconfig, namespace=NAMESPACE, identity="bench"
            ),
            host="127.0.0.1",
            port=0,
        ),
    )
    await agg.start()
    moon = file_agent("moon", token, agg.url, workdir)
    probes = write_probes(workdir / "probes.yaml", [exec_probe("ok", "true", interval="1s")])
    moon.settings = replace(moon.settings, probes=probes)
    await moon.start()

    async def last_run() -> str:
        try:
            obj = await direct.get(PROBE_STATUSES, "web", namespace=NAMESPACE)
        except NotFound:
            return ""
        return str((obj.get("status") or {}).get("lastRun") or "")

    async def cluster_state() -> str:
        obj = await direct.get(CLUSTERS, "moon", namespace=NAMESPACE)
        return str((obj.get("status") or {}).get("state") or "")

    async def renewed() -> str:
        try:
            # The replica is alone, so it leads: the leader Lease is the one it renews.
            lease = await direct.get(LEASES, LEADER_LEASE, namespace=NAMESPACE)
        except NotFound:
            return ""
        return str(lease["spec"]["renewTime"])

    async with aiohttp.ClientSession() as http:
        scraper = Scraper(http, agg.url + "/metrics", every=0.5).start()
        try:
            await until(lambda: _truthy(last_run()))
            await until(lambda: _equals(cluster_state(), "Online"))
            print(f"\napi faults, {args.fault_seconds:g} s each, default settings:")
            print("| fault | ProbeStatus current after | Cluster status after | Lease after |"
                  " warnings during the fault |")  # fmt: skip
            print("|---|---|---|---|---|")
            for fault in API_FAULTS:
                said.take()
                start_fault(proxy, fault)
                if moon.running:
                    await moon.stop()
                else:
                    await moon.start()
                want = "Online" if moon.running else "Offline"
                await asyncio.sleep(args.fault_seconds)
                before_run, before_lease = await last_run(), await renewed()
                proxy.clear()
                times = await asyncio.gather(
                    until(lambda b=before_run: _newer(last_run(), b)),
                    until(lambda w=want: _equals(cluster_state(), w)),
                    until(lambda b=before_lease: _newer(renewed(), b)),
                )
                lines = said.take()
                by_logger = ", ".join(f"{k} {v}" for k, v in lines.items())
                cells = [
                    fault,
                    *(f"{t:.2f} s" for t in times),
                    f"{sum(lines.values())} ({by_logger})",
                ]
                print("| " + " | ".join(cells) + " |")
            await scraper.scrape()
            print(f"scrapes of /metrics: {scraper.scrapes}, failed: {len(scraper.failures)}")
        finally:
            await scraper.stop()
            if moon.running:
                await moon.stop()
            await agg.stop()
            await mode.stop()
            await scheduler.stop()
            await api.close()
            await direct.close()
            listener.close()
            proxy.stop()
            server.stop()


async def _truthy(value: Awaitable[str]) -> bool:
    return bool(await value)


async def _equals(value: Awaitable[str], want: str) -> bool:
    return await value == want


async def _newer(value: Awaitable[str], than: str) -> bool:
    return await value > than


async def tunnel_part(args: argparse.Namespace, workdir: Path) -> None:
    fleet = FleetFile(workdir / "clusters.yaml").add("moon")
    fleet.write()
    agg = aggregator(fleet.path, offline_after=45.0)
    if args.fast_tunnel:
        agg.settings = replace(agg.settings, tunnel=TunnelServerSettings(session=SESSION))
    await agg.start()
    proxy = TcpProxy(int(agg.url.rsplit(":", 1)[1]))
    await proxy.start()
    probes = write_probes(workdir / "t-probes.yaml", [exec_probe("ok", "true", interval="1s")])
    url = f"http://127.0.0.1:{proxy.port}"
    moon = agent("moon", fleet=fleet, aggregator_url=url, probes=probes)
    if args.fast_tunnel:
        moon.settings = replace(moon.settings, tunnel=CLIENT)
    timers = moon.settings.tunnel.session
    await moon.start()
    async with aiohttp.ClientSession() as http:
        scraper = Scraper(http, agg.url + "/metrics", every=0.5).start()
        agent_metrics = Scraper(http, moon.url + "/metrics", every=0.05).start()

        async def entry() -> dict[str, Any]:
            return cluster_of(await get_json(http, agg.url + "/status"), "moon")

        async def last_run() -> str:
            e = await entry()
            return str(next(p["lastRun"] or "" for p in e["probes"] if p["name"] == "ok"))

        async def state(want: str) -> bool:
            return (await entry())["state"] == want

        async def agent_down() -> bool:
            return agent_metrics.value("kubeprober_agent_tunnel_connected") == 0

        try:
            await until(lambda: state("Online"))
            await until(lambda: _truthy(last_run()))
            print(
                f"\ntunnel faults, {args.fault_seconds:g} s each; pings every "
                f"{timers.ping_interval:g} s, dead peer after {timers.dead_peer_timeout:g} s:"
            )
            print("| fault | agent noticed after | Offline (agent_up 0) after |"
                  " Online with a new result after the path returned |")  # fmt: skip
            print("|---|---|---|---|")
            for fault in ("cut", "blackhole"):
                await until(lambda: state("Online"))
                proxy.down() if fault == "cut" else proxy.blackhole()
                noticed, offline = await asyncio.gather(
                    until(agent_down), until(lambda: state("Offline"))
                )
                left = args.fault_seconds - max(noticed, offline)
                await asyncio.sleep(max(0.0, left))
                before = await last_run()
                proxy.heal()
                healed = await until(lambda b=before: _online_newer(state, last_run, b))
                print(f"| {fault} | {noticed:.2f} s | {offline:.2f} s | {healed:.2f} s |")
            await scraper.scrape()
            print(f"scrapes of /metrics: {scraper.scrapes}, failed: {len(scraper.failures)}")
        finally:
            await scraper.stop()
            await agent_metrics.stop()
            await moon.stop()
            await agg.stop()
            await proxy.close()


async def _online_newer(
    state: Callable[[str], Awaitable[bool]], last_run: Callable[[], Awaitable[str]], than: str
) -> bool:
    return await state("Online") and await last_run() > than


async def main(args: argparse.Namespace) -> None:
    said = Warnings()
    ours = logging.getLogger("kubeprober")
    ours.setLevel(logging.WARNING)
    ours.propagate = False  # counted, not printed; errors are printed
    errors = logging.StreamHandler()
    errors.setLevel(logging.ERROR)
    ours.addHandler(said)
    ours.addHandler(errors)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        if args.part in ("api", "all"):
            await api_part(args, Path(tmp), said)
        if args.part in ("tunnel", "all"):
            await tunnel_part(args, Path(tmp))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("api", "tunnel", "all"), default="all")
    parser.add_argument("--fault-seconds", type=float, default=20.0)
    parser.add_argument(
        "--fast-tunnel", action="store_true", help="the tests' timers: pings 0.2 s, dead after 1 s"
    )
    asyncio.run(main(parser.parse_args()))
