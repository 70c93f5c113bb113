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

NXDOMAIN, an empty answer, a failing or silent nameserver and missing or unexpected answers are
ERROR. No usable system resolver configuration is UNKNOWN: the probe could not ask anyone.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from dataclasses import dataclass
from typing import Literal

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

from kubeprober.probers.options import SpecError, option, shown
from kubeprober.probers.sdk import CheckFailed, Context, Outcome
from kubeprober.probers.status import Status

DESCRIPTION = "Resolve a name (A, AAAA, CNAME, SRV, TXT) and check the answers."

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

    def __post_init__(self) -> None:
        bad = f"expected a DNS name, got {shown(self.name)}"
        if not self.name or any(c.isspace() for c in self.name):
            raise SpecError("name", bad)
        try:
            dns.name.from_text(self.name)
        except dns.exception.DNSException as exc:
            raise SpecError("name", f"{bad} ({exc})") from None
        if self.nameserver is not None:
            _parse_nameserver(self.nameserver)
        for i, value in enumerate(self.expect):
            try:
                _normalise_expected(self.record_type, value)
            except ValueError as exc:
                raise SpecError(f"expect[{i}]", f"{exc}, got {shown(value)}") from None
        if self.expect_exactly and not self.expect:
            raise SpecError("expectExactly", "true needs the answers listed in expect")


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Ask the question and compare the answers with the expected ones."""
    resolver, via = _resolver(spec)
    question = f"{spec.name} {spec.record_type}"
    try:
        # dnspython's lifetime overshoots by a retry's worth; the outer timeout keeps our bound.
        async with asyncio.timeout(ctx.timeout):
            with ctx.phase("resolve"):
                answer = await resolver.resolve(
                    spec.name, spec.record_type, tcp=spec.tcp, lifetime=ctx.timeout, search=False
                )
    except (TimeoutError, dns.exception.Timeout):
        return Outcome.error(f"timed out after {ctx.timeout:g}s resolving {question} via {via}")
    except dns.resolver.NXDOMAIN:
        return Outcome.error(f"{question}: no such name (NXDOMAIN) from {via}")
    except dns.resolver.NoAnswer:
        return Outcome.error(f"{question}: the name has no {spec.record_type} records ({via})")
    except dns.resolver.NoNameservers as exc:
        return Outcome.error(f"{question}: no answer from {via}: {_server_errors(exc)}")
    except dns.exception.DNSException as exc:
        return Outcome.error(f"{question} via {via}: {exc}")

    canonical = _name(answer.canonical_name.to_text())
    if canonical != _name(spec.name):  # say so, or a surprising address has no explanation
        question += f" (CNAME to {canonical})"
    got = {_render(rdata) for rdata in answer}
    want = {_normalise_expected(spec.record_type, value) for value in spec.expect}
    missing = sorted(want - got)
    extra = sorted(got - want) if spec.expect_exactly else []
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing {_listed(missing)}")
        if extra:
            problems.append(f"unexpected {_listed(extra)}")
        return Outcome.error(f"{question} via {via}: {'; '.join(problems)}; got {_listed(got)}")
    return Outcome.passed(f"{question}: {_listed(got)}")


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
