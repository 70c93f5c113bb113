"""The ``dns`` prober: prove a name resolves, and to the right answers.

Name resolution is where many outages surface first: CoreDNS down, a Service renamed, an
upstream forwarder gone, a record that still points at the old cluster. This prober asks one
question (name and record type) of one nameserver, or of the system resolver, and compares the
answers with what the spec expects. It uses dnspython's asyncio resolver rather than the OS's
``getaddrinfo`` because SRV, TXT and CNAME lookups and asking a chosen server need a real
resolver. Names are taken as fully qualified: no search domains, so what is checked is exactly
what is written.

``with:`` options:

- ``name`` (required) and ``type`` (A, AAAA, CNAME, SRV or TXT; default A): the question.
- ``nameserver``: ``IP`` or ``IP:port`` (``[v6]:port``) of the server to ask, port 53 by
  default; without it the system resolver configuration (``/etc/resolv.conf``) is used.
- ``tcp``: ask over TCP instead of UDP.
- ``expect``: answers that must all be present, written as the prober prints them: addresses
  for A/AAAA, the target name for CNAME, ``"priority weight port target"`` for SRV and the
  record's strings joined for TXT. Trailing dots, letter case and IPv6 spelling do not matter.
- ``expectExactly``: also fail when an answer is not listed in ``expect``.

Cluster mode (``cluster: true``, needs a Kubernetes API) checks the cluster DNS itself: one
broken CoreDNS replica behind a Service fails a third of lookups, which asking the Service
alone may never show. The question (``name``, typically ``kubernetes.default.svc.cluster.local``,
and ``externalName`` if set, which proves forwarding upstream) goes to the Service's ClusterIP
(the kube-proxy path) and to each ready endpoint of its EndpointSlices, and the message names
every one that fails, by pod. A ``name`` of a Service (``<svc>.<ns>.svc.<domain>``) with no
``expect`` must resolve to that Service's ClusterIP, read from the API: stale records fail too.

- ``cluster``: turn cluster mode on (``nameserver`` is then not allowed).
- ``service``: the cluster DNS Service, ``namespace/name`` (default ``kube-system/kube-dns``).
- ``externalName``: a name outside the cluster to resolve too (A), through the same servers.

NXDOMAIN, an empty answer, a failing or silent nameserver and missing or unexpected answers are
ERROR; in cluster mode also a missing DNS Service, one without a ClusterIP or a port for the
protocol, and one without ready endpoints. No usable system resolver configuration is UNKNOWN:
the probe could not ask anyone; so is an API that will not answer (or forbids) the reads.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from dataclasses import dataclass
from typing import Any, Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdata
import dns.resolver
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

from kubeprober.kube.resources import ENDPOINT_SLICES, SERVICES
from kubeprober.probers.options import SpecError, option, shown
from kubeprober.probers.sdk import CheckFailed, Context, KubeApiError, Outcome
from kubeprober.probers.status import Status

DESCRIPTION = (
    "Resolve a name (A, AAAA, CNAME, SRV, TXT) and check the answers; in cluster mode through "
    "the cluster DNS Service and each of its endpoints."
)

# Cluster mode reads the DNS Service and its EndpointSlices (and the Service a name names).
PERMISSIONS = (SERVICES.permission("get"), ENDPOINT_SLICES.permission("list"))

DNS_SERVICE = "kube-system/kube-dns"
# Keep one message readable in a table cell and an alert.
_MAX_LISTED = 200


@dataclass(frozen=True)
class Spec:
    """Options of the ``dns`` prober."""

    name: str = option("name to resolve, fully qualified (no search domains)")
    record_type: Literal["A", "AAAA", "CNAME", "SRV", "TXT"] = option(
        "record type to ask for", default="A", key="type"
    )
    nameserver: str | None = option(
        "IP or IP:port of the nameserver to ask (port 53); default the system resolver",
        default=None,
    )
    tcp: bool = option("ask over TCP instead of UDP", default=False)
    expect: tuple[str, ...] = option(
        "answers that must all be present (SRV: 'priority weight port target')", default=()
    )
    expect_exactly: bool = option("fail on answers not listed in expect too", default=False)
    cluster: bool = option(
        "ask the cluster DNS Service and each of its endpoints (needs a Kubernetes API)",
        default=False,
    )
    service: str = option(
        "cluster mode: the cluster DNS Service, namespace/name", default=DNS_SERVICE
    )
    external_name: str | None = option(
        "cluster mode: a name outside the cluster to resolve (A) too", default=None
    )

    def __post_init__(self) -> None:
        _check_name("name", self.name)
        if self.nameserver is not None:
            _parse_nameserver(self.nameserver)
        for i, value in enumerate(self.expect):
            try:
                _normalise_expected(self.record_type, value)
            except ValueError as exc:
                raise SpecError(f"expect[{i}]", f"{exc}, got {shown(value)}") from None
        if self.expect_exactly and not self.expect:
            raise SpecError("expectExactly", "true needs the answers listed in expect")
        if self.cluster:
            if self.nameserver is not None:
                raise SpecError("nameserver", "not with cluster: true, which finds the servers")
            namespace, _, name = self.service.partition("/")
            if not namespace or not name or "/" in name:
                msg = f"expected namespace/name of a Service, got {shown(self.service)}"
                raise SpecError("service", msg)
        elif self.service != DNS_SERVICE:
            raise SpecError("service", "only with cluster: true")
        elif self.external_name is not None:
            raise SpecError("externalName", "only with cluster: true")
        if self.external_name is not None:
            _check_name("externalName", self.external_name)


@dataclass(frozen=True)
class _Question:
    """One name and record type, with the answers it must have."""

    name: str
    record_type: str
    expect: frozenset[str] = frozenset()
    exactly: bool = False

    def __str__(self) -> str:
        return f"{self.name} {self.record_type}"


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Ask the question and compare the answers with the expected ones."""
    if spec.cluster:
        return await _probe_cluster(spec, ctx)
    resolver, via = _resolver(spec)
    question = _Question(
        spec.name,
        spec.record_type,
        frozenset(_normalise_expected(spec.record_type, value) for value in spec.expect),
        spec.expect_exactly,
    )
    with ctx.phase("resolve"):
        return await _ask(resolver, via, question, tcp=spec.tcp, within=ctx.timeout)


