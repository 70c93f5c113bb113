"""The ``ingress`` prober: prove an ingress routes a host, as a browser reaching it would.

An ingress controller picks the backend by the Host header and the certificate by SNI, so a
request to its address alone proves little. This prober connects to an address (the load
balancer's, or any), presents the host in both, and checks the status and body, so it can
test one host before DNS points at it, or each controller replica. The target may come from
an Ingress object: its rule's host and first path, https when the host is under ``tls``, and
the address its status reports. The request itself is the ``http`` prober's, with its checks.

``with:`` options:

- ``host``: the name sent as Host and SNI and checked against the certificate; with
  ``ingress``, it picks the rule (default the first rule with a host).
- ``ingress``: ``namespace/name`` (or ``name``, in the Probe's namespace) of an Ingress to
  take host, path, scheme and address from.
- ``address``: ``IP``, ``host``, ``IP:port`` or ``[IPv6]:port`` to connect to; default the
  first load balancer address in the Ingress's status (with its first listed port), else
  ``host`` itself (DNS).
- ``scheme`` (``http`` or ``https``; default https, or from the Ingress's ``tls``), ``path``
  (default ``/``, or the rule's first path).
- ``expectedCodes`` (unset: any 2xx or 3xx), ``bodyRegex``, ``caFile``, ``insecureSkipVerify``:
  as for ``http``. Redirects are not followed: they would leave the address.

A wrong status or body, a certificate not valid for the host, a refused connection, an
Ingress that does not exist or has no such rule are ERROR. An Ingress that cannot be read
(no permission, API down) is UNKNOWN.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Literal

from kubeprober.kube.resources import INGRESSES
from kubeprober.probers import http
from kubeprober.probers.options import SpecError, option, shown
from kubeprober.probers.sdk import CheckFailed, Context, KubeApiError, Outcome

DESCRIPTION = "Request a host through an ingress address with the right Host and SNI; check it."

PERMISSIONS = (INGRESSES.permission("get"),)


@dataclass(frozen=True)
class Spec:
    """Options of the ``ingress`` prober."""

    host: str | None = option(
        "name sent as Host and SNI; with ingress, picks the rule", default=None
    )
    ingress: str | None = option(
        "namespace/name of an Ingress to take host, path, scheme and address from", default=None
    )
    address: str | None = option(
        "IP, host or host:port to connect to; default the Ingress's, else host", default=None
    )
    scheme: Literal["http", "https"] | None = option(
        "http or https; default https, or from the Ingress's tls", default=None
    )
    path: str | None = option("path to request; default /, or the rule's first", default=None)
    expected_codes: tuple[int, ...] = option(
        "status codes that pass; unset means any 200-399", default=()
    )
    body_regex: str | None = option("regular expression the body must match", default=None)
    ca_file: str | None = option(
        "PEM file of CA certificates trusted besides the system's", default=None
    )
    insecure_skip_verify: bool = option("accept any TLS certificate", default=False)

    def __post_init__(self) -> None:
        if self.host is None and self.ingress is None:
            raise SpecError("host", "set host, ingress, or both")
        if self.host is not None and not _is_host(self.host):
            raise SpecError("host", f"expected a DNS name, got {shown(self.host)}")
        if self.ingress is not None:
            parts = self.ingress.split("/")
            if len(parts) > 2 or not all(parts):
                raise SpecError(
                    "ingress", f"expected namespace/name or name, got {shown(self.ingress)}"
                )
        if self.address is not None:
            _check_address(self.address)
        if self.path is not None and not self.path.startswith("/"):
            raise SpecError("path", f"expected a path starting with /, got {shown(self.path)}")
        # The request options are the http prober's: let it judge them, at load time too.
        try:
            http.Spec(
                url="http://example/",
                expected_codes=self.expected_codes,
                body_regex=self.body_regex,
            )
        except SpecError as exc:
            raise SpecError(exc.path, exc.message) from None


@dataclass(frozen=True)
class _Target:
    """Where the request goes and what it presents."""

    host: str
    address: str
    scheme: str
    path: str
    source: str
    """Why these values: "" or " (Ingress ns/name)"."""


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Resolve the target (from the Ingress if named), then request it as the http prober."""
    target = await _target(spec, ctx)
    request = http.Spec(
        url=f"{target.scheme}://{target.address}{target.path}",
        headers={"Host": target.host},
        server_name=target.host if target.scheme == "https" else None,
        expected_codes=spec.expected_codes,
        body_regex=spec.body_regex,
        ca_file=spec.ca_file,
        insecure_skip_verify=spec.insecure_skip_verify,
        follow_redirects=False,
    )
    what = f"{target.scheme}://{target.host}{target.path} via {target.address}{target.source}"
    said = f"GET {request.url}: "  # the http prober's words for the request; ours name the host
    try:
        outcome = await http.probe(request, ctx)
    except CheckFailed as exc:
        raise CheckFailed(f"{what}: {str(exc).removeprefix(said)}", exc.status) from None
    return Outcome(outcome.status, f"{what}: {outcome.message.removeprefix(said)}")


