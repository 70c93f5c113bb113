"""The ``dns`` prober against a real dnsmasq on 127.0.0.1 serving a handful of test records."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kubeprober.probers import dns
from kubeprober.probers.options import SpecError, parse_options
from kubeprober.probers.sdk import Context
from kubeprober.probers.status import Status
from tests.ports import free_port
from tests.probers._dnsmasq import dnsmasq

PATH = "spec.checks[0].with"

RECORDS = [
    "--host-record=web.test,127.0.0.10,2001:db8::10",
    "--host-record=multi.test,127.0.0.11",
    "--host-record=multi.test,127.0.0.12",
    "--cname=alias.test,web.test",
    "--srv-host=_http._tcp.web.test,web.test,8080,10,5",
    "--srv-host=_http._tcp.web.test,other.test,8081,20,1",
    "--txt-record=txt.test,v=spf1 -all",
    "--txt-record=long.test,part1,part2",
]


@pytest.fixture(scope="module")
def nameserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Yield ``127.0.0.1:PORT`` of a dnsmasq serving RECORDS, for the whole module."""
    with dnsmasq(RECORDS, log_dir=tmp_path_factory.mktemp("dnsmasq")) as port:
        yield f"127.0.0.1:{port}"


@pytest.fixture
def silent_nameserver() -> Iterator[str]:
    """Yield the address of a UDP socket that receives queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def _ctx(timeout: float = 2.0) -> Context:
    return Context(namespace="default", probe="names", check="dns", timeout=timeout)


# (case id, options besides nameserver, expected status, substrings of the message; {ns} is
# replaced by the nameserver's address)
CASES: list[tuple[str, dict[str, Any], Status, tuple[str, ...]]] = [
    ("a", {"name": "web.test"}, Status.PASS, ('web.test A: "127.0.0.10"',)),
    ("a-expected", {"name": "web.test", "expect": ["127.0.0.10"]}, Status.PASS, ()),
    (
        "a-mismatch",
        {"name": "web.test", "expect": ["127.0.0.99"]},
        Status.ERROR,
        ('web.test A via {ns}: missing "127.0.0.99"; got "127.0.0.10"',),
    ),
    (
        "a-all-present",
        {"name": "multi.test", "expect": ["127.0.0.12", "127.0.0.11"], "expectExactly": True},
        Status.PASS,
        ('"127.0.0.11", "127.0.0.12"',),
    ),
    ("a-subset", {"name": "multi.test", "expect": ["127.0.0.12"]}, Status.PASS, ()),
    (
        "a-unexpected",
        {"name": "multi.test", "expect": ["127.0.0.12"], "expectExactly": True},
        Status.ERROR,
        ('unexpected "127.0.0.11"',),
    ),
    (
        "a-through-cname",
        {"name": "alias.test", "expect": ["127.0.0.10"]},
        Status.PASS,
        ('alias.test A (CNAME to web.test): "127.0.0.10"',),
    ),
    ("a-over-tcp", {"name": "web.test", "tcp": True, "expect": ["127.0.0.10"]}, Status.PASS, ()),
    (
        "aaaa-other-spelling",
        {"name": "WEB.test.", "type": "AAAA", "expect": ["2001:DB8:0:0::10"]},
        Status.PASS,
        ('"2001:db8::10"',),
    ),
    (
        "cname",
        {"name": "alias.test", "type": "CNAME", "expect": ["Web.Test."], "expectExactly": True},
        Status.PASS,
        ('alias.test CNAME: "web.test"',),
    ),
    (
        "cname-mismatch",
        {"name": "alias.test", "type": "CNAME", "expect": ["db.test"]},
        Status.ERROR,
        ('missing "db.test"', 'got "web.test"'),
    ),
    (
        "srv",
        {
            "name": "_http._tcp.web.test",
            "type": "SRV",
            "expect": ["10 5 8080 web.test.", "20  1 8081 other.test"],
            "expectExactly": True,
        },
        Status.PASS,
        ('"10 5 8080 web.test", "20 1 8081 other.test"',),
    ),
    (
        "srv-mismatch",
        {"name": "_http._tcp.web.test", "type": "SRV", "expect": ["10 5 9090 web.test"]},
        Status.ERROR,
        ('missing "10 5 9090 web.test"',),
    ),
    ("txt", {"name": "txt.test", "type": "TXT", "expect": ["v=spf1 -all"]}, Status.PASS, ()),
    ("txt-joined", {"name": "long.test", "type": "TXT", "expect": ["part1part2"]}, Status.PASS, ()),
    (
        "txt-mismatch",
        {"name": "txt.test", "type": "TXT", "expect": ["v=spf1 ~all"]},
        Status.ERROR,
        ('missing "v=spf1 ~all"; got "v=spf1 -all"',),
    ),
    (
        "nxdomain",
        {"name": "nope.test"},
        Status.ERROR,
        ("nope.test A: no such name (NXDOMAIN) from {ns}",),
    ),
    (
        "no-answer",
        {"name": "web.test", "type": "TXT"},
        Status.ERROR,
        ("web.test TXT: the name has no TXT records ({ns})",),
    ),
    (
        "refused",
        {"name": "example.com"},
        Status.ERROR,
        ("example.com A: no answer from {ns}", "REFUSED"),
    ),
]


@pytest.mark.parametrize(
    ("options", "status", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_probe(
    nameserver: str, options: dict[str, Any], status: Status, needles: tuple[str, ...]
) -> None:
    spec = parse_options(dns.Spec, {"nameserver": nameserver, **options}, PATH)
    ctx = _ctx()

    outcome = await dns.probe(spec, ctx)

    assert outcome.status == status, outcome.message
    for needle in needles:
        assert needle.format(ns=nameserver) in outcome.message
    assert "resolve" in ctx.phases


async def test_silent_nameserver_times_out(silent_nameserver: str) -> None:
    nameserver = silent_nameserver
    spec = dns.Spec(name="web.test", nameserver=nameserver)

    start = time.monotonic()
    outcome = await dns.probe(spec, _ctx(timeout=0.5))

    assert outcome.status == Status.ERROR
    assert outcome.message == f"timed out after 0.5s resolving web.test A via {nameserver}"
    assert time.monotonic() - start < 1.0, "the prober must bound its own I/O by ctx.timeout"


async def test_closed_nameserver_over_tcp() -> None:
    nameserver = f"127.0.0.1:{free_port(udp=True)}"
    spec = dns.Spec(name="web.test", nameserver=nameserver, tcp=True)

    outcome = await dns.probe(spec, _ctx(timeout=0.5))

    assert outcome.status == Status.ERROR
    assert outcome.message == (
        f"web.test A: no answer from {nameserver}: {nameserver} Connection refused"
    )


GOOD_SPECS: list[tuple[dict[str, Any], dns.Spec]] = [
    (
        {"name": "kubernetes.default.svc.cluster.local"},
        dns.Spec(name="kubernetes.default.svc.cluster.local"),
    ),
    (
        {"name": "web.test", "type": "AAAA", "nameserver": "[::1]:5353", "expect": ["::1"]},
        dns.Spec(name="web.test", record_type="AAAA", nameserver="[::1]:5353", expect=("::1",)),
    ),
    (
        {"name": "_x._tcp.test", "type": "SRV", "nameserver": "127.0.0.1", "tcp": True},
        dns.Spec(name="_x._tcp.test", record_type="SRV", nameserver="127.0.0.1", tcp=True),
    ),
    (
        {"name": "t.test", "type": "TXT", "expect": ["a b"], "expectExactly": True},
        dns.Spec(name="t.test", record_type="TXT", expect=("a b",), expect_exactly=True),
    ),
    ({"name": "a.test", "nameserver": "::1"}, dns.Spec(name="a.test", nameserver="::1")),
    (
        {"name": "a.test", "cluster": True, "service": "dns/coredns", "externalName": "b.test"},
        dns.Spec(name="a.test", cluster=True, service="dns/coredns", external_name="b.test"),
    ),
]


@pytest.mark.parametrize(("data", "want"), GOOD_SPECS)
def test_spec_accepts(data: dict[str, Any], want: dns.Spec) -> None:
    assert parse_options(dns.Spec, data, PATH) == want


BAD_SPECS: list[tuple[dict[str, Any], str]] = [
    ({}, f"{PATH}.name: required"),
    ({"name": "a..b"}, f'{PATH}.name: expected a DNS name, got "a..b"'),
    ({"name": ""}, f'{PATH}.name: expected a DNS name, got ""'),
    ({"name": "web .test"}, f'{PATH}.name: expected a DNS name, got "web .test"'),
    ({"name": "x" * 64 + ".test"}, f'{PATH}.name: expected a DNS name, got "xxxxxxxx'),
    (
        {"name": "a.test", "type": "MX"},
        f'{PATH}.type: expected one of A, AAAA, CNAME, SRV, TXT, got "MX"',
    ),
    (
        {"name": "a.test", "nameserver": "dns.google"},
        f'{PATH}.nameserver: expected an IP address with an optional :port, got "dns.google"',
    ),
    (
        {"name": "a.test", "nameserver": "127.0.0.1:0"},
        f'{PATH}.nameserver: expected an IP address with an optional :port, got "127.0.0.1:0"',
    ),
    (
        {"name": "a.test", "nameserver": "127.0.0.1:dns"},
        f'{PATH}.nameserver: expected an IP address with an optional :port, got "127.0.0.1:dns"',
    ),
    (
        {"name": "a.test", "nameserver": "[::1"},
        f'{PATH}.nameserver: expected an IP address with an optional :port, got "[::1"',
    ),
    ({"name": "a.test", "expect": "127.0.0.1"}, f'{PATH}.expect: expected a list, got "127.0.0.1"'),
    (
        {"name": "a.test", "expect": ["10.0.0.1", "::1"]},
        f'{PATH}.expect[1]: expected an IPv4 address, got "::1"',
    ),
    (
        {"name": "a.test", "type": "AAAA", "expect": ["10.0.0.1"]},
        f'{PATH}.expect[0]: expected an IPv6 address, got "10.0.0.1"',
    ),
    (
        {"name": "a.test", "type": "SRV", "expect": ["10 5 web.test"]},
        f"{PATH}.expect[0]: expected 'priority weight port target', got \"10 5 web.test\"",
    ),
    ({"name": "a.test", "expect": [7]}, f"{PATH}.expect[0]: expected a string, got 7"),
    (
        {"name": "a.test", "expectExactly": True},
        f"{PATH}.expectExactly: true needs the answers listed in expect",
    ),
    ({"name": "a.test", "server": "127.0.0.1"}, f"{PATH}.server: unknown option"),
    (
        {"name": "a.test", "cluster": True, "nameserver": "10.0.0.10"},
        f"{PATH}.nameserver: not with cluster: true, which finds the servers",
    ),
    (
        {"name": "a.test", "cluster": True, "service": "kube-dns"},
        f'{PATH}.service: expected namespace/name of a Service, got "kube-dns"',
    ),
    ({"name": "a.test", "service": "a/b"}, f"{PATH}.service: only with cluster: true"),
    ({"name": "a.test", "externalName": "b.test"}, f"{PATH}.externalName: only with cluster"),
    (
        {"name": "a.test", "cluster": True, "externalName": "a b"},
        f'{PATH}.externalName: expected a DNS name, got "a b"',
    ),
]


@pytest.mark.parametrize(
    ("data", "error"), BAD_SPECS, ids=[e.split(": ", 1)[0] for _, e in BAD_SPECS]
)
def test_spec_rejects(data: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_options(dns.Spec, data, PATH)
    assert str(raised.value).startswith(error)
