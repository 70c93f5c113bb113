"""The ``tls`` prober: warn before a certificate expires, fail when clients would reject it.

An expired or mismatched certificate takes a service down as surely as a crash. This prober
does a verified TLS handshake and reports the leaf certificate's expiry, both as the check
result and as ``certificate_expiry_timestamp_seconds{target="host:port"}``. When verification
fails it connects once more without verifying, only to read the certificate, so expired and
untrusted certificates still have their expiry exported. It sends no application data.

``with:`` options:

- ``host`` (required) and ``port`` (default 443): the endpoint.
- ``serverName``: the name sent as SNI and checked against the certificate (default ``host``).
- ``warnDays`` (default 14): WARN when the certificate expires within this many days.
- ``caFile``: PEM file of CA certificates trusted besides the system's (private CAs).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import ssl
import time
from dataclasses import dataclass

from cryptography import x509

from kubeprober.probers.options import SpecError, option
from kubeprober.probers.sdk import CheckFailed, Context, Outcome, reason, trusting

DESCRIPTION = "Check an endpoint's TLS certificate: trusted, matching its name, not expiring soon."

DAY = 86400.0
"""Seconds in a day, the unit certificate lifetimes are told in."""
# OpenSSL verify codes (X509_V_ERR_*) that get a message of their own.
_NOT_YET_VALID = 9
_EXPIRED = 10
_NAME_MISMATCH = (62, 64)  # hostname, IP address


@dataclass(frozen=True)
class Spec:
    """Options of the ``tls`` prober."""

    host: str = option("host name or IP address to connect to")
    port: int = option("TCP port", default=443, minimum=1, maximum=65535)
    server_name: str | None = option(
        "name sent as SNI and checked against the certificate; default host", default=None
    )
    warn_days: int = option(
        "WARN when the certificate expires within this many days", default=14, minimum=0
    )
    ca_file: str | None = option(
        "PEM file of CA certificates trusted besides the system's", default=None
    )

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise SpecError("host", 'expected a host name or IP address, got ""')


@dataclass(frozen=True)
class Certificate:
    """What a human needs from a leaf certificate."""

    not_after: float
    names: tuple[str, ...]
    issuer: str

    @property
    def until(self) -> str:
        """The expiry date, UTC, as on-call people read it."""
        return datetime.datetime.fromtimestamp(self.not_after, datetime.UTC).strftime("%Y-%m-%d")


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Handshake with verification, export the expiry and judge it against ``warnDays``."""
    target = _target(spec)
    name = spec.server_name or spec.host
    who = _who(spec, name)
    deadline = asyncio.get_running_loop().time() + ctx.timeout
    try:
        der = await handshake(spec, name, trusting(spec.ca_file), ctx=ctx, deadline=deadline)
    except ssl.SSLCertVerificationError as exc:
        # Read the certificate without trusting it, so its expiry is still exported.
        try:
            der = await handshake(spec, name, unverifying(), ctx=ctx, deadline=deadline)
        except CheckFailed:
            der = None  # the rejection is the news; this second look is a bonus
        cert = _parse(der)
        if cert is not None:
            ctx.record_certificate(target, cert.not_after)
        return Outcome.error(_rejection(who, name, exc, cert))
    cert = _parse(der)
    if cert is None:
        return Outcome.error(f"{who}: the server sent no certificate that could be parsed")
    ctx.record_certificate(target, cert.not_after)
    left = cert.not_after - time.time()
    if left < spec.warn_days * DAY:
        when = f"in {int(left // DAY)} days" if left >= DAY else "within a day"
        return Outcome.warn(
            f"{who} expires {when}, on {cert.until} (warnDays {spec.warn_days}): renew it"
        )
    return Outcome.passed(f"{who} valid until {cert.until} ({int(left // DAY)} days)")


