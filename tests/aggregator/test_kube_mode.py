"""The aggregator's Kubernetes mode: the fleet from Cluster, Secret and Probe objects, status back.

The aggregator and a real agent run in the test's loop (as in ``_fleet_harness``); the fleet
lives in the harness's API (or a real cluster: public API and the real kubectl only), in a
namespace of the test's own. The aggregator reaches the API through the fault proxy, which
counts its requests and stands in for an API outage.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from kubernetes import client

from kubeprober.aggregator.kube import KubeModeSettings, replicas
from kubeprober.aggregator.kube import add as kube_add
from kubeprober.aggregator.kube import mode as kube_mode
from kubeprober.aggregator.kube.add import add_cluster
from kubeprober.aggregator.kube.mode import KubeRegistry
from kubeprober.aggregator.kube.source import TOKEN_LABEL
from kubeprober.aggregator.kube.status import last_seen_due, rewrite_phase, unix_time
from kubeprober.aggregator.process import run_aggregator
from kubeprober.aggregator.state import AggregatorSettings
from kubeprober.aggregator.tokens import hashed_token, new_token
from kubeprober.aggregator.views import ClusterView
from kubeprober.exporter.agent import AgentSettings, run_agent
from kubeprober.kube.api import JSON, ApiSettings, KubeApi
from kubeprober.kube.errors import AlreadyExists
from kubeprober.kube.resources import CLUSTERS, Permission
from kubeprober.pacing import BackoffSettings
from kubeprober.probers.result import rfc3339
from kubeprober.tasks import spawn, stop
from tests.aggregator._fleet_harness import (
    PULL,
    Service,
    cluster_of,
    eventually,
    exec_probe,
    get_json,
    has_results,
    probe_names,
    write_probes,
)
from tests.aggregator.test_central_cli import kubeprober
from tests.conftest import CENTRAL_NAMESPACE
from tests.harness import accounts
from tests.harness.faultproxy import FaultProxy
from tests.harness.fixtures import create_namespace, delete_namespace
from tests.harness.kubectl import Kubectl

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "manifests" / "central" / "rbac"
AGGREGATOR_SA = {
    "kind": "ServiceAccount",
    "name": "kubeprober-aggregator",
    "namespace": CENTRAL_NAMESPACE,
}
GROUP, VERSION = "kubeprober.io", "v1"
RELOAD = 0.2
FAST_BACKOFF = BackoffSettings(initial=0.05, maximum=0.5)
"""Watches retry quickly: the tests' outages last a second or two."""
"""Seconds between the aggregator's looks at its watched fleet in these tests (2 s by default)."""


class Objects:
    """The fleet's objects in the test namespace, written through the public API."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.ns = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def cluster(self, name: str, *probes: str) -> str:
        """Create Cluster ``name`` with a fresh token Secret and probe labels; return the token."""
        token = str(new_token(name))
        secret: Any = {
            "metadata": {"name": f"token-{name}", "labels": {TOKEN_LABEL: name}},
            "stringData": {"token": token},
        }
        self.core.create_namespaced_secret(self.ns, secret)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Cluster",
            "metadata": {"name": name, "labels": {f"probe/{p}": "true" for p in probes}},
            "spec": {"displayName": name.title(), "tokenSecretRef": {"name": f"token-{name}"}},
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, "clusters", body)
        return token

    def probe(self, body: dict[str, Any]) -> None:
        """Create a central Probe."""
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, "probes", body)

    def label(self, cluster: str, probe: str, value: str | None) -> None:
        """Set (or with None remove) the label ``probe/<probe>`` on a Cluster."""
        patch = {"metadata": {"labels": {f"probe/{probe}": value}}}
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, "clusters", cluster, patch
        )

    def get(self, cluster: str) -> dict[str, Any]:
        """Read a Cluster."""
        obj: Any = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, "clusters", cluster
        )
        return dict(obj)

    def status(self, cluster: str) -> dict[str, Any]:
        """Read a Cluster's status."""
        status: dict[str, Any] = self.get(cluster).get("status") or {}
        return status


@pytest.fixture
def objects(kube_api: client.ApiClient, kube_namespace: str, crds: None) -> Objects:
    """Return the writer of fleet objects into the test's namespace."""
    return Objects(kube_api, kube_namespace)


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """Return an HTTP client for the aggregator's API."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Collect started services; the test stops them (async) before this list is dropped."""
    started: list[Service] = []
    yield started
    assert not any(s.running for s in started), "a service was left running"


async def _more_watches(proxy: FaultProxy, count: int) -> None:
    """Wait until the aggregator has sent ``count`` more watch requests through the proxy."""
    start = len(proxy.seen)

    async def watches() -> int:
        return sum("watch=" in path for _, path in proxy.seen[start:])

    await eventually(watches, lambda n: n >= count, within=10, what=f"{count} more watches")


def kube_aggregator(kubeconfig: Path, namespace: str, *, offline_after: float = 30.0) -> Service:
    """An aggregator in Kubernetes mode on a free loopback port, with quick loops."""
    settings = AggregatorSettings(
        kube=KubeModeSettings(
            kubeconfig=kubeconfig, namespace=namespace, status_interval=0.1, backoff=FAST_BACKOFF
        ),
        host="127.0.0.1",
        port=0,
        pull=PULL,
        offline_after=offline_after,
        reload_interval=RELOAD,
    )
    return Service("aggregator", run_aggregator, settings)


def file_agent(
    cluster: str, token: str, url: str, tmp: Path, *, kube: tuple[Path, str] | None = None
) -> Service:
    """An agent dialling the aggregator at ``url``: in file mode with no local probes, or in
    Kubernetes mode given ``kube=(kubeconfig, namespace)``."""
    (tmp / f"{cluster}.token").write_text(token + "\n")
    settings = AgentSettings(
        probes=None if kube else write_probes(tmp / f"{cluster}-probes.yaml", []),
        kubeconfig=kube[0] if kube else None,
        namespace=kube[1] if kube else None,
        host="127.0.0.1",
        port=0,
        cluster=cluster,
        reload_interval=0.2,
        aggregator=url.replace("http", "ws", 1),
        token_file=tmp / f"{cluster}.token",
        accept_remote_exec=True,  # the central Probes here are exec probes
    )
    return Service(f"agent-{cluster}", run_agent, settings)


