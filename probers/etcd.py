"""The ``etcd`` prober: prove etcd takes a write, is healthy and raises no alarm.

etcd is the cluster's memory: when it is out of space (a NOSPACE alarm) or has no leader, the
API server can read but not write, and every controller stalls. This prober asks one endpoint,
in this order: ``/health``, the raised alarms, the member's status (which names the leader),
then puts, reads back and deletes a scratch key. It speaks etcd's v3 HTTP/JSON gateway (keys and
values base64 in JSON) over aiohttp with client certificates, so no gRPC stack is needed.

``with:`` options:

- ``endpoint`` (required): ``https://host:port`` (or ``http://``) of one etcd member.
- ``caFile``, ``certFile``, ``keyFile``: PEM files of the CA that signed etcd's serving
  certificate and of this client's certificate and key (etcd's ``--client-cert-auth``).
- ``key`` (default ``/kubeprober/probe``): the scratch key written and deleted; a unique
  suffix is added per run, so concurrent probes never race. Keep it outside ``/registry``,
  Kubernetes' own prefix.
- ``write`` (default true): false checks health, alarms and leader only.

A member that answers unhealthy, an alarm, no leader, a refused connection, a rejected
certificate or a write that does not read back are ERROR. Client certificate files that cannot
be loaded are UNKNOWN: the probe could not ask.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
import yarl

from kubeprober.probers.options import SpecError, option, shown
from kubeprober.probers.sdk import CheckFailed, Context, Outcome, reason, trusting
from kubeprober.probers.status import Status

DESCRIPTION = "Check an etcd member: healthy, no alarm, a leader, and a key put, read and deleted."

# Answers are small JSON documents; anything larger is not etcd.
_MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Spec:
    """Options of the ``etcd`` prober."""

    endpoint: str = option("https://host:port (or http://) of one etcd member")
    ca_file: str | None = option("PEM file of the CA that signed etcd's certificate", default=None)
    cert_file: str | None = option("PEM file of the client certificate", default=None)
    key_file: str | None = option("PEM file of the client certificate's key", default=None)
    key: str = option("scratch key written and deleted (a unique suffix is added)", default="")
    write: bool = option("put, read back and delete the scratch key", default=True)

    def __post_init__(self) -> None:
        try:
            url = yarl.URL(self.endpoint)
        except ValueError:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise SpecError(
                "endpoint",
                f"expected https://host:port or http://host:port, got {shown(self.endpoint)}",
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise SpecError("keyFile", "set certFile and keyFile together")
        if self.cert_file is not None and url.scheme != "https":
            raise SpecError("certFile", "client certificates need an https:// endpoint")
        if self.key.startswith("/registry"):
            raise SpecError(
                "key", f"stay out of Kubernetes' /registry prefix, got {shown(self.key)}"
            )


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Check health, alarms and leader, then put, read back and delete a scratch key."""
    base = spec.endpoint.rstrip("/")
    tls = _tls(spec) if base.startswith("https://") else None
    # etcd with --client-cert-auth ends a handshake without a client certificate: say so.
    hint = (
        " (no certFile given: does etcd want a client certificate?)"
        if tls and not spec.cert_file
        else ""
    )
    deadline = asyncio.get_running_loop().time() + ctx.timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout()) as session:

        async def call(
            path: str, body: dict[str, Any] | None = None, *, ok: tuple[int, ...] = (200,)
        ) -> Any:
            return await _call(
                session, base + path, body, ok=ok, tls=tls, hint=hint, ctx=ctx, deadline=deadline
            )

        # An unhealthy member answers 503 with the same document: read it, name the alarm first.
        health = await call("/health", ok=(200, 503))
        alarms = (await call("/v3/maintenance/alarm", {"action": "GET"})).get("alarms") or []
        if alarms:
            raised = ", ".join(
                f"{a.get('alarm', '?')} on member {a.get('memberID', '?')}" for a in alarms
            )
            hint = " (compact and defragment, then disarm)" if "NOSPACE" in raised else ""
            return Outcome.error(f"etcd at {base} has alarms raised: {raised}{hint}")
        if str(health.get("health")) != "true":
            reason = health.get("reason") or "no reason given"
            return Outcome.error(f"etcd at {base} reports itself unhealthy: {reason}")
        status = await call("/v3/maintenance/status", {})
        if str(status.get("leader", "0")) == "0":
            return Outcome.error(f"etcd at {base} has no leader: the cluster cannot take writes")
        summary = f"etcd {status.get('version', '?')} at {base} healthy, leader {status['leader']}"
        if not spec.write:
            return Outcome.passed(summary)
        key = f"{spec.key or '/kubeprober/probe'}/{secrets.token_hex(8)}"
        value = secrets.token_hex(8)
        with ctx.phase("write"):
            await call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})
        try:
            with ctx.phase("read"):
                got = await call("/v3/kv/range", {"key": _b64(key)})
            values = [_unb64(kv.get("value", "")) for kv in got.get("kvs") or []]
            if values != [value]:
                return Outcome.error(
                    f"etcd at {base}: key {key} read back {shown(values)} after writing {value}"
                )
        finally:
            with ctx.phase("delete"):
                await call("/v3/kv/deleterange", {"key": _b64(key)})
        return Outcome.passed(f"{summary}; put, read and deleted {key}")


async def _call(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any] | None,
    *,
    ok: tuple[int, ...],
    tls: ssl.SSLContext | None,
    hint: str,
    ctx: Context,
    deadline: float,
) -> Any:
    """GET (no body) or POST JSON to the gateway; return its JSON answer if the status is ``ok``."""
    method = "GET" if body is None else "POST"
    try:
        async with asyncio.timeout_at(deadline):
            async with session.request(method, url, json=body, ssl=tls or True) as resp:
                raw = await resp.content.read(_MAX_BODY)
                status = resp.status
    except TimeoutError:
        raise CheckFailed(f"timed out after {ctx.timeout:g}s waiting for {url}") from None
    except aiohttp.ClientConnectorCertificateError as exc:
        raise CheckFailed(f"{url}: etcd's certificate rejected: {exc.certificate_error}") from None
    except aiohttp.ClientConnectorError as exc:
        raise CheckFailed(f"cannot connect to {url}: {reason(exc.os_error)}") from None
    except aiohttp.ClientError as exc:
        raise CheckFailed(f"{url}: {type(exc).__name__}: {exc}{hint}") from None
    text = raw.decode(errors="replace")
    if status not in ok:
        try:
            message = json.loads(text).get("message") or text
        except (ValueError, AttributeError):
            message = text
        raise CheckFailed(f"{method} {url}: {status}: {' '.join(str(message).split())[:200]}")
    try:
        doc = json.loads(text)
    except ValueError:
        raise CheckFailed(f"{url} answered non-JSON (is this etcd?): {text[:120]!r}") from None
    if not isinstance(doc, dict):
        raise CheckFailed(f"{url} answered {shown(doc)}, not a JSON object (is this etcd?)")
    return doc


def _tls(spec: Spec) -> ssl.SSLContext:
    """Trust ``caFile`` and present the client certificate; unreadable files are UNKNOWN."""
    context = trusting(spec.ca_file)
    if spec.cert_file and spec.key_file:
        try:
            context.load_cert_chain(spec.cert_file, spec.key_file)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise CheckFailed(
                f"certFile {spec.cert_file} / keyFile {spec.key_file}: {str(reason).lower()}",
                Status.UNKNOWN,
            ) from None
    return context


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode(errors="replace")
