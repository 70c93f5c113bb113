"""The ``tls`` prober against real TLS servers on loopback with ``trustme`` certificates."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from kubeprober.probers import tls
from kubeprober.probers.options import SpecError, parse_options
from kubeprober.probers.sdk import CheckFailed, Context, Outcome
from kubeprober.probers.status import Status
from tests.ports import free_port
from tests.probers._tls_certs import DAY, issue, server_context, tls_server, write_ca

PATH = "spec.checks[0].with"


@dataclass
class Trust:
    """A CA the prober trusts (through ``caFile``) and one it does not."""

    ca: trustme.CA
    stranger: trustme.CA
    ca_file: str


@pytest.fixture(scope="module")
def trust(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trust]:
    ca = trustme.CA()
    yield Trust(ca, trustme.CA(), write_ca(ca, tmp_path_factory.mktemp("tls")))


async def run(options: dict[str, Any], *, io_timeout: float = 5.0) -> tuple[Outcome, Context]:
    """Parse ``options`` as a manifest would and probe, as the runner does."""
    spec = parse_options(tls.Spec, options, PATH)
    ctx = Context("default", "probe", "check", timeout=io_timeout)
    try:
        outcome = await tls.probe(spec, ctx)
    except CheckFailed as exc:
        outcome = Outcome(exc.status, str(exc))
    return outcome, ctx


@dataclass(frozen=True)
class CertCase:
    names: tuple[str, ...]
    valid_for: datetime.timedelta
    status: Status
    message: str
    trusted: bool = True
    options: tuple[tuple[str, Any], ...] = ()


CERT_CASES = {
    "valid": CertCase(
        ("127.0.0.1",),
        100 * DAY + DAY / 2,
        Status.PASS,
        "certificate for 127.0.0.1:{port} valid until {date} (100 days)",
    ),
    "expiring within warnDays": CertCase(
        ("127.0.0.1",), 3 * DAY + DAY / 2, Status.WARN, "expires in 3 days, on {date} (warnDays 14)"
    ),
    "expiring but warnDays 2": CertCase(
        ("127.0.0.1",),
        3 * DAY + DAY / 2,
        Status.PASS,
        "valid until {date} (3 days)",
        options=(("warnDays", 2),),
    ),
    "expiring within the day": CertCase(
        ("127.0.0.1",), DAY / 2, Status.WARN, "expires within a day, on {date}"
    ),
    "expired": CertCase(
        ("127.0.0.1",),
        -2 * DAY - DAY / 2,
        Status.ERROR,
        "certificate for 127.0.0.1:{port} expired on {date} (2 days ago)",
    ),
    "wrong host": CertCase(
        ("other.example",),
        100 * DAY,
        Status.ERROR,
        'does not match "127.0.0.1": it is for other.example',
    ),
    "serverName matches": CertCase(
        ("svc.example",),
        100 * DAY,
        Status.PASS,
        "certificate for svc.example at 127.0.0.1:{port} valid until {date}",
        options=(("serverName", "svc.example"),),
    ),
    "serverName mismatch": CertCase(
        ("svc.example", "127.0.0.1"),
        100 * DAY,
        Status.ERROR,
        'certificate for web.example at 127.0.0.1:{port} does not match "web.example": '
        "it is for svc.example, 127.0.0.1",
        options=(("serverName", "web.example"),),
    ),
    "wildcard": CertCase(
        ("*.apps.example",),
        100 * DAY,
        Status.PASS,
        "valid until",
        options=(("serverName", "shop.apps.example"),),
    ),
    "untrusted CA": CertCase(
        ("127.0.0.1",),
        100 * DAY,
        Status.ERROR,
        "certificate for 127.0.0.1:{port} is not trusted: "
        "unable to get local issuer certificate (issuer ",
        trusted=False,
    ),
}


@pytest.mark.parametrize("case", CERT_CASES.values(), ids=CERT_CASES.keys())
async def test_certificate(case: CertCase, trust: Trust) -> None:
    cert, not_after = issue(
        trust.ca if case.trusted else trust.stranger,
        *case.names,
        valid_for=case.valid_for,
        age=30 * DAY,
    )
    async with tls_server(server_context(cert)) as port:
        outcome, ctx = await run(
            {"host": "127.0.0.1", "port": port, "caFile": trust.ca_file, **dict(case.options)}
        )
    date = datetime.datetime.fromtimestamp(not_after, datetime.UTC).strftime("%Y-%m-%d")
    assert outcome.status == case.status, outcome.message
    assert case.message.format(port=port, date=date) in outcome.message
    # The expiry is exported whatever the verdict: an expired or untrusted cert most of all.
    assert ctx.certificates == {f"127.0.0.1:{port}": not_after}
    assert set(ctx.phases) == {"connect", "tls"}


async def test_system_trust_alone_rejects_a_private_ca(trust: Trust) -> None:
    cert, not_after = issue(trust.ca, "127.0.0.1")
    async with tls_server(server_context(cert)) as port:
        outcome, ctx = await run({"host": "127.0.0.1", "port": port})
    assert outcome.status == Status.ERROR
    assert "is not trusted" in outcome.message
    assert ctx.certificates == {f"127.0.0.1:{port}": not_after}


BROKEN_CASES = {
    "connection refused": ("refused", "cannot connect to 127.0.0.1:{port}: Connection refused"),
    "not TLS": ("banner", "TLS handshake with 127.0.0.1:{port} failed: "),
    "hung handshake": (
        "silent",
        "timed out after 0.3s waiting for the TLS handshake with 127.0.0.1:{port}",
    ),
}


@pytest.mark.parametrize(("server", "message"), BROKEN_CASES.values(), ids=BROKEN_CASES.keys())
async def test_broken_endpoint(server: str, message: str) -> None:
    start = time.monotonic()
    if server == "refused":
        port = free_port()
        outcome, ctx = await run({"host": "127.0.0.1", "port": port}, io_timeout=0.3)
    else:
        banner = b"SSH-2.0-OpenSSH_9.6\r\n" if server == "banner" else b""
        async with tls_server(None, banner=banner) as port:
            outcome, ctx = await run({"host": "127.0.0.1", "port": port}, io_timeout=0.3)
    assert outcome.status == Status.ERROR
    assert message.format(port=port) in outcome.message
    assert ctx.certificates == {}
    assert time.monotonic() - start < 2


async def test_missing_ca_file_is_the_probes_fault(tmp_path: Path) -> None:
    spec = parse_options(
        tls.Spec, {"host": "127.0.0.1", "caFile": str(tmp_path / "nope.pem")}, PATH
    )
    # A probe that cannot load its CA cannot tell anything: UNKNOWN, in one line.
    with pytest.raises(CheckFailed) as failed:
        await tls.probe(spec, Context("default", "probe", "check", timeout=1))
    assert failed.value.status == Status.UNKNOWN
    assert str(failed.value) == f"caFile {tmp_path / 'nope.pem'}: no such file or directory"


SPEC_CASES: dict[str, tuple[dict[str, Any], str | None]] = {
    "minimal": ({"host": "example.com"}, None),
    "everything": (
        {
            "host": "10.0.0.1",
            "port": 8443,
            "serverName": "api.example",
            "warnDays": 30,
            "caFile": "/ca.pem",
        },
        None,
    ),
    "host missing": ({"port": 443}, f"{PATH}.host: required"),
    "host empty": ({"host": " "}, f'{PATH}.host: expected a host name or IP address, got ""'),
    "port zero": ({"host": "a", "port": 0}, f"{PATH}.port: expected integer 1-65535, got 0"),
    "port text": (
        {"host": "a", "port": "https"},
        f'{PATH}.port: expected integer 1-65535, got "https"',
    ),
    "warnDays negative": (
        {"host": "a", "warnDays": -1},
        f"{PATH}.warnDays: expected integer >= 0, got -1",
    ),
    "unknown option": ({"host": "a", "warn": 3}, f"{PATH}.warn: unknown option"),
}


@pytest.mark.parametrize(("options", "error"), SPEC_CASES.values(), ids=SPEC_CASES.keys())
def test_spec(options: dict[str, Any], error: str | None) -> None:
    if error is None:
        spec = parse_options(tls.Spec, options, PATH)
        assert spec.host == options["host"]
        assert spec.port == options.get("port", 443)
        assert spec.warn_days == options.get("warnDays", 14)
        return
    with pytest.raises(SpecError) as info:
        parse_options(tls.Spec, options, PATH)
    assert error in str(info.value)