async def stop_all(services: list[Service]) -> None:
    """Stop services, last started first."""
    for service in reversed(services):
        await service.stop()


async def get_clusters(kubectl: Kubectl, namespace: str) -> dict[str, list[str]]:
    """``kubectl get clusters.kubeprober.io`` as rows of cells, by name (off the loop)."""
    run = await asyncio.to_thread(kubectl, "get", "clusters.kubeprober.io", "-n", namespace)
    lines = run.stdout.splitlines()
    assert lines and lines[0].split()[:3] == ["NAME", "STATE", "STATUS"], run.stdout
    # Cells start where their heading does; a cell kubectl leaves blank (a null) stays "".
    starts = [m.start() for m in re.finditer(r"\S+( \S+)*", lines[0])]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    rows = [[ln[a:b].strip() for a, b in bounds] for ln in lines[1:]]
    return {cells[0]: cells for cells in rows}


async def test_fleet_from_cluster_objects(
    objects: Objects,
    kube_namespace: str,
    kube_fault_proxy: FaultProxy,
    kubectl: Kubectl,
    http: aiohttp.ClientSession,
    services: list[Service],
    tmp_path: Path,
) -> None:
    objects.probe(exec_probe("disk", "true", layer="infrastructure", interval="1s"))
    objects.probe(exec_probe("extra", "true", interval="1s"))
    token = objects.cluster("moon", "disk")
    objects.cluster("mars")  # defined, never connects: Pending
    agg = await kube_aggregator(kube_fault_proxy.kubeconfig, kube_namespace).start()
    services.append(agg)
    try:
        ready = await get_json(http, f"{agg.url}/status")
        assert {c["name"]: c["state"] for c in ready["clusters"]} == {
            "mars": "Pending",
            "moon": "Pending",
        }
        services.append(await file_agent("moon", token, agg.url, tmp_path).start())

        async def status() -> dict[str, Any]:
            return cluster_of(await get_json(http, f"{agg.url}/status"), "moon")

        # The agent gets the probe its Cluster's label assigns, and only that one.
        moon = await eventually(
            status, lambda c: has_results(c, "disk"), within=10, what="moon runs disk"
        )
        assert probe_names(moon) == {"disk"}

        # The Cluster status reads like a fleet table in the real kubectl.
        async def table() -> dict[str, list[str]]:
            return await get_clusters(kubectl, kube_namespace)

        rows = await eventually(
            table,
            lambda t: t.get("moon", [""])[1:3] == ["Online", "PASS"],
            within=10,
            what="moon Online in kubectl get clusters",
            every=0.3,
        )
        # Never seen, nothing checked: no status (a blank cell), 0 checks, 0 pending.
        assert rows["mars"][1:5] == ["Pending", "", "0", "0"], rows
        written = objects.status("moon")
        assert written["summary"] == {
            "status": "PASS",
            "total": 1,
            "pending": 0,
            "byStatus": {"PASS": 1, "INFO": 0, "WARN": 0, "ERROR": 0, "UNKNOWN": 0},
        }
        assert written["agentVersion"] and written["lastSeen"].endswith("Z")
        (ready_condition,) = written["conditions"]
        assert ready_condition["type"] == "Ready" and ready_condition["status"] == "True"

        # Labels on the Cluster change the assignment, both ways, within seconds.
        await asyncio.to_thread(objects.label, "moon", "extra", "true")
        await eventually(
            status, lambda c: has_results(c, "disk", "extra"), within=5, what="extra assigned"
        )
        await asyncio.to_thread(objects.label, "moon", "extra", None)
        await eventually(
            status, lambda c: probe_names(c) == {"disk"}, within=5, what="extra unassigned"
        )

        # An API outage keeps the fleet and the service; writes resume afterwards.
        kube_fault_proxy.fail(status=500)
        kube_fault_proxy.cut()  # the open watches end and their retries fail
        await _more_watches(kube_fault_proxy, 3)
        assert has_results(await status(), "disk")
        async with http.get(f"{agg.url}/readyz") as resp:
            assert resp.status == 200
        kube_fault_proxy.clear()

        # Stopping the agent turns the cluster Offline in its Cluster status.
        await services.pop().stop()
        offline = await eventually(
            lambda: asyncio.to_thread(objects.status, "moon"),
            lambda s: s.get("state") == "Offline",
            within=10,
            what="moon Offline in its status",
        )
        assert offline["summary"]["status"] == "UNKNOWN"
        assert offline["conditions"][0]["status"] == "False"
        assert offline["conditions"][0]["reason"] == "AgentOffline"

        # The fleet (and the replicas' Leases) were followed by watches: one list per kind,
        # never a relist, although labels changed and the API failed meanwhile (watches
        # resume from their version).
        lists = [p for verb, p in kube_fault_proxy.seen if verb == "GET" and "limit=" in p]
        kinds = sorted(p.split("?")[0].rsplit("/", 1)[1] for p in lists)
        assert kinds == ["clusters", "leases", "probes", "secrets"], lists
        assert all(f"labelSelector={TOKEN_LABEL}" in unquote(p) for p in lists if "/secrets" in p)
    finally:
        await stop_all(services)
        services.clear()