async def _ask(
    resolver: dns.asyncresolver.Resolver, via: str, q: _Question, *, tcp: bool, within: float
) -> Outcome:
    """Ask one question of ``resolver`` (called ``via`` in messages) within ``within`` s."""
    try:
        # dnspython's lifetime overshoots by a retry's worth; the outer timeout keeps our bound.
        async with asyncio.timeout(within):
            answer = await resolver.resolve(
                q.name, q.record_type, tcp=tcp, lifetime=within, search=False
            )
    except (TimeoutError, dns.exception.Timeout):
        return Outcome.error(f"timed out after {within:.3g}s resolving {q} via {via}")
    except dns.resolver.NXDOMAIN:
        return Outcome.error(f"{q}: no such name (NXDOMAIN) from {via}")
    except dns.resolver.NoAnswer:
        return Outcome.error(f"{q}: the name has no {q.record_type} records ({via})")
    except dns.resolver.NoNameservers as exc:
        return Outcome.error(f"{q}: no answer from {via}: {_server_errors(exc)}")
    except dns.exception.DNSException as exc:
        return Outcome.error(f"{q} via {via}: {exc}")

    question = str(q)
    canonical = _name(answer.canonical_name.to_text())
    if canonical != _name(q.name):  # say so, or a surprising address has no explanation
        question += f" (CNAME to {canonical})"
    got = {_render(rdata) for rdata in answer}
    missing = sorted(q.expect - got)
    extra = sorted(got - q.expect) if q.exactly else []
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing {_listed(missing)}")
        if extra:
            problems.append(f"unexpected {_listed(extra)}")
        return Outcome.error(f"{question} via {via}: {'; '.join(problems)}; got {_listed(got)}")
    return Outcome.passed(f"{question}: {_listed(got)}")


