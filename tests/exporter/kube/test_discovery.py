"""Targets discovered from the cluster: the agent follows Services, Ingresses, EndpointSlices,
Pods and Nodes live, runs one check per target, and drops a target with its object.

Real HTTP(S) servers on loopback answer every target: one port per Service (the URL is
templated with ``${target.port}``), and one HTTPS server for every Ingress host, as an
Ingress controller serves them (``${target.host}`` as TLS server name and Host header).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import sys
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_asyncio
import trustme
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from kubeprober.kube.api import KubeApi
from kubeprober.kube.errors import NotFound
from kubeprober.kube.resources import (
    ENDPOINT_SLICES,
    INGRESSES,
    NODES,
    PODS,
    PROBES,
    SERVICES,
    Resource,
)
from tests.exporter.kube.conftest import (
    KUBEPROBER,
    AgentStarter,
    checks_by_name,
    create_probe,
    eventually,
    probe_body,
    probe_status,
)
from tests.exporter.test_metrics import promtool_check
from tests.harness.faultproxy import FaultProxy
from tests.harness.kubectl import Kubectl
from tests.harness.simulator import LOCAL_IMAGE, Simulator
from tests.probers._tls_certs import write_ca

DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")

COUNT = 50
FAILING_SERVICE = 7
DOMAIN = "example.test"
LABEL = "kubeprober.io/probe"


@dataclass
class Servers:
    """The loopback servers: one HTTP port per Service, one HTTPS port for every host."""

    ports: list[int]
    https_port: int
    ca_file: str


@pytest_asyncio.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    """Start COUNT HTTP servers and one HTTPS server; Service FAILING_SERVICE's and the
    hosts named down-* answer 503."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(f"*.{DOMAIN}").configure_cert(context)
    bad_port = 0

    async def answer(request: web.Request) -> web.Response:
        local = request.transport.get_extra_info("sockname") if request.transport else None
        failing = request.host.startswith("down-") or (local and local[1] == bad_port)
        return web.Response(status=503 if failing else 200, text=request.host)

    app = web.Application()
    app.router.add_get("/", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        ports = []
        for _ in range(COUNT):
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            ports.append(runner.addresses[-1][1])
        bad_port = ports[FAILING_SERVICE]
        secure = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await secure.start()
        yield Servers(ports, runner.addresses[-1][1], write_ca(ca, tmp_path))
    finally:
        await runner.cleanup()


def service(name: str, port: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {LABEL: "true"}},
        "spec": {"ports": [{"name": "http", "port": port}]},
    }


def ingress(name: str, host: str) -> dict[str, Any]:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    path = {"path": "/", "pathType": "Prefix", "backend": backend}
    return {
        "metadata": {"name": name},
        "spec": {"tls": [{"hosts": [host]}], "rules": [{"host": host, "http": {"paths": [path]}}]},
    }


def discovering_probe(servers: Servers) -> dict[str, Any]:
    services = {"kind": "Service", "labelSelector": f"{LABEL}=true", "port": "http"}
    return probe_body(
        "fleet",
        [
            {
                "name": "services",
                "prober": "http",
                "targets": {"fromObjects": services},
                "with": {"url": "http://127.0.0.1:${target.port}/"},
            },
            {
                "name": "hosts",
                "prober": "http",
                "targets": {"fromObjects": {"kind": "Ingress"}},
                "with": {
                    "url": f"https://127.0.0.1:{servers.https_port}/",
                    "serverName": "${target.host}",
                    "headers": {"Host": "${target.host}"},
                    "caFile": servers.ca_file,
                },
            },
            {
                "name": "capped",
                "prober": "tcp",
                "targets": {"fromObjects": services, "max": 10},
                "with": {"host": "127.0.0.1", "port": "${target.port}"},
            },
        ],
    )