async def test_cluster_add_through_the_api(
    objects: Objects,
    kube_namespace: str,
    kube_config_path: Path,
    http: aiohttp.ClientSession,
    services: list[Service],
    tmp_path: Path,
) -> None:
    args = ("cluster", "add", "neptune", "--kubeconfig", str(kube_config_path))
    added = await kubeprober(*args, "--namespace", kube_namespace, "--display-name", "Nep")
    assert added.code == 0, added
    (token,) = set(re.findall(r"kp1\.neptune\.[A-Za-z0-9_-]+", added.out))
    assert "kubeprober agent" in added.out and "--token-file" in added.out

    cluster = objects.get("neptune")
    assert cluster["spec"]["displayName"] == "Nep"
    secret: Any = objects.core.read_namespaced_secret(
        cluster["spec"]["tokenSecretRef"]["name"], kube_namespace
    )
    (owner,) = secret.metadata.owner_references  # deleting the Cluster revokes its token
    # The Secret holds the token's hash only, as the printed text says.
    assert list(secret.data) == ["tokenHash"], secret.data
    assert base64.b64decode(secret.data["tokenHash"]).decode() == hashed_token(token)
    assert "holds only the token's hash" in added.out
    assert (owner.kind, owner.name, owner.uid) == ("Cluster", "neptune", cluster["metadata"]["uid"])

    again = await kubeprober(*args, "--namespace", kube_namespace)
    assert again.code != 0 and "already exists" in again.err and "Traceback" not in again.err

    # The aggregator accepts the token the command printed.
    agg = await kube_aggregator(kube_config_path, kube_namespace).start()
    services.append(agg)
    try:
        services.append(await file_agent("neptune", token, agg.url, tmp_path).start())
        await eventually(
            lambda: get_json(http, f"{agg.url}/status"),
            lambda d: cluster_of(d, "neptune")["state"] == "Online",
            within=10,
            what="neptune online",
        )
    finally:
        await stop_all(services)
        services.clear()


async def follow(registry: KubeRegistry) -> list[asyncio.Task[None]]:
    """Start the registry's watches (not its writer) and wait until they listed."""
    tasks = [spawn(m.watch.run(), "test-fleet-watch") for m in registry.mirrors]
    await registry.wait_loaded()
    return tasks


@pytest.mark.usefixtures("opaque_resource_versions")  # compared for equality only
async def test_two_replicas_claiming_one_cluster_at_once_leave_one_holder(
    objects: Objects, kube_namespace: str, kube_config_path: Path
) -> None:
    objects.cluster("moon")
    api = KubeApi.load(kube_config_path, namespace=kube_namespace)
    registries = [
        KubeRegistry(api, list, ttl=30.0, settings=KubeModeSettings(identity=who))
        for who in ("a", "b")
    ]
    watches = [task for registry in registries for task in await follow(registry)]
    holds = [r.replicas for r in registries]
    try:
        for _ in range(3):  # the same race, from whatever the last one left
            # Each reads the Cluster and writes its hold at what it read: one gets 409 and
            # reads again, so both "win" in turn and the later write stands.
            assert await asyncio.gather(*(r.claim("moon") for r in holds)) == [True, True]
            recorded = objects.status("moon")["aggregator"]
            assert recorded in ("a", "b")
            # The fleet-wide pass tells what the one-cluster question does, our own write
            # (not yet in the watch) included.
            assert [r.held() == ({"moon"} if r.holds("moon") else set()) for r in holds] == [
                True,
                True,
            ]
            # Once their watches caught up, exactly that one holds it...
            want = [recorded == "a", recorded == "b"]

            async def held() -> list[bool]:
                assert [r.held() == ({"moon"} if r.holds("moon") else set()) for r in holds] == [
                    True,
                    True,
                ]
                return [r.holds("moon") for r in holds]

            await eventually(
                held,
                want.__eq__,
                within=10,
                what=f"only {recorded} holding moon",
            )
            # ...and the other, whose agent's session would still be here, drops it.
            for r in holds:
                lost = [] if r.identity == recorded else ["moon"]
                assert await r.sweep(["moon"]) == (lost, [])
            assert objects.status("moon")["aggregator"] == recorded
    finally:
        await stop(watches)
        await api.close()


async def test_status_written_only_on_change(
    objects: Objects, kube_namespace: str, kube_config_path: Path
) -> None:
    objects.cluster("moon")
    view = ClusterView("moon", connected=True, last_seen=time.time())
    settings = KubeModeSettings(last_seen_every=60.0)
    api = KubeApi.load(kube_config_path, namespace=kube_namespace)
    registry = KubeRegistry(api, lambda: [view], ttl=30.0, settings=settings)
    watches = await follow(registry)  # the fleet, without the writer's own task
    try:
        # Just past the cluster's moment for its lastSeen rewrite: the next is a minute on.
        at = time.time()
        now = math.ceil(at - (at - rewrite_phase("moon", 60.0)) % 60.0) + 1.0
        view.last_seen = now
        assert await registry.writer.write_round(now=now) == 0  # not held by this replica
        assert await registry.replicas.claim("moon")
        assert objects.status("moon")["aggregator"] == registry.replicas.identity
        assert await registry.writer.write_round(now=now) == 1
        assert await registry.writer.write_round(now=now) == 0  # nothing changed
        # Online with no checks: nothing checked is not PASS, so there is no status at all.
        assert objects.status("moon")["summary"] == {
            "total": 0,
            "pending": 0,
            "byStatus": {"PASS": 0, "INFO": 0, "WARN": 0, "ERROR": 0, "UNKNOWN": 0},
        }
        fresh = KubeRegistry(api, lambda: [view], ttl=30.0, settings=settings)
        watches += await follow(fresh)
        fresh.writer.observe(fresh.source.statuses())
        assert await fresh.writer.write_round(now=now) == 0  # read back, the same status
        view.pulled(None, at=now + 5)  # only lastSeen moved, and not by a minute
        assert await registry.writer.write_round(now=now + 5) == 0
        view.connected = False
        assert await registry.writer.write_round(now=now + 6) == 1
        written = objects.status("moon")
        assert written["state"] == "Offline"
        assert written["lastSeen"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 5))

        # A restarted aggregator reads what was written and does not write it again.
        again = KubeRegistry(api, lambda: [view], ttl=30.0, settings=settings)
        watches += await follow(again)
        again.writer.observe(again.source.statuses())
        assert await again.writer.write_round(now=now + 7) == 0

        # A Cluster deleted under the writer is skipped, not an error.
        objects.custom.delete_namespaced_custom_object(
            GROUP, VERSION, kube_namespace, "clusters", "moon"
        )
        view.connected = True
        assert await registry.writer.write_round(now=now + 8) == 0
        # Every grant the Roles give is needed (the replicas' Lease writes, and the read of
        # a Cluster after a 409: test_replicas.py; the Leases are followed here too).
        writes = {p for p in replicas.PERMISSIONS if p.verb not in ("list", "watch")}
        assert api.used == set(kube_mode.PERMISSIONS) - writes
    finally:
        await stop(watches)
        await api.close()