async def _probe_cluster(spec: Spec, ctx: Context) -> Outcome:
    """Ask the questions of the DNS Service's ClusterIP and of each of its ready endpoints."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.timeout
    namespace, _, name = spec.service.partition("/")
    protocol = "TCP" if spec.tcp else "UDP"
    with ctx.phase("api"):
        try:
            svc = await ctx.kube.get(SERVICES, name, namespace=namespace)
        except KubeApiError as exc:
            if exc.code == 404:
                return Outcome.error(f"cluster DNS Service {spec.service} not found")
            raise
        servers = _service_server(spec.service, svc, protocol)
        if isinstance(servers, Outcome):
            return servers
        port_name = servers[1]
        slices = await ctx.kube.list(
            ENDPOINT_SLICES,
            namespace=namespace,
            label_selector=f"kubernetes.io/service-name={name}",
        )
        endpoints, not_ready = _endpoints(slices["items"], port_name, protocol)
        if not endpoints:
            return Outcome.error(
                f"cluster DNS Service {spec.service} has no ready endpoints"
                + (f" ({not_ready} not ready)" if not_ready else "")
            )
        question = _Question(
            spec.name,
            spec.record_type,
            frozenset(_normalise_expected(spec.record_type, v) for v in spec.expect)
            or await _service_address(ctx, spec),
            spec.expect_exactly,
        )
    questions = [question]
    if spec.external_name is not None:
        questions.append(_Question(spec.external_name, "A"))
    pairs = [(t, q) for t in [servers[0], *endpoints] for q in questions]

    async def ask(target: Target, q: _Question) -> Outcome:
        via, address, port = target
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [address]
        resolver.port = port
        remaining = max(deadline - loop.time(), 0.001)
        return await _ask(resolver, via, q, tcp=spec.tcp, within=remaining)

    with ctx.phase("resolve"):
        outcomes = await asyncio.gather(*(ask(t, q) for t, q in pairs))
    bad = {t[0] for (t, _), o in zip(pairs, outcomes, strict=True) if o.status is not Status.PASS}
    asked = " and ".join(str(q) for q in questions)
    count = f"{len(endpoints)} endpoint{'s' if len(endpoints) != 1 else ''}"
    skipped = f"; {not_ready} not ready, not asked" if not_ready else ""
    if not bad:
        return Outcome.passed(
            f"{asked}: answered by the Service {spec.service} and its {count}{skipped}"
        )
    failed = "; ".join(o.message for o in outcomes if o.status is not Status.PASS)
    summary = _cluster_summary(servers[0][0], [t[0] for t in endpoints], bad)
    return Outcome.error(f"{summary}: {failed}{skipped}")


Target = tuple[str, str, int]
"""How a server is named in messages, its address and its port."""


def _service_server(
    service: str, svc: dict[str, Any], protocol: str
) -> tuple[Target, str] | Outcome:
    """Return the Service's ClusterIP as a target and its DNS port's name, or why not."""
    spec = svc.get("spec") or {}
    ip = spec.get("clusterIP")
    if not ip or ip == "None":
        return Outcome.error(f"cluster DNS Service {service} has no ClusterIP")
    port = next((p for p in spec.get("ports") or [] if p.get("protocol", "TCP") == protocol), None)
    if port is None:
        return Outcome.error(f"cluster DNS Service {service} has no {protocol} port")
    via = f"the Service {service} ({_hostport(ip, int(port['port']))})"
    return (via, ip, int(port["port"])), port.get("name") or ""


def _endpoints(
    slices: list[dict[str, Any]], port_name: str, protocol: str
) -> tuple[list[Target], int]:
    """Return the ready endpoints serving the DNS port, named by pod, and how many are not ready."""
    found: list[Target] = []
    not_ready = 0
    for s in slices:
        port = next(
            (
                p.get("port")
                for p in s.get("ports") or []
                if (p.get("name") or "") == port_name and p.get("protocol", "TCP") == protocol
            ),
            None,
        )
        if port is None:
            continue
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                not_ready += 1
                continue
            pod = (ep.get("targetRef") or {}).get("name")
            for address in ep.get("addresses") or []:
                where = _hostport(address, int(port))
                found.append((f"{pod} ({where})" if pod else where, address, int(port)))
    return sorted(found), not_ready


async def _service_address(ctx: Context, spec: Spec) -> frozenset[str]:
    """Return the ClusterIP that ``name`` must resolve to if it names a Service, else nothing."""
    labels = _name(spec.name).split(".")
    if spec.record_type != "A" or len(labels) < 4 or labels[2] != "svc":
        return frozenset()
    try:
        svc = await ctx.kube.get(SERVICES, labels[0], namespace=labels[1])
    except KubeApiError as exc:
        if exc.code == 404:  # no such Service: the lookup will say NXDOMAIN
            return frozenset()
        raise
    ip = (svc.get("spec") or {}).get("clusterIP")
    return frozenset([ip]) if ip and ip != "None" else frozenset()


def _cluster_summary(service: str, endpoints: list[str], bad: set[str]) -> str:
    """Say which servers fail, and what that points at."""
    broken = [e for e in endpoints if e in bad]
    if not broken:
        return f"{service} fails while every endpoint answers: the ClusterIP path (kube-proxy)"
    who = ", ".join(broken)
    of = f"{len(broken)} of {len(endpoints)} endpoints fail ({who})"
    return of if service in bad else f"{of}; {service} answers"


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _check_name(key: str, value: str) -> None:
    bad = f"expected a DNS name, got {shown(value)}"
    if not value or any(c.isspace() for c in value):
        raise SpecError(key, bad)
    try:
        dns.name.from_text(value)
    except dns.exception.DNSException as exc:
        raise SpecError(key, f"{bad} ({exc})") from None


def _resolver(spec: Spec) -> tuple[dns.asyncresolver.Resolver, str]:
    """Return a resolver asking the spec's nameserver or the system's, and how to name it."""
    if spec.nameserver is None:
        try:
            resolver = dns.asyncresolver.Resolver(configure=True)
        except dns.exception.DNSException as exc:
            # Nobody was asked, so nothing is known about the target: the check cannot tell.
            raise CheckFailed(
                f"no nameserver given and no usable system resolver configuration: {exc}",
                Status.UNKNOWN,
            ) from exc
        servers = ", ".join(str(s) for s in resolver.nameservers)
        return resolver, f"the system resolver ({servers})"
    host, port = _parse_nameserver(spec.nameserver)
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = port
    return resolver, spec.nameserver


def _parse_nameserver(text: str) -> tuple[str, int]:
    """Split ``IP``, ``IP:port`` or ``[IPv6]:port`` into address and port (default 53)."""
    host, port_text = text, "53"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if rest:
            port_text = rest[1:] if rest.startswith(":") else "bad"
        if not bracket:
            port_text = "bad"
    elif text.count(":") == 1:  # more colons: a bare IPv6 address
        host, port_text = text.split(":")
    try:
        address = str(ipaddress.ip_address(host))
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError(port)
    except ValueError:
        msg = f"expected an IP address with an optional :port, got {shown(text)}"
        raise SpecError("nameserver", msg) from None
    return address, port


def _normalise_expected(record_type: str, value: str) -> str:
    """Return ``value`` spelled as :func:`_render` spells answers; raise ValueError if invalid."""
    if record_type in ("A", "AAAA"):
        version = 4 if record_type == "A" else 6
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            address = None
        if address is None or address.version != version:
            raise ValueError(f"expected an IPv{version} address")
        return str(address)
    if record_type == "CNAME":
        return _name(value)
    if record_type == "SRV":
        parts = value.split()
        if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):
            raise ValueError("expected 'priority weight port target'")
        return " ".join([*(str(int(p)) for p in parts[:3]), _name(parts[3])])
    return value


def _render(rdata: dns.rdata.Rdata) -> str:
    """Spell one answer the way ``expect`` values are written."""
    if isinstance(rdata, A | AAAA):
        return str(ipaddress.ip_address(rdata.address))
    if isinstance(rdata, CNAME):
        return _name(rdata.target.to_text())
    if isinstance(rdata, SRV):
        return f"{rdata.priority} {rdata.weight} {rdata.port} {_name(rdata.target.to_text())}"
    if isinstance(rdata, TXT):
        return b"".join(rdata.strings).decode(errors="replace")
    return rdata.to_text()


def _name(text: str) -> str:
    """Compare names as DNS does: without the root's trailing dot, ignoring case."""
    return text.rstrip(".").lower()


def _listed(values: set[str] | list[str]) -> str:
    """Render answers sorted and quoted, shortened to fit a message."""
    text = ", ".join(shown(v) for v in sorted(values)) or "no answers"
    return text if len(text) <= _MAX_LISTED else text[: _MAX_LISTED - 3] + "..."


def _server_errors(exc: dns.resolver.NoNameservers) -> str:
    """Say what each nameserver answered instead of an answer (REFUSED, SERVFAIL, refused)."""
    parts = []
    for server, _tcp, _port, error, *_ in exc.kwargs.get("errors") or []:
        if isinstance(error, OSError) and error.errno:
            error = os.strerror(error.errno)  # asyncio's text repeats the address
        parts.append(f"{str(server).removeprefix('Do53:').replace('@', ':')} {error}")
    return "; ".join(parts) or str(exc)
