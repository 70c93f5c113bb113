"""The ``certificates`` prober: find the cluster's certificates that expire soon, before users do.

Ingress and webhook certificates live in ``kubernetes.io/tls`` Secrets, renewed by cert-manager
or by hand, and an expired one takes its host down; the API server's own serving certificate
expiring locks everyone out. This prober reads the leaf certificate of every TLS Secret in the
namespaces it covers and of the API server (a handshake that reads, never trusts), exports each
expiry as ``certificate_expiry_timestamp_seconds{target}`` (``secret/NAMESPACE/NAME``, and
``host:port`` for the API server, as the ``tls`` prober names endpoints) and judges the soonest.

``with:`` options:

- ``namespaces``: the namespaces whose Secrets are read (default: all, which needs a
  ClusterRole; a namespace that may not be read is named and skipped).
- ``apiServer`` (default true): also the API server's serving certificate.
- ``warnDays`` (default 14): WARN when a certificate expires within this many days.

An expired certificate, or a TLS Secret whose ``tls.crt`` holds no certificate, is ERROR;
expiring within ``warnDays`` is WARN. Secrets that cannot be listed at all (no permission, the
API down) are UNKNOWN.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509

from kubeprober.kube.resources import SECRETS
from kubeprober.probers import tls
from kubeprober.probers.options import SpecError, option, shown
from kubeprober.probers.sdk import JSON, CheckFailed, Context, KubeApiError, Outcome
from kubeprober.probers.status import Status

DESCRIPTION = "Find TLS Secrets and the API server certificate that expire within warnDays."

PERMISSIONS = (SECRETS.permission("list"),)

TLS_SECRET = "kubernetes.io/tls"
# Certificates named in one message; the metric has them all.
_MAX_NAMED = 5


@dataclass(frozen=True)
class Spec:
    """Options of the ``certificates`` prober."""

    namespaces: tuple[str, ...] = option(
        "namespaces whose TLS Secrets are read; default all", default=()
    )
    api_server: bool = option("also the API server's serving certificate", default=True)
    warn_days: int = option(
        "WARN when a certificate expires within this many days", default=14, minimum=0
    )

    def __post_init__(self) -> None:
        for i, ns in enumerate(self.namespaces):
            if not ns or "/" in ns:
                raise SpecError(f"namespaces[{i}]", f"expected a namespace name, got {shown(ns)}")


@dataclass(frozen=True)
class _Found:
    """One certificate's expiry, by what people call it."""

    name: str
    not_after: float

    @property
    def told(self) -> str:
        """``name on 2027-01-03 (30 days)``, or ``(expired 3 days ago)``."""
        day = datetime.datetime.fromtimestamp(self.not_after, datetime.UTC).strftime("%Y-%m-%d")
        left = (self.not_after - time.time()) / tls.DAY
        when = f"{int(left)} days" if left >= 0 else f"expired {int(-left)} days ago"
        return f"{self.name} on {day} ({when})"


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Read every TLS Secret's certificate and the API server's; judge the soonest to expire."""
    found: list[_Found] = []
    broken: list[str] = []
    skipped: list[str] = []
    with ctx.phase("secrets"):
        for secret in await _tls_secrets(spec, ctx, skipped):
            meta = secret.get("metadata", {})
            name = f"{meta.get('namespace')}/{meta.get('name')}"
            not_after = _not_after(secret)
            if not_after is None:
                broken.append(name)
                continue
            ctx.record_certificate(f"secret/{name}", not_after)
            found.append(_Found(f"Secret {name}", not_after))
    if spec.api_server:
        found.append(await _api_server(ctx))
    return _judge(spec, found, broken, skipped)


async def _tls_secrets(spec: Spec, ctx: Context, skipped: list[str]) -> list[JSON]:
    """List TLS Secrets everywhere, or in each namespace named, noting those it may not read."""
    kind = f"type={TLS_SECRET}"
    if not spec.namespaces:
        return list((await ctx.kube.list(SECRETS, field_selector=kind))["items"])
    secrets: list[JSON] = []
    for ns in spec.namespaces:
        try:
            secrets += (await ctx.kube.list(SECRETS, namespace=ns, field_selector=kind))["items"]
        except KubeApiError as exc:
            if exc.code != 403:
                raise
            skipped.append(ns)
    if skipped and len(skipped) == len(spec.namespaces):
        raise CheckFailed(
            f"may not list Secrets in any of {', '.join(skipped)}: grant list on secrets",
            Status.UNKNOWN,
        )
    return secrets


def _not_after(secret: JSON) -> float | None:
    """Return the expiry of the first (leaf) certificate in ``tls.crt``, None if there is none."""
    data = secret.get("data")
    pem = data.get("tls.crt") if isinstance(data, dict) else None
    try:
        certs = x509.load_pem_x509_certificates(base64.b64decode(str(pem or "")))
    except ValueError:
        return None
    return tls.certificate(certs[0]).not_after


async def _api_server(ctx: Context) -> _Found:
    """Read the API server's serving certificate (no trust needed: only its expiry is wanted)."""
    url = urlsplit(ctx.kube.server)
    host, port = url.hostname or "", url.port or 443
    where = tls.Spec(host=host, port=port)
    deadline = asyncio.get_running_loop().time() + ctx.timeout
    with ctx.phase("apiserver"):
        der = await tls.handshake(where, host, tls.unverifying(), ctx=ctx, deadline=deadline)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        not_after = tls.certificate(x509.load_der_x509_certificate(der or b"")).not_after
    except ValueError:
        raise CheckFailed(f"the API server at {target} sent no certificate that parses") from None
    ctx.record_certificate(target, not_after)
    return _Found(f"the API server's certificate ({target})", not_after)


def _judge(spec: Spec, found: list[_Found], broken: list[str], skipped: list[str]) -> Outcome:
    now = time.time()
    found.sort(key=lambda f: f.not_after)
    expired = [f for f in found if f.not_after <= now]
    soon = [f for f in found if now < f.not_after < now + spec.warn_days * tls.DAY]
    note = f"; not read (forbidden): namespaces {', '.join(skipped)}" if skipped else ""
    problems = []
    if expired:
        problems.append(f"expired: {_named(expired)}")
    if broken:
        problems.append(f"TLS Secrets with no certificate in tls.crt: {', '.join(broken)}")
    if soon:
        problems.append(f"expiring within {spec.warn_days} days: {_named(soon)}")
    if problems:
        status = Status.ERROR if expired or broken else Status.WARN
        return Outcome(status, "; ".join(problems) + ": renew them" + note)
    if not found:
        return Outcome.passed("no TLS Secrets found" + note)
    return Outcome.passed(
        f"{len(found)} certificates valid beyond {spec.warn_days} days; "
        f"the soonest: {found[0].told}{note}"
    )


def _named(found: list[_Found]) -> str:
    listed = ", ".join(f.told for f in found[:_MAX_NAMED])
    more = len(found) - _MAX_NAMED
    return listed + (f" and {more} more" if more > 0 else "")
