"""The ``service`` prober: a Service routes to its pods, by ClusterIP and by DNS name.

Between a client and a pod lie the Deployment and EndpointSlice controllers, kube-proxy's
rules on the client's node and cluster DNS; any of them can stall while pods look healthy.
This prober deploys a small server with a Service of its own (or takes an existing Service),
waits for a ready endpoint, then reaches the ClusterIP (the kube-proxy path) and, with
``dns``, first resolves the Service's name through the cluster DNS Service and connects to
the address it gives. Each step is a phase (``cleanup``, ``create``, ``endpoints``, ``dns``,
``connect``, ``request``, ``delete``); a failure says which step failed and why, naming the
pods' trouble (image pull, crash, unschedulable) when endpoints never became ready.

Its own objects are a Deployment and a Service named ``kubeprober-service-<random>``,
labelled ``kubeprober.io/service-of`` with the check's id: each run deletes what earlier runs
left (a run cut off, an agent that crashed) and deletes its own at the end.

``with:`` options:

- ``service``: ``namespace/name`` of an existing Service to check instead (its endpoints must
  be ready already); the options of the own server below do not apply then.
- ``namespace``: where the own Deployment and Service go (default: the Probe's namespace).
- ``image``, ``command``, ``args``: the own server (default agnhost's ``netexec``, an HTTP
  server on 8080); its pods get ``POD_IP`` from the downward API.
- ``port``: the own server's port (default 8080, also the Service's), or which port of an
  existing Service to use (default its first TCP port).
- ``replicas``: pods of the own Deployment (default 1).
- ``protocol``: ``http`` (default: GET ``path``, status in ``expectedCodes``, unset: any 2xx
  or 3xx) or ``tcp`` (a connection is enough).
- ``dns``: also resolve ``<service>.<namespace>.svc.<clusterDomain>`` through ``dnsService``
  (default ``kube-system/kube-dns``) and connect to the address it gives, which must be the
  ClusterIP.

ERROR: the API server or an admission webhook refused the objects, no ready endpoint in time
(with the pods' trouble), the ClusterIP refusing or not answering, a wrong status, the name not
resolving to the ClusterIP. UNKNOWN: the agent may not do this (RBAC), or the API could not be
reached.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception

from kubeprober.kube.resources import DEPLOYMENTS, ENDPOINT_SLICES, PODS, SERVICES
from kubeprober.probers import http
from kubeprober.probers.durations import format_duration
from kubeprober.probers.options import SpecError, option, shown
from kubeprober.probers.pod_lifecycle import CONTAINER_SECURITY, POD_SECURITY, failure, stalled
from kubeprober.probers.sdk import (
    JSON,
    CheckFailed,
    Context,
    KubeApiError,
    Outcome,
    reason,
    remove_leftovers,
)

DESCRIPTION = (
    "Deploy a server behind a Service (or take an existing one), then reach it by ClusterIP "
    "and DNS name."
)

PERMISSIONS = (
    *(DEPLOYMENTS.permission(verb) for verb in ("create", "delete", "list")),
    *(SERVICES.permission(verb) for verb in ("create", "delete", "get", "list")),
    *(ENDPOINT_SLICES.permission(verb) for verb in ("list", "watch")),
    PODS.permission("list"),
)

LABEL = "kubeprober.io/service-of"
SERVER_LABEL = "kubeprober.io/service"
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"
DEFAULT_PORT = 8080
AGNHOST_ARGS = ("netexec", f"--http-port={DEFAULT_PORT}")
SERVICE_PORT = 80
RETRY = 0.2
"""Seconds between attempts while kube-proxy or DNS catch up with a new Service."""


@dataclass(frozen=True)
class Spec:
    """Options of the ``service`` prober."""

    service: str | None = option(
        "an existing Service to check, namespace/name (default: deploy one of its own)",
        default=None,
    )
    namespace: str | None = option(
        "namespace of its own Deployment and Service (default: the Probe's)", default=None
    )
    image: str = option("its own server's image", default=AGNHOST)
    command: tuple[str, ...] = option("its server's command (default: the image's)", default=())
    args: tuple[str, ...] = option("its server's arguments", default=AGNHOST_ARGS)
    port: int | None = option(
        "its server's port (default 8080), or the existing Service's port to use",
        default=None,
        minimum=1,
        maximum=65535,
    )
    replicas: int = option("pods of its own Deployment", default=1, minimum=1, maximum=10)
    protocol: Literal["http", "tcp"] = option(
        "what to send: an HTTP GET or nothing", default="http"
    )
    path: str = option("the HTTP request's path", default="/")
    expected_codes: tuple[int, ...] = option(
        "HTTP statuses that pass (default: any 2xx or 3xx)", default=()
    )
    dns: bool = option("also reach it by its DNS name, through the cluster DNS", default=False)
    dns_service: str = option(
        "the cluster DNS Service, namespace/name", default="kube-system/kube-dns"
    )
    cluster_domain: str = option("the cluster's DNS domain", default="cluster.local")

    def __post_init__(self) -> None:
        for key, value in (("service", self.service), ("dnsService", self.dns_service)):
            if value is not None:
                _split(key, value)
        if not self.path.startswith("/"):
            raise SpecError("path", f"expected a path starting with /, got {shown(self.path)}")
        if self.service is not None:
            own = {"namespace": self.namespace is not None, "image": self.image != AGNHOST,
                   "command": bool(self.command), "args": self.args != AGNHOST_ARGS,
                   "replicas": self.replicas != 1}  # fmt: skip
            for key, set_ in own.items():
                if set_:
                    raise SpecError(key, "only for its own server, not with service")


def _split(key: str, value: str) -> tuple[str, str]:
    namespace, _, name = value.partition("/")
    if not namespace or not name or "/" in name:
        raise SpecError(key, f"expected namespace/name of a Service, got {shown(value)}")
    return namespace, name


@dataclass(frozen=True)
class _Target:
    """The Service under test: where it is and what it is called in messages."""

    namespace: str
    name: str
    ip: str
    port: int

    def __str__(self) -> str:
        return f"Service {self.namespace}/{self.name}"


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Set up (or find) the Service, then reach it."""
    begun = time.monotonic()
    # Leave a little of the budget for deleting what this run created.
    until = begun + ctx.timeout - min(2.0, ctx.timeout * 0.2)
    if spec.service is not None:
        with ctx.phase("endpoints"):
            target = await _existing(spec, ctx)
        return await _reach(spec, ctx, target, until, f"{target}")
    async with _own(spec, ctx) as target:
        with ctx.phase("endpoints"):
            await _endpoints_ready(ctx, target, until)
        ready = format_duration(round(time.monotonic() - begun, 2))
        return await _reach(spec, ctx, target, until, f"{target}: endpoints ready in {ready}")


