"""Aggregator replicas: three processes in Kubernetes mode behind one load balancer, 30 agents.

Each replica is a process of its own (``_replica``), so one can be SIGKILLed; the agents run
in the test's loop (as in ``test_kube_mode``) and dial a loopback TCP balancer that hands each
new connection to the next replica that accepts, as a Service would. Lease durations are 2 s
so leadership and lost clusters move quickly; every wait is for an observed state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kubernetes import client

from kubeprober.aggregator.kube.replicas import LEADER_LEASE
from kubeprober.exporter.api_proxy import ApiProxyMode
from tests.aggregator._fleet_harness import (
    Service,
    eventually,
    exec_probe,
    write_operator_tokens,
)
from tests.aggregator.test_kube_mode import GROUP, VERSION, Objects, file_agent, stop_all
from tests.binaries import binary

ROOT = Path(__file__).resolve().parents[2]
LEASE = 2
"""Seconds the replicas' Leases last unrenewed."""
AGENTS = 30
UP = re.compile(rb'^kubeprober_agent_up\{cluster="([^"]+)"\} (\S+)$', re.M)


class Balancer:
    """A loopback TCP balancer: each new connection goes to the next backend that accepts it;
    while :meth:`park`-ed, new connections wait before being handed on."""

    def __init__(self) -> None:
        self.backends: list[str] = []
        """``http://host:port`` of each backend."""
        self.url = ""
        self._next = 0
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> Balancer:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def park(self, on: bool = True) -> None:
        """Hold new connections (True) or hand them on again (False)."""
        if on:
            self._open.clear()
        else:
            self._open.set()

    async def stop(self) -> None:
        """Stop listening and cut every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in self._writers:
            writer.transport.abort()
        for task in self._conns:
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self._writers.add(writer)
        up: asyncio.StreamWriter | None = None
        try:
            await self._open.wait()
            for _ in range(len(self.backends)):
                host, port = self.backends[self._next % len(self.backends)][7:].split(":")
                self._next += 1
                try:
                    up_reader, up = await asyncio.open_connection(host, int(port))
                except OSError:
                    continue  # a dead backend: the next one
                self._writers.add(up)
                await asyncio.gather(_pipe(reader, up), _pipe(up_reader, writer))
                return
        finally:
            self._conns.discard(task)
            for w in (up, writer):
                if w is not None:
                    w.transport.abort()
                    self._writers.discard(w)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()


class Replica:
    """One ``_replica`` process."""

    def __init__(self, identity: str, proc: asyncio.subprocess.Process, url: str) -> None:
        self.identity, self.proc, self.url = identity, proc, url

    @classmethod
    async def start(
        cls, kubeconfig: Path, namespace: str, identity: str, log: Path, operators: Path
    ) -> Replica:
        """Start it and wait for the URL it listens on."""
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.aggregator._replica",
                str(kubeconfig), namespace, identity, str(LEASE), str(operators),
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
            )  # fmt: skip
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.startswith(b"http://"), f"{identity} did not start; see {log}"
        return cls(identity, proc, line.decode().strip())

    async def end(self, *, kill: bool = False) -> None:
        """SIGKILL it, or SIGTERM it and wait for its clean shutdown."""
        if self.proc.returncode is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
        await asyncio.wait_for(self.proc.communicate(), 20)


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the replicas' APIs."""
    async with aiohttp.ClientSession() as session:
        yield session


def cluster_table(objects: Objects, names: list[str]) -> dict[str, tuple[str, str]]:
    """Each Cluster's (status.aggregator, status.state), "" where unset."""
    found: Any = objects.custom.list_namespaced_custom_object(
        GROUP, VERSION, objects.ns, "clusters"
    )
    table = {}
    for item in found["items"]:
        status = item.get("status") or {}
        table[item["metadata"]["name"]] = (status.get("aggregator") or "", status.get("state", ""))
    return {n: table.get(n, ("", "")) for n in names}


