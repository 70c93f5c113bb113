"""kubectl through the aggregator: aggregator → tunnel → agent (`kube-api`) → the API server.

On the API test server, which enforces no RBAC, only the agent's own refusals show; on a real
control plane the impersonated ServiceAccount's RBAC refuses writes as well.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from kubeprober import cli, client
from kubeprober.client_commands import kubeconfig
from kubeprober.exporter.agent import AgentSettings, run_agent
from kubeprober.exporter.api_proxy import ApiProxyMode
from tests.aggregator._fleet_harness import (
    FleetFile,
    Service,
    Tls,
    aggregator,
    make_tls,
    write_operator_tokens,
    write_probes,
)
from tests.exporter.kube.conftest import CRD_DIR, eventually
from tests.exporter.kube.conftest import open_port as open_port
from tests.harness.fixtures import KubeCluster
from tests.harness.kubectl import Kubectl

AUDIT = ("kubeprober.aggregator.audit", "kubeprober.exporter.audit")
PROBE = """\
apiVersion: kubeprober.io/v1
kind: Probe
metadata:
  name: web
spec:
  layer: application
  checks:
  - name: up
    prober: tcp
    with: {{host: 127.0.0.1, port: {port}}}
"""
# what the proxy's ServiceAccount needs on a real control plane (the manifests bind `view`)
VIEW = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: proxy-view
rules:
- apiGroups: ["", kubeprober.io]
  resources: [pods, configmaps, events, probestatuses]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: proxy-view
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: proxy-view}}
subjects:
- {{kind: ServiceAccount, name: kubeprober-api-proxy, namespace: {namespace}}}
"""


@dataclass
class Stack:
    aggregator: Service
    tokens: dict[str, str]
    kubectl: Kubectl
    """The real kubectl, through the aggregator to cluster moon with alice's token."""
    admin: Kubectl
    """The real kubectl, straight to the cluster."""
    namespace: str
    tmp: Path
    tls: Tls

    def connector(self) -> aiohttp.TCPConnector:
        return aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=str(self.tls.ca)))

    def kubeconfig(self, cluster: str, token: str) -> Path:
        """What `kubeprober kubeconfig --cluster CLUSTER` writes, with ``token``'s file."""
        token_file = self.tmp / f"token-{cluster}-{len(token)}"
        token_file.write_text(token + "\n")
        path = self.tmp / f"kubeconfig-{cluster}-{len(token)}"
        target = client.resolve(self.aggregator.url, self.tls.ca, token_file)
        path.write_text(kubeconfig(target, cluster, token_file, self.namespace))
        return path