async def _existing(spec: Spec, ctx: Context) -> _Target:
    """Return the existing Service as a target if it has a ready endpoint; else fail."""
    assert spec.service is not None
    namespace, name = _split("service", spec.service)
    svc, ip = await _cluster_ip(ctx, spec.service, "")
    ports = [p for p in svc["spec"].get("ports") or [] if p.get("protocol", "TCP") == "TCP"]
    port = next((p for p in ports if spec.port in (None, p.get("port"))), None)
    if port is None:
        has = ", ".join(str(p.get("port")) for p in ports) or "none"
        want = f"port {spec.port}" if spec.port else "a TCP port"
        raise CheckFailed(f"Service {spec.service} has no {want} (TCP ports: {has})")
    target = _Target(namespace, name, ip, int(port["port"]))
    slices = await _slices(ctx, target)
    if not _ready(slices["items"]):
        raise CheckFailed(
            f"endpoints: {target} has no ready endpoints{_not_ready(slices['items'])}"
        )
    return target


@asynccontextmanager
async def _own(spec: Spec, ctx: Context) -> AsyncIterator[_Target]:
    """Create the Deployment and Service of this run (after removing earlier runs' ones);
    delete them when done."""
    namespace = spec.namespace or ctx.namespace
    owner = ctx.owner_id()
    with ctx.phase("cleanup"):
        for resource in (SERVICES, DEPLOYMENTS):
            await remove_leftovers(ctx.kube, resource, f"{LABEL}={owner}", namespace=namespace)
    name = f"kubeprober-service-{secrets.token_hex(4)}"
    port = spec.port or DEFAULT_PORT
    try:
        with ctx.phase("create"):
            try:
                await ctx.kube.create(
                    DEPLOYMENTS, _deployment(spec, name, owner, port), namespace=namespace
                )
                svc = await ctx.kube.create(
                    SERVICES, _service(name, owner, port), namespace=namespace
                )
            except KubeApiError as exc:
                if exc.blames_cluster:
                    raise CheckFailed(f"create: {exc}") from exc
                raise
        yield _Target(namespace, name, str(svc["spec"]["clusterIP"]), SERVICE_PORT)
    finally:
        with ctx.phase("delete"):
            for resource in (SERVICES, DEPLOYMENTS):
                try:
                    await ctx.kube.delete(resource, name, namespace=namespace)
                except (KubeApiError, TimeoutError, CheckFailed) as exc:
                    ctx.log.info(
                        "%s %s/%s left for the next run: %s", resource.plural, namespace, name, exc
                    )