async def test_an_unreachable_api_keeps_the_fleet(
    objects: Objects, kube_namespace: str, kube_fault_proxy: FaultProxy
) -> None:
    objects.cluster("moon")
    api = KubeApi.load(kube_fault_proxy.kubeconfig, namespace=kube_namespace)
    registry = KubeRegistry(
        api, lambda: [], ttl=30.0, settings=KubeModeSettings(backoff=FAST_BACKOFF)
    )
    await registry.start()
    try:
        await registry.wait_loaded()
        fleet = await registry.load()
        assert fleet is not None and list(fleet.clusters) == ["moon"] and "moon" in fleet.tokens
        assert await registry.load() is None  # unchanged

        # The watches are cut and cannot come back: the fleet stays as it was.
        kube_fault_proxy.refuse(True)
        kube_fault_proxy.cut()
        watches = [m.watch for m in registry.source.mirrors]

        async def failures() -> list[int]:
            return [w.failures for w in watches]

        await eventually(
            failures,
            lambda counts: all(n >= 2 for n in counts),
            within=10,
            what="every watch retried while refused",
        )
        assert await registry.load() is None

        # Back: the watches resume, a change made meanwhile arrives, nothing was relisted.
        objects.label("moon", "disk", "true")
        kube_fault_proxy.clear()
        changed = await eventually(
            registry.load, lambda f: f is not None, within=10, what="the change after the outage"
        )
        assert changed.clusters["moon"].assigned("disk")
        assert [w.lists for w in watches] == [1, 1, 1]
    finally:
        await registry.stop()


@pytest.mark.parametrize("away", ["api", "leases"])
async def test_starts_unready_while_the_api_is_away(
    objects: Objects,
    kube_namespace: str,
    kube_fault_proxy: FaultProxy,
    http: aiohttp.ClientSession,
    services: list[Service],
    away: str,
) -> None:
    """Not ready until the fleet and the replicas' Leases are listed: before the Leases, a
    cluster another replica holds would look held by no live one."""
    objects.cluster("moon")
    if away == "api":
        kube_fault_proxy.refuse(True)
    else:
        kube_fault_proxy.hold(
            method="GET", path=f"/apis/coordination.k8s.io/v1/namespaces/{kube_namespace}/leases"
        )
    agg = await kube_aggregator(kube_fault_proxy.kubeconfig, kube_namespace).start()
    services.append(agg)
    try:
        async with http.get(f"{agg.url}/readyz") as resp:
            assert resp.status == 503
        kube_fault_proxy.clear()

        async def ready() -> int:
            async with http.get(f"{agg.url}/readyz") as resp:
                return resp.status

        await eventually(ready, lambda code: code == 200, within=5, what="ready")
        doc = await get_json(http, f"{agg.url}/status")
        assert [c["name"] for c in doc["clusters"]] == ["moon"]
    finally:
        await stop_all(services)
        services.clear()


async def test_cluster_add_refuses_a_taken_name(
    objects: Objects, kube_namespace: str, kube_config_path: Path
) -> None:
    api = KubeApi.load(kube_config_path, namespace=kube_namespace)
    try:
        token = await add_cluster(api, "pluto")
        assert token.startswith("kp1.pluto.")
        with pytest.raises(AlreadyExists, match="already exists"):
            await add_cluster(api, "pluto")
        assert api.used == set(kube_add.PERMISSIONS)
        assert CLUSTERS.permission("create") in api.used
    finally:
        await api.close()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(("aggregator",), ["--clusters FILE or --kubeconfig PATH"], id="no-source"),
        pytest.param(
            ("aggregator", "--clusters", __file__, "--kubeconfig", "k"),  # a file that exists
            ["not allowed with"],
            id="both-sources",
        ),
        pytest.param(
            ("aggregator", "--kubeconfig", "/nonexistent/kubeconfig", "--listen", "127.0.0.1:0"),
            ["/nonexistent/kubeconfig"],
            id="missing-kubeconfig",
        ),
        pytest.param(
            ("cluster", "add", "moon", "--kubeconfig", "/nonexistent/kubeconfig"),
            ["/nonexistent/kubeconfig"],
            id="add-missing-kubeconfig",
        ),
    ],
)
async def test_cli_refuses_unusable_sources(args: tuple[str, ...], words: list[str]) -> None:
    run = await kubeprober(*args, env={"KUBERNETES_SERVICE_HOST": ""})
    assert run.code != 0 and "Traceback" not in run.err, run
    assert all(w in run.err for w in words), run.err


async def test_assigned_probes_run_in_the_agents_namespace(
    objects: Objects,
    kube_namespace: str,
    kube_api: client.ApiClient,
    kube_config_path: Path,
    http: aiohttp.ClientSession,
    services: list[Service],
    tmp_path: Path,
) -> None:
    """An agent in Kubernetes mode shows an assigned probe in its own namespace, not default."""
    objects.probe(exec_probe("disk", "true", interval="1s"))
    token = objects.cluster("moon", "disk")
    home = create_namespace(kube_api, "kp-agent-")
    try:
        agg = await kube_aggregator(kube_config_path, kube_namespace).start()
        services.append(agg)
        agent = file_agent("moon", token, agg.url, tmp_path, kube=(kube_config_path, home))
        services.append(await agent.start())
        moon = await eventually(
            lambda: get_json(http, f"{agg.url}/status"),
            lambda doc: has_results(cluster_of(doc, "moon"), "disk"),
            within=10,
            what="moon runs disk",
        )
        (disk,) = cluster_of(moon, "moon")["probes"]
        assert (disk["namespace"], disk["name"]) == (home, "disk")
        own = cluster_of(await get_json(http, f"{agent.url}/status"), "moon")
        assert [(p["namespace"], p["name"]) for p in own["probes"]] == [(home, "disk")]
    finally:
        await stop_all(services)
        services.clear()
        await asyncio.to_thread(delete_namespace, kube_api, home)