async def _target(spec: Spec, ctx: Context) -> _Target:
    if spec.ingress is None:
        assert spec.host is not None  # the Spec requires host or ingress
        return _Target(
            host=spec.host,
            address=spec.address or spec.host,
            scheme=spec.scheme or "https",
            path=spec.path or "/",
            source="",
        )
    namespace, _, name = spec.ingress.rpartition("/")
    namespace = namespace or ctx.namespace
    source = f" (Ingress {namespace}/{name})"
    try:
        obj = await ctx.kube.get(INGRESSES, name, namespace=namespace)
    except KubeApiError as exc:
        if exc.code == 404:
            raise CheckFailed(f"Ingress {namespace}/{name} not found") from None
        raise
    host, path = _rule(obj, spec.host, source)
    tls_hosts = {h for t in obj.get("spec", {}).get("tls") or [] for h in t.get("hosts") or []}
    address = spec.address or _load_balancer(obj) or host
    return _Target(
        host=host,
        address=address,
        scheme=spec.scheme or ("https" if host in tls_hosts else "http"),
        path=spec.path or path,
        source=source,
    )


def _rule(obj: dict[str, Any], wanted: str | None, source: str) -> tuple[str, str]:
    """Return the host and first plain path of the rule for ``wanted`` (or the first rule)."""
    rules = [r for r in obj.get("spec", {}).get("rules") or [] if r.get("host")]
    if wanted is not None:
        rules = [r for r in rules if r["host"] == wanted]
    if not rules:
        which = f"for host {wanted}" if wanted else "with a host"
        raise CheckFailed(f"no rule {which}{source}: nothing to request")
    rule = rules[0]
    paths = [
        p.get("path") or "/"
        for p in (rule.get("http") or {}).get("paths") or []
        if p.get("pathType") in ("Prefix", "Exact")
    ]
    return rule["host"], (paths[0] if paths else "/")


def _load_balancer(obj: dict[str, Any]) -> str | None:
    """Return the first address the Ingress's status reports (with its first port), if any."""
    for entry in obj.get("status", {}).get("loadBalancer", {}).get("ingress") or []:
        found = entry.get("ip") or entry.get("hostname")
        if found:
            address = f"[{found}]" if ":" in found else str(found)
            ports = [p["port"] for p in entry.get("ports") or [] if p.get("port")]
            return f"{address}:{ports[0]}" if ports else address
    return None


def _is_host(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return bool(text) and all(
        label and len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
        for label in labels
    )


def _check_address(text: str) -> None:
    """Accept ``IP``, ``host``, ``host:port`` or ``[IPv6]:port``; raise SpecError otherwise."""
    host, port = text, ""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        port = rest.removeprefix(":") if rest.startswith(":") else ("bad" if rest else "")
        ok = bool(bracket)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            ok = False
    else:
        if text.count(":") == 1:
            host, port = text.split(":")
        ok = ":" not in host and _is_host(host)
    if ok and port:
        ok = port.isdigit() and 1 <= int(port) <= 65535
    if not ok:
        raise SpecError(
            "address", f"expected IP, host, host:port or [IPv6]:port, got {shown(text)}"
        )