def _deployment(spec: Spec, name: str, owner: str, port: int) -> JSON:
    """Return the server's Deployment: small, unprivileged, quick to stop."""
    container: JSON = {
        "name": "server",
        "image": spec.image,
        "args": list(spec.args),
        "ports": [{"containerPort": port, "protocol": "TCP"}],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
        "resources": {"requests": {"cpu": "1m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": CONTAINER_SECURITY,
    }
    if spec.command:
        container["command"] = list(spec.command)
    labels = {LABEL: owner, SERVER_LABEL: name, "app.kubernetes.io/managed-by": "kubeprober"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": {SERVER_LABEL: name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": POD_SECURITY,
                    "containers": [container],
                },
            },
        },
    }


def _service(name: str, owner: str, port: int) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "labels": {LABEL: owner, "app.kubernetes.io/managed-by": "kubeprober"},
        },
        "spec": {
            "selector": {SERVER_LABEL: name},
            "ports": [
                {"name": "server", "port": SERVICE_PORT, "targetPort": port, "protocol": "TCP"}
            ],
        },
    }


async def _slices(ctx: Context, target: _Target) -> JSON:
    return await ctx.kube.list(
        ENDPOINT_SLICES,
        namespace=target.namespace,
        label_selector=f"kubernetes.io/service-name={target.name}",
    )


async def _cluster_ip(ctx: Context, ref: str, said: str) -> tuple[JSON, str]:
    """Return Service ``ref`` (namespace/name) and its ClusterIP; fail (message prefixed with
    ``said``) if it does not exist or has none."""
    namespace, name = ref.split("/")
    try:
        svc = await ctx.kube.get(SERVICES, name, namespace=namespace)
    except KubeApiError as exc:
        if exc.code == 404:
            raise CheckFailed(f"{said}Service {ref} not found") from None
        raise
    ip = (svc.get("spec") or {}).get("clusterIP")
    if not ip or ip == "None":
        raise CheckFailed(f"{said}Service {ref} has no ClusterIP (headless or ExternalName)")
    return svc, str(ip)


def _ready(slices: list[JSON]) -> list[str]:
    """Return the addresses of ready endpoints."""
    return [
        a
        for s in slices
        for ep in s.get("endpoints") or []
        if (ep.get("conditions") or {}).get("ready") is not False
        for a in ep.get("addresses") or []
    ]


def _not_ready(slices: list[JSON]) -> str:
    count = sum(
        1
        for s in slices
        for ep in s.get("endpoints") or []
        if (ep.get("conditions") or {}).get("ready") is False
    )
    return f" ({count} not ready)" if count else ""


async def _endpoints_ready(ctx: Context, target: _Target, until: float) -> None:
    """Wait for a ready endpoint of the own Service; fail with the pods' trouble if none."""
    begun = time.monotonic()
    loop = asyncio.get_running_loop()
    slices: dict[str, JSON] = {}
    try:
        async with asyncio.timeout_at(loop.time() + (until - time.monotonic())):
            while True:
                listed = await _slices(ctx, target)
                slices = {s["metadata"]["name"]: s for s in listed["items"]}
                if _ready(list(slices.values())):
                    return
                async with ctx.kube.watch(
                    ENDPOINT_SLICES,
                    namespace=target.namespace,
                    label_selector=f"kubernetes.io/service-name={target.name}",
                    resource_version=listed["metadata"].get("resourceVersion"),
                ) as events:
                    async for kind, obj in events:
                        if kind == "DELETED":
                            slices.pop(obj["metadata"]["name"], None)
                        else:
                            slices[obj["metadata"]["name"]] = obj
                        if _ready(list(slices.values())):
                            return
                # The watch ended: list afresh and watch again.
    except TimeoutError:
        pass
    waited = format_duration(round(time.monotonic() - begun, 1))
    why = await _pods_trouble(ctx, target)
    raise CheckFailed(f"endpoints: {target} has no ready endpoint after {waited}: {why}")