def probe_entry(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """One probe of an agent's /status; KeyError while it is not there."""
    (entry,) = [p for p in doc["clusters"][0]["probes"] if p["name"] == name] or [None]
    if entry is None:
        raise KeyError(name)
    return entry


def statuses(entry: dict[str, Any], check: str) -> dict[str, str | None]:
    """Target name -> status, for one check's targets in a /status probe entry."""
    prefix = f"{check}/"
    return {
        c["name"].removeprefix(prefix).split("/")[-1]: c["status"]
        for c in entry["checks"]
        if c["name"].startswith(prefix)
    }


async def test_fifty_services_and_ingresses_are_probed_and_followed(
    kube: KubeApi, kube_namespace: str, agent_process: AgentStarter, servers: Servers
) -> None:
    ns = kube_namespace
    creates = []
    for i, port in enumerate(servers.ports):
        creates.append(kube.create(SERVICES, service(f"svc-{i}", port), namespace=ns))
        host = f"{'down' if i == 3 else 'up'}-{i}.{DOMAIN}"
        creates.append(kube.create(INGRESSES, ingress(f"ing-{i}", host), namespace=ns))
    await asyncio.gather(*creates)
    await create_probe(kube, ns, discovering_probe(servers))
    agent = await agent_process()

    async def all_ran() -> dict[str, Any] | None:
        _, doc = await agent.get("/status")
        entry = probe_entry(doc, "fleet")
        ran = [c for c in entry["checks"] if c["status"] is not None]
        return entry if len(ran) == 2 * COUNT + 10 else None

    entry = await eventually(all_ran, within=30, interval=0.2, what="every target's result")
    services = statuses(entry, "services")
    assert len(services) == COUNT
    assert {n for n, s in services.items() if s != "PASS"} == {f"svc-{FAILING_SERVICE}"}
    hosts = statuses(entry, "hosts")
    assert len(hosts) == COUNT
    assert {n for n, s in hosts.items() if s != "PASS"} == {f"down-3.{DOMAIN}"}
    assert entry["targets"] == [
        {"check": "services", "total": COUNT, "leftOut": 0, "message": ""},
        {"check": "hosts", "total": COUNT, "leftOut": 0, "message": ""},
        {"check": "capped", "total": 10, "leftOut": COUNT - 10, "message": ""},
    ]

    # ProbeStatus lists the failing targets and counts the others.
    async def written() -> dict[str, Any] | None:
        status = await probe_status(kube, ns, "fleet")
        counts = {t["check"]: t for t in status.get("targets") or []}
        done = counts.get("services", {}).get("passed") == COUNT - 1
        return status if done and counts["hosts"]["passed"] == COUNT - 1 else None

    status = await eventually(written, within=15, interval=0.2, what="the ProbeStatus")
    assert sorted(checks_by_name(status)) == [
        f"hosts/{ns}/ing-3/down-3.{DOMAIN}",
        f"services/{ns}/svc-{FAILING_SERVICE}",
    ]
    assert status["passed"] == f"{2 * COUNT - 2 + 10}/{2 * COUNT + 10}"

    # A Service goes, another comes: the new one is probed within seconds, not at the next
    # run (the probe runs once), and the old one leaves /status and /metrics.
    await kube.delete(SERVICES, "svc-0", namespace=ns)
    await kube.create(SERVICES, service("svc-new", servers.ports[0]), namespace=ns)

    async def followed() -> dict[str, Any] | None:
        _, doc = await agent.get("/status")
        now = statuses(probe_entry(doc, "fleet"), "services")
        return doc if "svc-0" not in now and now.get("svc-new") == "PASS" else None

    await eventually(followed, within=10, interval=0.1, what="the targets to follow")
    _, text = await agent.get("/metrics")
    targets = {
        s.labels["target"]
        for f in text_string_to_metric_families(text)
        if f.name == "kubeprober_check_success"
        for s in f.samples
        if s.labels["check"] == "services"
    }
    assert f"{ns}/svc-new" in targets and f"{ns}/svc-0" not in targets
    assert len(targets) == COUNT
    left_out = [
        s.value
        for f in text_string_to_metric_families(text)
        if f.name == "kubeprober_check_targets_left_out"
        for s in f.samples
        if s.labels["check"] == "capped"
    ]
    assert left_out == [COUNT - 10]
    done = promtool_check(text)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def one_of_each(ns: str, node: str) -> dict[str, tuple[Any, dict[str, Any], str | None]]:
    """kind -> (resource, an object of it, its namespace), each giving one target."""
    pod = {
        "metadata": {"name": "p1"},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/none:1"}]},
    }
    endpoint_slice = {
        "metadata": {"name": "es1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["198.51.100.7"]}],
    }
    labelled_node = {"metadata": {"name": node, "labels": {LABEL: ns}}}
    return {
        "Service": (SERVICES, service("s1", 80), ns),
        "Ingress": (INGRESSES, ingress("i1", f"one.{DOMAIN}"), ns),
        "EndpointSlice": (ENDPOINT_SLICES, endpoint_slice, ns),
        "Pod": (PODS, pod, ns),
        "Node": (NODES, labelled_node, None),
    }


EXPECTED = {
    "Service": "{ns}/s1",
    "Ingress": "{ns}/i1/one.example.test",
    "EndpointSlice": "{ns}/web/198.51.100.7",
    "Pod": "{ns}/p1",
    "Node": "{node}",
}


async def test_every_kind_is_followed_and_a_bad_field_is_refused(
    kube: KubeApi, kube_namespace: str, agent_process: AgentStarter, closed_port: int
) -> None:
    ns = kube_namespace
    node = f"kp-targets-{ns}"[:63]
    objects = one_of_each(ns, node)
    checks = []
    for kind in objects:
        selection: dict[str, Any] = {"kind": kind}
        if kind == "Node":  # only ours: a simulator's nodes may be there too
            selection["labelSelector"] = f"{LABEL}={ns}"
        # No ${target...} here: every object is a target, whatever fields it has yet.
        checks.append(
            {
                "name": kind.lower(),
                "prober": "tcp",
                "targets": {"fromObjects": selection},
                "with": {"host": "127.0.0.1", "port": closed_port},
            }
        )
    await create_probe(kube, ns, probe_body("kinds", checks))
    bad = probe_body(
        "bad",
        [
            {
                "name": "nodes",
                "prober": "tcp",
                "targets": {"fromObjects": {"kind": "Node"}},
                "with": {"host": "${target.namespace}", "port": 22},
            }
        ],
    )
    await create_probe(kube, ns, bad)
    agent = await agent_process()
    try:
        for resource, body, where in objects.values():
            if where is None:
                await kube.create(resource, body, namespace="")
            else:
                await kube.create(resource, body, namespace=where)
        want = {kind.lower(): EXPECTED[kind].format(ns=ns, node=node) for kind in objects}

        async def found() -> bool:
            _, doc = await agent.get("/status")
            names = {c["name"] for c in probe_entry(doc, "kinds")["checks"]}
            return names == {f"{check}/{target}" for check, target in want.items()}

        await eventually(found, within=15, interval=0.1, what="one target of each kind")

        async def refused() -> str:
            probe = await kube.get(PROBES, "bad", namespace=ns)
            conditions = {c["type"]: c for c in (probe.get("status") or {}).get("conditions", [])}
            valid = conditions.get("Valid", {})
            return str(valid.get("message", "")) if valid.get("status") == "False" else ""

        message = await eventually(refused, what="Valid=False on the bad Probe")
        assert (
            'spec.checks[0].with.host: ${target.namespace}: Node targets have no field "namespace"'
            in message
        )

        for resource, body, where in objects.values():
            await kube.delete(resource, body["metadata"]["name"], namespace=where or "")

        async def gone() -> bool:
            _, doc = await agent.get("/status")
            return probe_entry(doc, "kinds")["checks"] == []

        await eventually(gone, within=15, interval=0.1, what="every target to go")
    finally:
        with contextlib.suppress(NotFound):
            await kube.delete(NODES, node, namespace="")


README = Path(__file__).resolve().parents[3] / "README.md"
DEFAULT_PROBES = README.parent / "manifests" / "probes"
SERVER = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n"
    "    def log_message(self, *a): pass\n"
    "http.server.HTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n"
)


def readme_example() -> str:
    """The README's discovered-targets Probe, as written there."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    (block,) = [b for b in blocks if "name: web-services" in b]
    return str(block)


def web_deployment() -> dict[str, Any]:
    """One pod serving HTTP on its IP, port 8080 (named http), as the simulator runs it."""
    container = {
        "name": "srv",
        "image": LOCAL_IMAGE,
        "command": [sys.executable, "-c", SERVER],
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    }
    return {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [container]},
            },
        },
    }


async def test_the_readme_example_works_as_written(
    kube: KubeApi,
    kube_namespace: str,
    kube_simulator: Simulator,
    kubectl: Kubectl,
    agent_process: AgentStarter,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    await kube.create(DEPLOYMENTS, web_deployment(), namespace=ns)
    web = service("web", 18080)
    web["spec"] |= {
        "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 18080, "targetPort": "http"}],
    }
    created = await kube.create(SERVICES, web, namespace=ns)
    ip = created["spec"]["clusterIP"]

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://{ip}:18080/", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    await eventually(
        lambda: asyncio.to_thread(answers), within=30, interval=0.2, what="the Service"
    )
    example = tmp_path / "web-services.yaml"
    example.write_text(readme_example())
    kubectl("apply", "-n", ns, "-f", str(example))
    agent = await agent_process()

    async def passed() -> bool:
        _, doc = await agent.get("/status")
        checks = {c["name"]: c["status"] for c in probe_entry(doc, "web-services")["checks"]}
        return checks == {f"services/{ns}/web": "PASS"}

    await eventually(passed, within=20, interval=0.2, what="the README example's result")


async def test_the_default_probe_follows_ingress_hosts_and_labelled_services(
    kube: KubeApi, kube_namespace: str, kubectl: Kubectl, agent_process: AgentStarter
) -> None:
    """manifests/probes/targets.yaml: a TLS host gets both Ingress checks, a plain one only
    the HTTP one, a labelled Service the services check (their results need cluster DNS)."""
    ns = kube_namespace
    front = ingress("front", f"secure.{DOMAIN}")
    front["spec"]["rules"].append({"host": f"plain.{DOMAIN}"})
    await kube.create(INGRESSES, front, namespace=ns)
    await kube.create(SERVICES, service("api", 8080), namespace=ns)
    await kube.create(
        SERVICES, {**service("other", 8080), "metadata": {"name": "other"}}, namespace=ns
    )
    kubectl("apply", "-n", ns, "-f", str(DEFAULT_PROBES / "targets.yaml"))
    agent = await agent_process(scope=("--all-namespaces",))
    want = {
        f"ingress-certificates/{ns}/front/secure.{DOMAIN}",
        f"ingress-http/{ns}/front/secure.{DOMAIN}",
        f"ingress-http/{ns}/front/plain.{DOMAIN}",
        f"services/{ns}/api",
    }

    async def followed() -> bool:
        _, doc = await agent.get("/status")
        checks = [
            c for p in doc["clusters"][0]["probes"] if p["namespace"] == ns for c in p["checks"]
        ]
        # All namespaces are followed: other tests' objects may still be there.
        return {c["name"] for c in checks if f"/{ns}/" in c["name"]} == want

    await eventually(followed, within=15, interval=0.1, what="the default probe's targets")


async def test_check_takes_targets_from_the_cluster_once(
    kube: KubeApi,
    kube_namespace: str,
    kube_config_path: Path,
    open_port: int,
    closed_port: int,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    await kube.create(SERVICES, service("up", open_port), namespace=ns)
    await kube.create(SERVICES, service("down", closed_port), namespace=ns)
    probes = tmp_path / "p.yaml"
    probes.write_text(
        f"apiVersion: kubeprober.io/v1\nkind: Probe\nmetadata: {{name: shop, namespace: {ns}}}\n"
        "spec:\n  layer: application\n  checks:\n  - name: api\n    prober: tcp\n"
        "    targets: {fromObjects: {kind: Service}}\n"
        '    with: {host: 127.0.0.1, port: "${target.port}"}\n'
    )
    done = await asyncio.create_subprocess_exec(
        KUBEPROBER, "check", "--kubeconfig", str(kube_config_path), str(probes),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(done.communicate(), 60)
    assert done.returncode == 2, err.decode()
    rows = {line.split()[1]: line.split()[3] for line in out.decode().splitlines()[1:]}
    assert rows == {f"api/{ns}/down": "ERROR", f"api/{ns}/up": "PASS"}


async def test_a_check_that_cannot_list_says_why_then_follows(
    kube: KubeApi,
    kube_namespace: str,
    kube_fault_proxy: FaultProxy,
    agent_process: AgentStarter,
    closed_port: int,
) -> None:
    """A 403 on the Services leaves the check without targets and its note saying so; once
    the API answers, the targets come."""
    ns = kube_namespace
    await kube.create(SERVICES, service("s1", closed_port), namespace=ns)
    check = {
        "name": "api",
        "prober": "tcp",
        "targets": {"fromObjects": {"kind": "Service"}},
        "with": {"host": "127.0.0.1", "port": "${target.port}"},
    }
    await create_probe(kube, ns, probe_body("refused", [check]))
    kube_fault_proxy.fail(403, path="/services")
    agent = await agent_process(kubeconfig=kube_fault_proxy.kubeconfig)

    async def note() -> str:
        _, doc = await agent.get("/status")
        return str(probe_entry(doc, "refused")["targets"][0]["message"])

    said = await eventually(
        lambda: note_if(note, "cannot follow"), within=15, what="the check's note"
    )
    assert said.startswith(f"cannot follow services in namespace {ns}: ")
    kube_fault_proxy.clear()

    async def followed() -> bool:
        _, doc = await agent.get("/status")
        entry = probe_entry(doc, "refused")
        return [c["name"] for c in entry["checks"]] == [f"api/{ns}/s1"]

    await eventually(followed, within=20, interval=0.1, what="the targets once listed")


async def note_if(note: Callable[[], Awaitable[str]], start: str) -> str:
    """The note when it starts with ``start``, else "" (not yet)."""
    said = await note()
    return said if said.startswith(start) else ""