async def handshake(
    spec: Spec,
    name: str,
    context: ssl.SSLContext,
    *,
    ctx: Context,
    deadline: float,
) -> bytes | None:
    """Connect and do the TLS handshake; return the leaf certificate (DER) the server sent.

    Failures to connect or to shake hands raise CheckFailed naming ``host:port``; a
    certificate that ``context`` rejects raises ssl.SSLCertVerificationError.
    """
    target = _target(spec)
    loop = asyncio.get_running_loop()
    stage = "connect"
    transport: asyncio.BaseTransport | None = None
    try:
        async with asyncio.timeout_at(deadline):
            with ctx.phase("connect"):
                transport, protocol = await loop.create_connection(
                    asyncio.Protocol, spec.host, spec.port
                )
            stage = "tls"
            with ctx.phase("tls"):
                secure = await loop.start_tls(transport, protocol, context, server_hostname=name)
            tls = secure.get_extra_info("ssl_object") if secure else None
            der = tls.getpeercert(binary_form=True) if isinstance(tls, ssl.SSLObject) else None
            if secure is not None:
                secure.close()
            return der
    except TimeoutError:
        waiting = "connecting to" if stage == "connect" else "waiting for the TLS handshake with"
        raise CheckFailed(f"timed out after {ctx.timeout:g}s {waiting} {target}") from None
    except ssl.SSLCertVerificationError:
        raise
    except socket.gaierror as exc:
        raise CheckFailed(f"cannot resolve {spec.host}: {exc.strerror or exc}") from None
    except OSError as exc:  # ssl.SSLError included: the peer does not speak TLS, or hung up
        if stage == "connect":
            raise CheckFailed(f"cannot connect to {target}: {reason(exc)}") from None
        raise CheckFailed(f"TLS handshake with {target} failed: {reason(exc)}") from None
    finally:
        if transport is not None:
            # Closing after the TLS close sends close_notify, then frees the socket now rather
            # than after the peer's reply (or ssl_shutdown_timeout).
            transport.close()


def _target(spec: Spec) -> str:
    """Return ``host:port``, the metric's target label (IPv6 hosts in brackets, as in URLs)."""
    host = f"[{spec.host}]" if ":" in spec.host else spec.host
    return f"{host}:{spec.port}"


def _who(spec: Spec, name: str) -> str:
    """Name the certificate as briefly as is unambiguous: by name, port only when unusual."""
    where = spec.host if spec.port == 443 else _target(spec)
    return f"certificate for {where}" if name == spec.host else f"certificate for {name} at {where}"


def unverifying() -> ssl.SSLContext:
    """Return a client context that accepts any certificate: for reading one, not trusting it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _parse(der: bytes | None) -> Certificate | None:
    if not der:
        return None
    try:
        return certificate(x509.load_der_x509_certificate(der))
    except ValueError:
        return None


def certificate(cert: x509.Certificate) -> Certificate:
    """Return what a human needs from ``cert``: expiry, names and issuer."""
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        names += san.get_values_for_type(x509.DNSName)
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return Certificate(
        not_after=cert.not_valid_after_utc.timestamp(),
        names=tuple(names),
        issuer=cert.issuer.rfc4514_string(),
    )


def _rejection(
    who: str, name: str, exc: ssl.SSLCertVerificationError, cert: Certificate | None
) -> str:
    """Say why a client would reject the certificate, in the words on-call people search for."""
    code = exc.verify_code
    if cert is not None and code == _EXPIRED:
        ago = int((time.time() - cert.not_after) // DAY)
        return f"{who} expired on {cert.until} ({ago} days ago)"
    if code == _NOT_YET_VALID:
        return f"{who} is not valid yet: {exc.verify_message}"
    if code in _NAME_MISMATCH or (cert is not None and not _matches(name, cert.names)):
        names = ", ".join(cert.names) if cert and cert.names else "no subject alternative names"
        return f"{who} does not match {json.dumps(name)}: it is for {names}"
    message = f"{who} is not trusted: {exc.verify_message or exc.reason or exc}"
    if cert is not None:
        message += f" (issuer {cert.issuer})"
    return message


def _matches(name: str, names: tuple[str, ...]) -> bool:
    """Tell whether ``name`` is among ``names``, with one-label wildcards, as TLS clients do."""
    try:
        return ipaddress.ip_address(name) in {_ip(n) for n in names}
    except ValueError:
        pass
    wanted = name.lower().rstrip(".")
    for pattern in (n.lower().rstrip(".") for n in names):
        if pattern == wanted:
            return True
        if pattern.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