async def _pods_trouble(ctx: Context, target: _Target) -> str:
    """Say why the own server's pods are not ready."""
    try:
        pods = await ctx.kube.list(
            PODS, namespace=target.namespace, label_selector=f"{SERVER_LABEL}={target.name}"
        )
    except (KubeApiError, TimeoutError):
        return "its pods could not be read"
    if not pods["items"]:
        return f"no pods were created for Deployment {target.namespace}/{target.name}"
    said = []
    for pod in pods["items"]:
        trouble = failure(pod)
        if trouble is None:
            step = "schedule" if not (pod.get("spec") or {}).get("nodeName") else "ready"
            trouble = stalled(step, pod)
        said.append(f"pod {pod['metadata']['name']}: {trouble}")
    return "; ".join(said)


async def _reach(spec: Spec, ctx: Context, target: _Target, until: float, so_far: str) -> Outcome:
    """Resolve (with ``dns``), connect and request; say which step failed."""
    address, host = target.ip, target.ip
    if spec.dns:
        host = f"{target.name}.{target.namespace}.svc.{spec.cluster_domain}"
        with ctx.phase("dns"):
            address = await _resolve(spec, ctx, host, target, until)
    with ctx.phase("connect"):
        await _connect(address, target.port, until, "the ClusterIP" if not spec.dns else host)
    reached = f"{so_far}; {host}:{target.port}"
    if spec.protocol == "tcp":
        return Outcome.passed(f"{reached} accepts connections")
    request = http.Spec(
        url=f"http://{address}:{target.port}{spec.path}",
        headers={"Host": host},
        expected_codes=spec.expected_codes,
        follow_redirects=False,
    )
    said = f"GET {request.url}: "
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(loop.time() + (until - time.monotonic())):
            outcome = await http.probe(request, ctx)
    except TimeoutError:
        raise CheckFailed(f"request: {reached}{spec.path}: no answer in time") from None
    except CheckFailed as exc:
        raise CheckFailed(
            f"request: {reached}: {str(exc).removeprefix(said)}", exc.status
        ) from None
    message = outcome.message.removeprefix(said)
    if outcome.status.is_success:
        return Outcome(outcome.status, f"{reached}{spec.path}: {message}")
    return Outcome(outcome.status, f"request: {reached}{spec.path}: {message}")


async def _resolve(spec: Spec, ctx: Context, name: str, target: _Target, until: float) -> str:
    """Return the address ``name`` resolves to through the cluster DNS, once it is the
    ClusterIP (DNS catches up with a new Service within moments); fail if it never is."""
    _, server = await _cluster_ip(ctx, spec.dns_service, "dns: cluster DNS ")
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [server]
    via = f"{name} A via {spec.dns_service} ({server})"
    last = ""
    while True:
        left = until - time.monotonic()
        if left <= 0:
            raise CheckFailed(f"dns: {via}: {last or 'no time left to ask'}")
        try:
            async with asyncio.timeout(left):
                answer = await resolver.resolve(name, "A", lifetime=left, search=False)
            got = sorted(str(r.address) for r in answer)
            if target.ip in got:
                return target.ip
            last = f"got {', '.join(got)}, not the ClusterIP {target.ip}"
        except (TimeoutError, dns.exception.Timeout):
            # An attempt cut short by the deadline says less than the answers before it.
            last = last or f"timed out after {format_duration(round(left, 1))}"
        except dns.resolver.NXDOMAIN:
            last = "no such name (NXDOMAIN)"
        except dns.exception.DNSException as exc:
            last = str(exc)
        await asyncio.sleep(min(RETRY, max(until - time.monotonic(), 0)))


async def _connect(address: str, port: int, until: float, what: str) -> None:
    """Connect to address:port, retrying while refused (kube-proxy may lag a new Service)."""
    begun = time.monotonic()
    last = "no attempt"
    while True:
        left = until - time.monotonic()
        if left <= 0:
            waited = format_duration(round(time.monotonic() - begun, 1))
            raise CheckFailed(f"connect: {what} {address}:{port}: {last} (for {waited})")
        try:
            async with asyncio.timeout(left):
                _, writer = await asyncio.open_connection(address, port)
        except TimeoutError:
            # Out of time: an attempt cut short says less than the refusals before it.
            last = "no answer (dropped?)" if last == "no attempt" else last
            continue
        except OSError as exc:
            last = reason(exc)
            await asyncio.sleep(min(RETRY, max(until - time.monotonic(), 0)))
            continue
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()
        return