# -- RBAC: manifests/central/rbac grants exactly what aggregator/kube/ uses ------------------


def _rbac_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(RBAC.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _grants(role: dict[str, Any]) -> list[Permission]:
    return [
        Permission(group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]


def test_roles_grant_exactly_what_the_code_uses() -> None:
    docs = _rbac_docs()
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    bound = {b["roleRef"]["name"] for b in bindings}
    for b in bindings:
        assert b["roleRef"]["kind"] == "Role" and b["subjects"] == [AGGREGATOR_SA]
        assert b["metadata"]["namespace"] == AGGREGATOR_SA["namespace"]
    service = [g for name in sorted(bound) for g in _grants(roles[name])]
    assert len(service) == len(set(service)), "a grant appears twice"
    assert set(service) == set(kube_mode.PERMISSIONS)
    # cluster add runs with an operator's credentials: its role exists but is not bound.
    assert set(roles) - bound == {"kubeprober-cluster-registrar"}
    assert set(_grants(roles["kubeprober-cluster-registrar"])) == set(kube_add.PERMISSIONS)
    for role in roles.values():
        assert role["metadata"]["namespace"] == AGGREGATOR_SA["namespace"]
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
    (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert account["metadata"]["name"] == AGGREGATOR_SA["name"]


def test_kustomization_renders(kubectl: Kubectl) -> None:
    out = kubectl("kustomize", str(RBAC)).stdout
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(out) if d)
    assert kinds == [
        "Namespace",
        "Role",
        "Role",
        "Role",
        "Role",
        "RoleBinding",
        "RoleBinding",
        "RoleBinding",
        "ServiceAccount",
    ]


@pytest.mark.parametrize("bound", [True, False], ids=["bindings", "no-bindings"])
async def test_aggregator_works_as_its_service_account(
    bound: bool,
    rbac: Callable[..., None],
    kube_api: client.ApiClient,
    kube_config_path: Path,
    http: aiohttp.ClientSession,
    services: list[Service],
    tmp_path: Path,
) -> None:
    """On a real control plane, manifests/central/rbac lets the service do its work (lists,
    Cluster status), and without its RoleBindings the authorizer refuses it."""
    who = accounts.user(AGGREGATOR_SA["namespace"], AGGREGATOR_SA["name"])
    if bound:
        rbac("central/rbac")
        accounts.wait_granted(
            kube_api, who, [(p, CENTRAL_NAMESPACE) for p in kube_mode.PERMISSIONS]
        )
    else:
        rbac("central/rbac/serviceaccount.yaml", "central/rbac/roles.yaml")
    objects = Objects(kube_api, CENTRAL_NAMESPACE)
    objects.cluster("moon")
    kubeconfig = accounts.token_kubeconfig(
        kube_api, kube_config_path, CENTRAL_NAMESPACE, AGGREGATOR_SA["name"], tmp_path / "agg.yaml"
    )
    proxy = FaultProxy(kubeconfig, tmp_path).start()
    try:
        agg = await kube_aggregator(proxy.kubeconfig, CENTRAL_NAMESPACE).start()
        services.append(agg)

        async def ready() -> int:
            async with http.get(f"{agg.url}/readyz") as resp:
                return resp.status

        if bound:
            await eventually(
                lambda: asyncio.to_thread(objects.status, "moon"),
                lambda status: status.get("state") == "Pending",
                within=10,
                what="moon's status written by the aggregator",
            )
            assert await ready() == 200
            assert proxy.forbidden == []
        else:
            refused = await eventually(
                lambda: asyncio.to_thread(list, proxy.forbidden),
                bool,
                within=10,
                what="a 403",
            )
            # Its lists of Clusters, Probes and Secrets in its namespace, its only reads.
            assert all(r.startswith("GET /ap") and f"/{CENTRAL_NAMESPACE}/" in r for r in refused)
            assert await ready() == 503
    finally:
        await stop_all(services)
        services.clear()
        proxy.stop()
        objects.custom.delete_namespaced_custom_object(
            GROUP, VERSION, CENTRAL_NAMESPACE, "clusters", "moon"
        )
        objects.core.delete_namespaced_secret("token-moon", CENTRAL_NAMESPACE)


class StandInPeer:
    """A stand-in peer replica (its member Lease names it): counts the ``/status?held=1``
    it is asked and answers ``clusters`` once :attr:`release` is set."""

    def __init__(self) -> None:
        self.asked, self.release, self.count = asyncio.Event(), asyncio.Event(), 0
        self.clusters: list[JSON] = []
        self.body: tuple[str, bytes] | None = None
        """(content type, body) answered instead of ``clusters``."""
        app = web.Application()
        app.router.add_get("/status", self._held)
        self.runner = web.AppRunner(app)

    async def _held(self, request: web.Request) -> web.Response:
        self.count += 1
        self.asked.set()
        await self.release.wait()
        if self.body is not None:
            return web.Response(body=self.body[1], content_type=self.body[0])
        lines = "".join(json.dumps(entry) + "\n" for entry in self.clusters)
        return web.Response(text=lines, content_type="application/x-ndjson")

    async def start(self, objects: Objects, namespace: str) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        lease = {
            "metadata": {
                "name": replicas.member_lease("peer"),
                "labels": {replicas.ROLE_LABEL: "member"},
                "annotations": {
                    replicas.ADDRESS: f"http://127.0.0.1:{self.runner.addresses[0][1]}"
                },
            },
            "spec": {"holderIdentity": "peer", "leaseDurationSeconds": 300},
        }
        client.CoordinationV1Api(objects.custom.api_client).create_namespaced_lease(
            namespace, lease
        )

    def hold(self) -> None:
        """Answer no more until released; :attr:`asked` tells when next asked."""
        self.asked.clear()
        self.release.clear()


@pytest_asyncio.fixture
async def peer(objects: Objects, kube_namespace: str) -> AsyncIterator[StandInPeer]:
    standin = StandInPeer()
    await standin.start(objects, kube_namespace)
    yield standin
    standin.release.set()
    await standin.runner.cleanup()


async def aggregator_with_peer(
    kube_config_path: Path,
    kube_namespace: str,
    http: aiohttp.ClientSession,
    services: list[Service],
    peer: StandInPeer,
    **status_cache: float,
) -> Service:
    """An aggregator that waits for ``peer`` as long as it takes, once it has seen its Lease."""
    base = kube_aggregator(kube_config_path, kube_namespace).settings
    assert base.kube is not None
    settings = dataclasses.replace(
        base, kube=dataclasses.replace(base.kube, peer_timeout=30.0), **status_cache
    )
    agg = await Service("aggregator", run_aggregator, settings).start()
    services.append(agg)
    peer.release.set()
    # A filtered /status is never cached: it asks the peer once its Lease is seen.
    await eventually(
        lambda: get_json(http, f"{agg.url}/status?layer=application"),
        lambda _: peer.count > 0,
        within=10,
        what="the peer asked",
    )
    return agg


async def test_readers_arriving_together_share_one_gather(
    kube_config_path: Path,
    kube_namespace: str,
    http: aiohttp.ClientSession,
    services: list[Service],
    peer: StandInPeer,
) -> None:
    agg = await aggregator_with_peer(kube_config_path, kube_namespace, http, services, peer)
    try:
        before = peer.count
        peer.hold()
        readers = [asyncio.create_task(get_json(http, f"{agg.url}/status")) for _ in range(20)]
        await peer.asked.wait()
        peer.release.set()
        docs = await asyncio.gather(*readers)
        assert peer.count - before == 1
        assert all(d == docs[0] for d in docs)
    finally:
        await stop_all(services)


async def test_readers_are_served_the_last_rendering_while_the_next_is_made(
    objects: Objects,
    kube_config_path: Path,
    kube_namespace: str,
    http: aiohttp.ClientSession,
    services: list[Service],
    peer: StandInPeer,
) -> None:
    objects.cluster("moon")  # held by no one: shown from its Cluster status, stale
    agg = await aggregator_with_peer(
        kube_config_path, kube_namespace, http, services, peer, status_max_age=0.0
    )
    try:
        first = await get_json(http, f"{agg.url}/status")  # nothing rendered yet: waited for
        assert [(c["name"], c.get("stale")) for c in first["clusters"]] == [("moon", True)]
        # The peer now holds moon, and is slow to say so.
        (recorded,) = first["clusters"]
        peer.clusters = [{k: v for k, v in recorded.items() if k != "stale"} | {"state": "Online"}]
        peer.hold()
        served = await asyncio.wait_for(get_json(http, f"{agg.url}/status"), timeout=10)
        assert served == first  # at once, while the next rendering waits for the peer
        await asyncio.wait_for(peer.asked.wait(), timeout=10)
        peer.release.set()
        await eventually(
            lambda: get_json(http, f"{agg.url}/status"),
            lambda doc: doc["clusters"][0]["state"] == "Online",
            within=10,
            what="the next rendering, with the peer's answer",
        )
    finally:
        await stop_all(services)


ENTRY = {"name": "moon", "state": "Online", "probes": []}
SUMMARY = {"status": "PASS", "total": 1, "pending": 0, "byStatus": {"PASS": 1}}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(
            ("application/x-ndjson", json.dumps({**ENTRY, "summary": SUMMARY}).encode()),
            None,
            id="entries",
        ),
        pytest.param(
            (
                "application/json",
                json.dumps({"clusters": [{**ENTRY, "summary": SUMMARY}]}).encode(),
            ),
            "answered application/json, not application/x-ndjson",
            id="a-document",
        ),
        pytest.param(
            ("application/x-ndjson", b'{"name": "moon", "summ'),
            "Unterminated string",
            id="cut-short",
        ),
        pytest.param(
            (
                "application/x-ndjson",
                json.dumps({**ENTRY, "summary": {**SUMMARY, "byStatus": {"GREAT": 1}}}).encode(),
            ),
            "line 1 is no cluster entry with a valid summary",
            id="unknown-status",
        ),
    ],
)
async def test_a_peer_answer_is_taken_only_as_cluster_entries(
    objects: Objects,
    kube_config_path: Path,
    kube_namespace: str,
    http: aiohttp.ClientSession,
    services: list[Service],
    peer: StandInPeer,
    caplog: pytest.LogCaptureFixture,
    body: tuple[str, bytes],
    reason: str | None,
) -> None:
    objects.cluster("moon")
    peer.body = body
    agg = await aggregator_with_peer(kube_config_path, kube_namespace, http, services, peer)
    try:
        for path in ("/status", "/status?layer=application"):  # spliced, and decoded
            doc = await get_json(http, f"{agg.url}{path}")
            (moon,) = doc["clusters"]
            if reason is None:  # taken as the peer sent it
                assert moon == {**ENTRY, "summary": SUMMARY}
                assert doc["summary"]["byStatus"]["PASS"] == 1
            else:  # shown from its Cluster status, and the log says why
                assert moon["stale"] is True and moon["probes"] == []
                warned = [r.getMessage() for r in caplog.records if "usable /status" in r.message]
                assert warned and reason in warned[-1], warned
    finally:
        await stop_all(services)


