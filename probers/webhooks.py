"""The ``webhooks`` prober: every admission webhook's backend is there and completes TLS.

An admission webhook whose backend is down fails every API request it matches: with
``failurePolicy: Fail`` (the default) those requests are refused, for everyone, until someone
finds the webhook. This prober reads every Validating- and MutatingWebhookConfiguration and,
for each webhook, checks what the API server would need: the Service exists, it has ready
endpoints, and each of them (or the ``url``) completes a TLS handshake verified with the
webhook's ``caBundle`` for the name the API server uses (``<service>.<namespace>.svc``).
Phases: ``list``, ``handshake``.

``with:`` options:

- ``labelSelector``: only configurations with these labels.

ERROR: a ``failurePolicy: Fail`` webhook whose backend is missing, has no ready endpoint or
fails the handshake (the message says it blocks the requests it matches). WARN: the same for
a ``failurePolicy: Ignore`` webhook (requests go through unchecked). A list the API refuses is
UNKNOWN.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from kubeprober.kube.resources import (
    ENDPOINT_SLICES,
    MUTATING_WEBHOOKS,
    SERVICES,
    VALIDATING_WEBHOOKS,
    Resource,
)
from kubeprober.probers.options import option
from kubeprober.probers.sdk import JSON, Context, KubeApiError, Outcome

DESCRIPTION = "Every admission webhook's Service has ready endpoints that complete a TLS handshake."

PERMISSIONS = (
    VALIDATING_WEBHOOKS.permission("list"),
    MUTATING_WEBHOOKS.permission("list"),
    SERVICES.permission("get"),
    ENDPOINT_SLICES.permission("list"),
)

KINDS: tuple[tuple[str, Resource], ...] = (
    ("validating", VALIDATING_WEBHOOKS),
    ("mutating", MUTATING_WEBHOOKS),
)
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class Spec:
    """Options of the ``webhooks`` prober."""

    label_selector: str | None = option(
        "only webhook configurations matching this label selector", default=None
    )


@dataclass(frozen=True)
class Webhook:
    """One webhook of one configuration, as the API server calls it."""

    kind: str
    configuration: str
    name: str
    fails_closed: bool
    client: JSON

    def __str__(self) -> str:
        policy = "Fail" if self.fails_closed else "Ignore"
        return f"{self.kind} webhook {self.configuration}/{self.name} (failurePolicy {policy})"


def webhooks_of(kind: str, configuration: JSON) -> list[Webhook]:
    """Return the webhooks of a configuration."""
    name = str(configuration["metadata"]["name"])
    return [
        Webhook(
            kind,
            name,
            str(w.get("name", "")),
            w.get("failurePolicy", "Fail") == "Fail",
            w.get("clientConfig") or {},
        )
        for w in configuration.get("webhooks") or []
    ]


def trust(webhook: Webhook) -> ssl.SSLContext:
    """Return a TLS context trusting the webhook's caBundle (the system's CAs without one)."""
    context = ssl.create_default_context()
    bundle = webhook.client.get("caBundle")
    if bundle:
        try:
            context.load_verify_locations(cadata=base64.b64decode(bundle).decode())
        except (binascii.Error, UnicodeDecodeError, ssl.SSLError, ValueError) as exc:
            raise ValueError(f"caBundle is not PEM certificates ({exc})") from None
    return context


async def handshake(host: str, port: int, server_name: str, context: ssl.SSLContext) -> None:
    """Complete a TLS handshake with host:port (verified for server_name) and close."""
    _, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=server_name)
    writer.close()
    # The handshake is what counts; a slow close_notify is not the backend's fault.
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _endpoints(ctx: Context, webhook: Webhook) -> tuple[list[tuple[str, int]], str]:
    """Return the ready (address, port) of the webhook's Service, or why there is none."""
    ref = webhook.client["service"]
    ns, name, port = ref.get("namespace", ""), ref.get("name", ""), int(ref.get("port", 443))
    try:
        service = await ctx.kube.get(SERVICES, name, namespace=ns)
    except KubeApiError as exc:
        if exc.code == 404:
            return [], f"its service {ns}/{name} does not exist"
        raise
    ports = (service.get("spec") or {}).get("ports") or []
    port_name = next((p.get("name", "") for p in ports if p.get("port") == port), None)
    if port_name is None:
        return [], f"its service {ns}/{name} has no port {port}"
    slices = await ctx.kube.list(
        ENDPOINT_SLICES, namespace=ns, label_selector=f"{SERVICE_NAME_LABEL}={name}"
    )
    found = []
    for piece in slices["items"]:
        target = next(
            (p.get("port") for p in piece.get("ports") or [] if p.get("name", "") == port_name),
            None,
        )
        for endpoint in piece.get("endpoints") or []:
            if target and (endpoint.get("conditions") or {}).get("ready") is not False:
                found += [(address, int(target)) for address in endpoint.get("addresses") or []]
    return sorted(set(found)), "" if found else f"its service {ns}/{name} has no ready endpoints"


async def _check(ctx: Context, webhook: Webhook) -> str | None:
    """Return what is wrong with the webhook's backend, or None."""
    try:
        context = trust(webhook)
    except ValueError as exc:
        return str(exc)
    if "service" in webhook.client:
        ref = webhook.client["service"]
        targets, why = await _endpoints(ctx, webhook)
        if not targets:
            return why
        server_name = f"{ref.get('name')}.{ref.get('namespace')}.svc"
    else:
        url = urlsplit(str(webhook.client.get("url", "")))
        if not url.hostname:
            return "its clientConfig has neither a service nor a URL"
        targets, server_name = [(url.hostname, url.port or 443)], url.hostname
    # Half the budget each, all at once: a backend that hangs is named, not the whole check.
    results = await asyncio.gather(
        *(
            asyncio.wait_for(handshake(host, port, server_name, context), ctx.timeout / 2)
            for host, port in targets
        ),
        return_exceptions=True,
    )
    failed = [
        f"{_address(host, port)}: {_reason(result)}"
        for (host, port), result in zip(targets, results, strict=True)
        if isinstance(result, BaseException)
    ]
    return f"TLS handshake failed with {'; '.join(failed)}" if failed else None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted for this name: {exc.verify_message}"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError):
        return (exc.strerror or str(exc) or type(exc).__name__).lower()
    return f"{type(exc).__name__}: {exc}"


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Check every webhook's backend."""
    with ctx.phase("list"):
        hooks: list[Webhook] = []
        for kind, resource in KINDS:
            listed = await ctx.kube.list(resource, label_selector=spec.label_selector)
            hooks += [h for c in listed["items"] for h in webhooks_of(kind, c)]
    with ctx.phase("handshake"):
        found = await asyncio.gather(*(_check(ctx, h) for h in hooks))
    problems = [(h, why) for h, why in zip(hooks, found, strict=True) if why]
    blocking = [f"{h}: {why}; it blocks what it matches" for h, why in problems if h.fails_closed]
    unchecked = [
        f"{h}: {why}; what it matches goes unchecked" for h, why in problems if not h.fails_closed
    ]
    if blocking:
        return Outcome.error("; ".join(blocking + unchecked))
    if unchecked:
        return Outcome.warn("; ".join(unchecked))
    return Outcome.passed(f"{len(hooks)} webhooks: every backend ready and completing TLS")