def leader(objects: Objects) -> str:
    """The leader Lease's holder ("" if none)."""
    coordination = client.CoordinationV1Api(objects.custom.api_client)
    lease: Any = coordination.read_namespaced_lease(LEADER_LEASE, objects.ns)
    return str(lease.spec.holder_identity or "")


async def agent_up(http: aiohttp.ClientSession, replicas: list[Replica]) -> list[tuple[str, float]]:
    """Every (cluster, value) of kubeprober_agent_up across the replicas, one per series."""
    found = []
    for replica in replicas:
        async with http.get(f"{replica.url}/metrics") as resp:
            body = await resp.read()
        found += [(m[1].decode(), float(m[2])) for m in UP.finditer(body)]
    return sorted(found)


async def statuses(http: aiohttp.ClientSession, replica: Replica) -> dict[str, dict[str, Any]]:
    """The replica's /status entries by cluster name."""
    async with http.get(f"{replica.url}/status") as resp:
        assert resp.status == 200
        doc = await resp.json()
    return {c["name"]: c for c in doc["clusters"]}


@pytest.mark.usefixtures("crds")
async def test_replicas_share_the_fleet_and_survive_a_killed_leader(
    kube_api: Any,
    kube_namespace: str,
    kube_config_path: Path,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    objects = Objects(kube_api, kube_namespace)
    objects.probe(exec_probe("ok", "true"))
    names = [f"c{i:02d}" for i in range(AGENTS)]
    tokens = {n: objects.cluster(n, "ok") for n in names}
    operators = tmp_path / "operators"
    (operator,) = write_operator_tokens(operators, "ops").values()
    balancer = await Balancer().start()
    replicas: list[Replica] = []
    agents: list[Service] = []
    watcher: asyncio.Task[None] | None = None
    try:
        replicas = list(
            await asyncio.gather(
                *(
                    Replica.start(
                        kube_config_path, kube_namespace, f"r{i}", tmp_path / f"r{i}.log", operators
                    )
                    for i in range(3)
                )
            )
        )
        balancer.backends = [r.url for r in replicas]
        for name in names:
            agents.append(await file_agent(name, tokens[name], balancer.url, tmp_path).start())
        identities = {r.identity for r in replicas}

        # Every cluster Online, held by exactly one replica, exported by that one alone.
        table = await eventually(
            lambda: asyncio.to_thread(cluster_table, objects, names),
            lambda t: all(h in identities and s == "Online" for h, s in t.values()),
            within=30,
            what="every cluster held and Online",
        )
        await eventually(
            lambda: agent_up(http, replicas),
            lambda up: up == [(n, 1.0) for n in names],
            within=10,
            what="each cluster's agent_up 1 exported exactly once",
        )
        for replica in replicas:
            async with http.get(f"{replica.url}/metrics") as resp:
                held = {m[1].decode() for m in UP.finditer(await resp.read())}
            assert held == {n for n, (h, _) in table.items() if h == replica.identity}
            docs = await statuses(http, replica)
            assert set(docs) == set(names)
            assert all(d["state"] == "Online" and not d.get("stale") for d in docs.values())
            async with http.get(f"{replica.url}/metrics") as resp:
                exposition = await resp.read()
            lint = await asyncio.to_thread(
                subprocess.run,
                [binary("promtool"), "check", "metrics"],
                input=exposition,
                capture_output=True,
            )
            assert lint.returncode == 0, lint.stderr

        # The leader dies while no agent can reconnect: its clusters go Offline, held by
        # no one, exported as agent_up 0 by the new leader, and never missing from /status.
        first = await eventually(
            lambda: asyncio.to_thread(leader, objects), bool, within=10, what="a leader"
        )
        victim = next(r for r in replicas if r.identity == first)
        survivors = [r for r in replicas if r is not victim]
        lost = [n for n, (h, _) in table.items() if h == first]
        missing: list[str] = []

        async def watch_status() -> None:
            while True:
                for replica in survivors:
                    shown = set(await statuses(http, replica))
                    missing.extend(sorted(set(names) - shown))
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch_status())
        balancer.park()
        await victim.end(kill=True)
        await eventually(
            lambda: asyncio.to_thread(leader, objects),
            lambda who: who in {r.identity for r in survivors},
            within=10 * LEASE,
            what="leadership moved to a survivor",
        )
        await eventually(
            lambda: asyncio.to_thread(cluster_table, objects, lost),
            lambda t: all(v == ("", "Offline") for v in t.values()),
            within=10 * LEASE,
            what="the dead leader's clusters Offline, held by no one",
        )
        await eventually(
            lambda: agent_up(http, survivors),
            lambda up: (
                up == sorted([(n, 0.0) for n in lost] + [(n, 1.0) for n in names if n not in lost])
            ),
            within=10,
            what="agent_up 0 for each orphan, once",
        )
        await eventually(  # /status is rendered at most once a second
            lambda: statuses(http, survivors[0]),
            lambda docs: all(docs[n]["state"] == "Offline" and docs[n]["stale"] for n in lost),
            within=5,
            what="the orphans Offline in /status, shown from their Cluster status",
        )

        # Agents reconnect: everything back Online on the survivors.
        balancer.park(False)
        alive = {r.identity for r in survivors}
        await eventually(
            lambda: asyncio.to_thread(cluster_table, objects, names),
            lambda t: all(h in alive and s == "Online" for h, s in t.values()),
            within=30,
            what="every cluster back Online on a survivor",
        )
        await eventually(
            lambda: agent_up(http, survivors),
            lambda up: up == [(n, 1.0) for n in names],
            within=10,
            what="each cluster exported once by the survivors",
        )
        assert missing == []

        # What only a cluster's holder can answer is asked of it by the replica asked.
        table = await asyncio.to_thread(cluster_table, objects, names)
        here, there = survivors
        theirs = next(n for n, (h, _) in table.items() if h == there.identity)
        async with http.get(f"{here.url}/status?cluster={theirs}&history=1") as resp:
            assert resp.status == 200, await resp.text()
            (entry,) = (await resp.json())["clusters"]
        ((check,),) = (p["checks"] for p in entry["probes"])
        assert check["history"] and {h["status"] for h in check["history"]} == {"PASS"}
        run = f"{here.url}/api/v1/clusters/{theirs}/probes/default/ok/run"
        async with http.post(run, headers={"Authorization": f"Bearer {operator}"}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["status"] == "PASS"

        # A tunnel that moves to another replica while the first is still live: the first
        # sees the new holder through its watch and drops its session (the agent cannot
        # come back through the parked balancer).
        balancer.park()
        moved = tmp_path / "moved"
        moved.mkdir()
        # This one also serves kubectl (the API proxy), as the Kubernetes-mode agent it is.
        second = file_agent(
            theirs, tokens[theirs], here.url, moved, kube=(kube_config_path, kube_namespace)
        )
        second.settings = dataclasses.replace(second.settings, api_proxy=ApiProxyMode.READ)
        agents.append(await second.start())
        await eventually(
            lambda: agent_up(http, [there]),
            lambda up: theirs not in dict(up),
            within=10,
            what=f"{there.identity} dropping {theirs}'s stale session",
        )
        assert (await asyncio.to_thread(cluster_table, objects, [theirs]))[theirs][0] == (
            here.identity
        )
        await eventually(
            lambda: agent_up(http, survivors),
            lambda up: up == [(n, 1.0) for n in names],
            within=10,
            what=f"{theirs} exported once, by {here.identity}",
        )
        # kubectl's requests too go to the replica holding the tunnel, answers streamed back.
        kube = f"{there.url}/api/v1/clusters/{theirs}/kube/version"
        async with http.get(kube, headers={"Authorization": f"Bearer {operator}"}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["gitVersion"]
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await stop_all(agents)
        await asyncio.gather(*(r.end() for r in replicas))
        await balancer.stop()