@pytest.mark.parametrize("claims", [0, ApiSettings().workers + 2], ids=["orphan", "claims"])
async def test_leases_are_renewed_while_cluster_writes_hang(
    objects: Objects, kube_namespace: str, kube_fault_proxy: FaultProxy, claims: int
) -> None:
    """A replica's Lease is renewed while its Cluster writes hang: the leader writing an
    orphan's status, or more claims than there are request threads (a survivor taking over a
    dead replica's clusters)."""
    objects.cluster("moon")  # never held: the leader writes it Pending, and that write hangs
    names = [f"c{i}" for i in range(claims)]
    for name in names:
        objects.cluster(name)
    held = kube_fault_proxy.hold(
        method="PATCH", path=f"/apis/{GROUP}/{VERSION}/namespaces/{kube_namespace}/clusters/"
    )
    settings = KubeModeSettings(identity="solo", lease_duration=3, backoff=FAST_BACKOFF)
    api = KubeApi.load(kube_fault_proxy.kubeconfig, namespace=kube_namespace)
    registry = KubeRegistry(api, lambda: [], ttl=30.0, settings=settings)
    watches = await follow(registry)
    watches += [spawn(registry.replicas.claim(name), f"claim-{name}") for name in names]
    registry.join("http://127.0.0.1:1")
    coordination = client.CoordinationV1Api(objects.custom.api_client)

    def renewed() -> Any:
        """The renewTime of the Lease solo renews (alone, it leads: the leader Lease)."""
        try:
            lease: Any = coordination.read_namespaced_lease(replicas.LEADER_LEASE, kube_namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return lease.spec.renew_time if lease.spec.holder_identity == "solo" else None

    try:
        await asyncio.to_thread(held.arrived.wait, 10)
        assert held.arrived.is_set()
        first = await eventually(
            lambda: asyncio.to_thread(renewed), bool, within=10, what="solo's Lease"
        )
        await eventually(
            lambda: asyncio.to_thread(renewed),
            lambda when: when != first,
            within=10,
            what="solo's Lease renewed while Cluster writes hang",
        )
    finally:
        held.released.set()
        await stop(watches)
        await registry.stop()


async def test_a_replica_renews_one_lease_leading_or_not(
    objects: Objects, kube_namespace: str, kube_config_path: Path
) -> None:
    """A leader's membership is the leader Lease: its member Lease (here one left from before a
    restart) goes while it leads and comes back once another replica leads, and goes again
    when it leads again. Each replica renews one Lease, and every live one is a member."""
    coordination = client.CoordinationV1Api(objects.custom.api_client)

    def lease(name: str, role: str, holder: str, address: str) -> JSON:
        return {
            "metadata": {
                "name": name,
                "labels": {replicas.ROLE_LABEL: role},
                "annotations": {replicas.ADDRESS: address},
            },
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": 3,
                "renewTime": replicas.micro_time(time.time()),
            },
        }

    def leases() -> dict[str, str]:
        found = coordination.list_namespaced_lease(
            kube_namespace, label_selector=replicas.ROLE_LABEL
        )
        return {item.metadata.name: item.spec.holder_identity for item in found.items}

    mine = replicas.member_lease("solo")
    coordination.create_namespaced_lease(
        kube_namespace, lease(mine, "member", "solo", "http://127.0.0.1:1")
    )
    settings = KubeModeSettings(identity="solo", lease_duration=3, backoff=FAST_BACKOFF)
    api = KubeApi.load(kube_config_path, namespace=kube_namespace)
    registry = KubeRegistry(api, list, ttl=30.0, settings=settings)
    tasks = await follow(registry)
    registry.join("http://127.0.0.1:1")
    held = replicas.LEADER_LEASE

    async def other_leads() -> None:
        """Replica "other" renewing the leader Lease it took, twice a Lease duration."""
        while True:
            renew = {"spec": {"renewTime": replicas.micro_time(time.time())}}
            await asyncio.to_thread(
                coordination.patch_namespaced_lease, held, kube_namespace, renew
            )
            await asyncio.sleep(0.5)

    try:
        await eventually(
            lambda: asyncio.to_thread(leases),
            {held: "solo"}.__eq__,
            within=10,
            what="solo leading, its member Lease gone",
        )
        assert registry.replicas.members() == {"solo": "http://127.0.0.1:1"}
        # As a replica would once solo's renewals had stopped reaching the API for a while.
        taken = lease(held, "leader", "other", "http://127.0.0.1:2")
        await asyncio.to_thread(coordination.patch_namespaced_lease, held, kube_namespace, taken)
        tasks.append(spawn(other_leads(), "test-other-leader"))
        await eventually(
            lambda: asyncio.to_thread(leases),
            {held: "other", mine: "solo"}.__eq__,
            within=10,
            what="solo's member Lease back once other leads",
        )
        assert not registry.replicas.leader
        await eventually(
            lambda: asyncio.sleep(0, registry.replicas.members()),
            {"solo": "http://127.0.0.1:1", "other": "http://127.0.0.1:2"}.__eq__,
            within=10,
            what="both members, other through the leader Lease",
        )
        await stop([tasks.pop()])  # other dies: solo leads again once its Lease expires
        await eventually(
            lambda: asyncio.to_thread(leases),
            {held: "solo"}.__eq__,
            within=10,
            what="solo leading again, its member Lease gone",
        )
        assert registry.replicas.members() == {"solo": "http://127.0.0.1:1"}
    finally:
        await stop(tasks)
        await registry.stop()