async def _run(
    kubectl: Kubectl, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(kubectl, *args, check=check)


async def _start_stack(
    kube_cluster: KubeCluster,
    kubectl: Kubectl,
    namespace: str,
    tmp: Path,
    mode: ApiProxyMode,
    services: list[Service],
) -> Stack:
    fleet = FleetFile(tmp / "clusters.yaml").add("moon").add("sun")
    tokens = write_operator_tokens(tmp / "operators", "alice")
    read_token = tmp / "read-token"
    read_token.write_text("read-secret-token\n")
    # kubectl sends no token over plain HTTP
    tls = make_tls(tmp)
    agg = aggregator(
        fleet.write(), operator_tokens_file=tmp / "operators", read_token_file=read_token, tls=tls
    )
    services.append(await agg.start())
    url = agg.url.replace("http", "ws", 1)
    moon = AgentSettings(
        probes=None,
        host="127.0.0.1",
        port=0,
        cluster="moon",
        aggregator=url,
        token_file=fleet.token_file("moon"),
        aggregator_ca=tls.ca,
        kubeconfig=kube_cluster.kubeconfig,
        namespace=namespace,
        api_proxy=mode,
    )
    sun = AgentSettings(  # runs without --accept-api-proxy
        probes=write_probes(tmp / "sun.yaml", []),
        host="127.0.0.1",
        port=0,
        cluster="sun",
        aggregator=url,
        token_file=fleet.token_file("sun"),
        aggregator_ca=tls.ca,
    )
    services.append(await Service("agent-moon", run_agent, moon).start())
    services.append(await Service("agent-sun", run_agent, sun).start())
    stack = Stack(agg, tokens, kubectl, kubectl, namespace, tmp, tls)
    stack.kubectl = Kubectl(kubectl.path, stack.kubeconfig("moon", tokens["alice"]), tmp / "cache")
    if kube_cluster.real:
        manifest = VIEW.format(namespace=namespace)
        await asyncio.to_thread(kubectl, "apply", "-n", namespace, "-f", "-", input=manifest)
    async with aiohttp.ClientSession(connector=stack.connector()) as http:

        async def connected() -> bool:
            headers = {"Authorization": f"Bearer {tokens['alice']}"}
            async with http.get(f"{agg.url}/status", headers=headers) as answer:
                doc = await answer.json()
            return all(c["state"] == "Online" for c in doc["clusters"])

        await eventually(connected, what="both agents online")
    return stack


async def test_status_says_which_clusters_take_kubectl(
    kube_cluster: KubeCluster,
    kubectl: Kubectl,
    kube_namespace: str,
    tmp_path: Path,
    services: list[Service],
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack = await _start_stack(
        kube_cluster, kubectl, kube_namespace, tmp_path, ApiProxyMode.WRITE, services
    )
    argv = ["status", "--aggregator", stack.aggregator.url, "--aggregator-ca", str(stack.tls.ca)]
    argv += ["--read-token-file", str(tmp_path / "read-token")]
    capsys.readouterr()
    await asyncio.to_thread(cli.main, argv)
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-1] == "KUBECTL"
    kubectl_column = {line.split()[0]: line.split()[-1] for line in table[1:]}
    assert kubectl_column == {"moon": "write", "sun": "off"}


@pytest.fixture
async def services() -> AsyncIterator[list[Service]]:
    started: list[Service] = []
    try:
        yield started
    finally:
        for service in reversed(started):
            await service.stop()


def _audit(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and "api-proxy" in r.message]


async def test_kubectl_reads_through_the_aggregator(
    kube_cluster: KubeCluster,
    kubectl: Kubectl,
    kube_namespace: str,
    tmp_path: Path,
    open_port: int,
    services: list[Service],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="kubeprober")
    await asyncio.to_thread(kubectl, "apply", "-k", str(CRD_DIR))
    stack = await _start_stack(
        kube_cluster, kubectl, kube_namespace, tmp_path, ApiProxyMode.READ, services
    )
    ns = kube_namespace
    await _run(kubectl, "create", "configmap", "settings", "-n", ns, "--from-literal=a=1")
    manifest = PROBE.format(port=open_port)
    await asyncio.to_thread(kubectl, "apply", "-n", ns, "-f", "-", input=manifest)
    via = stack.kubectl

    async def has_status() -> bool:
        got = await _run(via, "get", "probestatus", "-o", "name")
        return "probestatus.kubeprober.io/web" in got.stdout

    await eventually(has_status, what="the ProbeStatus, read through the aggregator")
    assert "settings" in (await _run(via, "get", "configmaps")).stdout
    assert "Name:" in (await _run(via, "describe", "configmap", "settings")).stdout
    assert "probestatuses" in (await _run(via, "api-resources")).stdout

    # A watch sees a change, then outlives its client: both ends close.
    watch = await asyncio.to_thread(via.popen, "get", "configmap", "settings", "-w", "-o", "name")
    try:
        assert watch.stdout is not None
        first = await asyncio.to_thread(watch.stdout.readline)
        assert first.strip() == "configmap/settings"
        await _run(kubectl, "label", "configmap", "settings", "-n", ns, "seen=yes")
        changed = await asyncio.to_thread(watch.stdout.readline)
        assert changed.strip() == "configmap/settings"
    finally:
        watch.terminate()
        await asyncio.to_thread(watch.communicate)

    def watch_ended() -> bool:
        return all(any("verb=WATCH" in line for line in _audit(caplog, logger)) for logger in AUDIT)

    await eventually(watch_ended, what="the watch's audit lines on both sides (it ended)")

    # Writes are refused by the agent without --api-proxy-write, with its reason.
    refused = await _run(via, "create", "configmap", "x", "--from-literal=k=hush-body", check=False)
    assert refused.returncode != 0
    assert "lets only reads through" in refused.stderr and "--api-proxy-write" in refused.stderr

    # The agent of sun runs without --accept-api-proxy; a wrong token is unauthorised; the
    # read token may not use the proxy.
    base = f"{stack.aggregator.url}/api/v1/clusters"
    for cluster, token, code in (
        ("sun", stack.tokens["alice"], 403),
        ("moon", "wrong-token", 401),
        ("moon", "read-secret-token", 403),
    ):
        async with (
            aiohttp.ClientSession(connector=stack.connector()) as http,
            http.get(
                f"{base}/{cluster}/kube/api/v1/namespaces/{ns}/pods",
                headers={"Authorization": f"Bearer {token}"},
            ) as answer,
        ):
            assert answer.status == code, await answer.text()
            if cluster == "sun":
                reply = await answer.json()
                assert reply["kind"] == "Status" and "--accept-api-proxy" in reply["message"]

    lines = _audit(caplog, AUDIT[0]) + _audit(caplog, AUDIT[1])
    assert any("operator=alice cluster=moon verb=GET" in line for line in lines)
    assert any("verb=POST" in line and "code=403" in line for line in lines)
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert stack.tokens["alice"] not in everything
    assert "hush-body" not in everything


async def test_rbac_of_the_service_account_refuses_writes(
    kube_cluster: KubeCluster,
    kubectl: Kubectl,
    kube_namespace: str,
    tmp_path: Path,
    services: list[Service],
) -> None:
    if not kube_cluster.real:
        pytest.skip("the API test server enforces no RBAC: a real control plane decides this")
    stack = await _start_stack(
        kube_cluster, kubectl, kube_namespace, tmp_path, ApiProxyMode.WRITE, services
    )
    refused = await _run(
        stack.kubectl, "create", "configmap", "x", "--from-literal=a=b", check=False
    )
    assert refused.returncode != 0
    user = f"system:serviceaccount:{kube_namespace}:kubeprober-api-proxy"
    assert "forbidden" in refused.stderr and user in refused.stderr


def test_kubeconfig_needs_https(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "alice"
    token.write_text("secret-of-alice\n")
    argv = ["kubeconfig", "--cluster", "moon", "--operator-token-file", str(token)]
    assert cli.main([*argv, "--aggregator", "http://127.0.0.1:8088"]) == 3
    assert "kubectl sends no token over http://" in capsys.readouterr().err
    assert cli.main([*argv, "--aggregator", "https://agg.example:8443"]) == 0
    out = capsys.readouterr().out
    assert "https://agg.example:8443/api/v1/clusters/moon/kube" in out
    assert "secret-of-alice" not in out and str(token) in out