async def test_a_steady_cluster_costs_one_status_write_per_ten_minutes(
    objects: Objects, kube_namespace: str, kube_config_path: Path
) -> None:
    objects.cluster("moon")
    now = float(int(time.time()))  # written as is: exactly one of its moments in 10 minutes
    view = ClusterView("moon", connected=True, last_seen=now)
    api = KubeApi.load(kube_config_path, namespace=kube_namespace)
    registry = KubeRegistry(api, lambda: [view], ttl=45.0)  # the default settings
    watches = await follow(registry)
    try:
        assert await registry.replicas.claim("moon")
        assert await registry.writer.write_round(now=now) == 1
        writes = 0
        for pull in range(1, 41):  # pulled every 15 s for 10 minutes: only lastSeen moves
            view.pulled(view.report, at=now + 15 * pull)
            writes += await registry.writer.write_round(now=now + 15 * pull)
        assert writes == 1
    finally:
        await stop(watches)
        await api.close()


@pytest.mark.usefixtures("opaque_resource_versions")  # compared for equality only
@pytest.mark.parametrize("released", [False, True], ids=["still-held", "released-by-leader"])
@pytest.mark.parametrize("pulled_ago", [0.0, 60.0], ids=["pulled-just-now", "pulled-past-ttl"])
async def test_a_cluster_taken_over_from_a_dead_replica_costs_one_write(
    objects: Objects, kube_namespace: str, kube_config_path: Path, released: bool, pulled_ago: float
) -> None:
    objects.cluster("moon")
    now = time.time()
    report = {
        "agentVersion": "1.2.3",
        "kubernetesVersion": "v1.30.0",
        "nodeCount": 3,
        "probes": [{"name": "p", "layer": "application", "checks": [{"status": "PASS"}]}],
    }
    last_pull = now - pulled_ago  # the dead replica's; past the 45 s TTL by the takeover or not
    pulled = ClusterView("moon", connected=True, last_seen=last_pull, report=report, pull_ok=True)
    arrived = ClusterView("moon", connected=True)  # its agent reconnected, not pulled yet
    api = KubeApi.load(kube_config_path, namespace=kube_namespace)
    dead, survivor = (
        KubeRegistry(api, lambda v=v: [v], ttl=45.0, settings=KubeModeSettings(identity=who))
        for who, v in (("dead", pulled), ("survivor", arrived))
    )
    watches = [*await follow(dead), *await follow(survivor)]
    try:
        assert await dead.replicas.claim("moon")
        assert await dead.writer.write_round(now=last_pull) == 1
        before = objects.status("moon")
        assert before["state"] == "Online"
        if released:  # the leader saw the dead one's Lease expire first, and said so
            patch = {"status": {"aggregator": None, "state": "Offline"}}
            await api.patch_status(CLUSTERS, "moon", patch, namespace=kube_namespace)
            before = {**before, "state": "Offline"}
            del before["aggregator"]  # a merge patch's null removes the field

        async def caught_up() -> JSON:
            return survivor.replicas.status("moon")

        await eventually(caught_up, lambda s: s == before, within=10, what="the watch caught up")
        # The agent lands on the survivor: one write takes the cluster over...
        sent = api.requests
        assert await survivor.replicas.claim("moon")
        assert api.requests - sent == 1
        claimed = survivor.replicas.claimed_at("moon")
        assert claimed is not None and now <= claimed <= time.time()
        # ...and, before its first pull, the Cluster says what is still true: Online (its
        # agent was heard from when its tunnel was claimed, however old the last pull), and
        # what the dead replica's last pull told; rewritten only when the leader had marked
        # the cluster Offline, or when the cluster's lastSeen rewrite fell due meanwhile (its
        # moment in the 10 minutes passed since that pull), and then seen at the claim.
        seen = max(last_pull, claimed)
        written, moved = (unix_time(t) for t in (before["lastSeen"], rfc3339(seen)))
        due = last_seen_due("moon", written, moved, 600.0)
        rewritten = released or due
        assert await survivor.writer.write_round(now=now + 5) == (1 if rewritten else 0)
        status = objects.status("moon")
        assert status["aggregator"] == "survivor" and status["state"] == "Online"
        assert {k: status[k] for k in ("agentVersion", "nodeCount", "summary")} == {
            k: before[k] for k in ("agentVersion", "nodeCount", "summary")
        }
        assert status["lastSeen"] == (rfc3339(seen) if rewritten else before["lastSeen"])
        # Its first pull here tells the same: nothing to write but a lastSeen fallen due.
        arrived.pulled(report, at=now + 10)
        written = unix_time(status["lastSeen"])
        due = last_seen_due("moon", written, unix_time(rfc3339(now + 10)), 600.0)
        assert await survivor.writer.write_round(now=now + 10) == (1 if due else 0)
    finally:
        await stop(watches)
        await api.close()


async def test_state_changes_are_written_before_last_seen_rewrites(
    objects: Objects, kube_namespace: str, kube_config_path: Path
) -> None:
    names = ("a-steady", "b-lost")
    for name in names:
        objects.cluster(name)
    now = time.time()
    views = [ClusterView(n, connected=True, last_seen=now, pull_ok=True) for n in names]
    settings = KubeModeSettings(last_seen_every=60.0, writes_per_second=0.001, write_burst=3)
    api = KubeApi.load(kube_config_path, namespace=kube_namespace)
    registry = KubeRegistry(api, lambda: views, ttl=45.0, settings=settings)
    watches = await follow(registry)
    try:
        for name in names:
            assert await registry.replicas.claim(name)
        assert await registry.writer.write_round(now=now) == 2  # one token left
        # A minute later the first is due for its lastSeen rewrite and the second went
        # Offline: the one token left goes to the state change.
        steady, lost = views
        steady.pulled(None, at=now + 60)
        lost.connected = lost.pull_ok = False
        assert await registry.writer.write_round(now=now + 60) == 1
        assert objects.status("b-lost")["state"] == "Offline"
        assert objects.status("a-steady")["lastSeen"] == rfc3339(now)
    finally:
        await stop(watches)
        await api.close()


async def test_last_seen_is_rewritten_once_a_period_spread_over_it(
    objects: Objects, kube_namespace: str, kube_config_path: Path
) -> None:
    names = [f"c{i:02d}" for i in range(30)]
    for name in names:
        objects.cluster(name)
    start = float(int(time.time()))
    views = [ClusterView(n, connected=True, last_seen=start, pull_ok=True) for n in names]
    settings = KubeModeSettings(last_seen_every=60.0, writes_per_second=1000.0, write_burst=100)
    api = KubeApi.load(kube_config_path, namespace=kube_namespace)
    registry = KubeRegistry(api, lambda: views, ttl=45.0, settings=settings)
    watches = await follow(registry)
    try:
        for name in names:
            assert await registry.replicas.claim(name)
        assert await registry.writer.write_round(now=start) == 30  # all came Online together
        # Pulled every second for two periods: each cluster's lastSeen is rewritten once a
        # period, at its own moment, not all 30 a period after they came Online. The names
        # are fixed, and so their moments: no second holds more than 4 of them.
        per_second = []
        for now in range(int(start) + 1, int(start) + 121):
            for view in views:
                view.pulled(None, at=now)
            per_second.append(await registry.writer.write_round(now=now))
        assert sum(per_second[:60]) == sum(per_second[60:]) == 30
        assert max(per_second) <= 4
        assert all(objects.status(n)["lastSeen"] >= rfc3339(start + 60) for n in names)
    finally:
        await stop(watches)
        await api.close()
