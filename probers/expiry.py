"""The ``expiry`` prober: warn before anything with an end date runs out.

Licences, cloud credentials, domains, support contracts and certificates kept elsewhere all
expire on a date somebody knew and nobody watched. This prober reads that date from where it is
kept, either a field of an HTTP API's JSON answer or a field or annotation of a Kubernetes
object (a cert-manager Certificate's ``status.notAfter``, an annotation your tooling sets), and
judges how far off it is.

``with:`` options:

- ``url`` (with ``headers``, ``caFile``, ``insecureSkipVerify``): GET this JSON API, and
  ``json``: the dotted path of the date in its answer (``data.licence.expires``).
- Or ``object``: ``{apiVersion, resource, namespace, name}`` of a Kubernetes object (resource
  in the plural, as in RBAC: ``certificates``; no namespace for cluster-scoped ones) with
  ``field`` (dotted path, ``status.notAfter``) or ``annotation`` (a key of
  ``metadata.annotations``). The agent needs ``get`` on that resource: grant it along with the
  Probe, since no fixed rule can name it.
- ``format``: how the date is written, in ``strptime`` codes (``%d-%b-%Y``); default RFC 3339
  or ISO 8601 (a date alone is midnight UTC), or a number of Unix seconds.
- ``warnDays`` (default 30) and ``errorDays`` (default 0): WARN within ``warnDays`` of the
  date, ERROR within ``errorDays`` of it and once it has passed.
- ``what``: what expires, for the message (default: where the date was read).

Reaching the date's source can fail (the API down, the object gone, the field missing or not a
date): the probe then cannot tell, and the check is UNKNOWN with the reason.
"""

from __future__ import annotations

import datetime
import math
import time
from dataclasses import dataclass
from typing import Any

import yarl

from kubeprober.kube.resources import Permission, Resource
from kubeprober.probers import http
from kubeprober.probers.options import SpecError, option, shown
from kubeprober.probers.sdk import CheckFailed, Context, KubeApiError, Outcome
from kubeprober.probers.status import Status

DESCRIPTION = "Warn and fail ahead of a date read from a JSON API or a Kubernetes object."

# The object is the Probe's to choose, so no grant is fixed here: the operator gives get on it.
PERMISSIONS: tuple[Permission, ...] = ()

_DAY = 86400.0


@dataclass(frozen=True)
class KubeObject:
    """Which Kubernetes object holds the date."""

    api_version: str = option("apiVersion, like v1 or cert-manager.io/v1")
    resource: str = option("resource, plural and lower case, like secrets or certificates")
    name: str = option("object name")
    namespace: str | None = option("namespace; none for cluster-scoped objects", default=None)

    @property
    def api(self) -> Resource:
        """The resource as ctx.kube names it."""
        group, _, version = self.api_version.rpartition("/")
        return Resource(group, version, self.resource, "")

    def __post_init__(self) -> None:
        if not self.api_version or self.api_version.count("/") > 1:
            raise SpecError("apiVersion", f"expected v1 or group/v1, got {shown(self.api_version)}")
        if not self.resource.islower() or "/" in self.resource:
            raise SpecError(
                "resource", f"expected a plural like secrets, got {shown(self.resource)}"
            )


@dataclass(frozen=True)
class Spec:
    """Options of the ``expiry`` prober."""

    url: str | None = option("JSON API to GET the date from", default=None)
    json: str | None = option("dotted path of the date in the JSON answer", default=None)
    headers: dict[str, str] = option("request headers (url)", default_factory=dict)
    ca_file: str | None = option(
        "PEM file of CA certificates trusted besides the system's (url)", default=None
    )
    insecure_skip_verify: bool = option("accept any TLS certificate (url)", default=False)
    object: KubeObject | None = option("Kubernetes object holding the date", default=None)
    field: str | None = option("dotted path of the date in the object", default=None)
    annotation: str | None = option("annotation of the object holding the date", default=None)
    format: str | None = option(
        "strptime format of the date; default RFC 3339/ISO 8601 or Unix seconds", default=None
    )
    warn_days: float = option("WARN within this many days of the date", default=30, minimum=0)
    error_days: float = option("ERROR within this many days of the date", default=0, minimum=0)
    what: str | None = option("what expires, named in the message", default=None)

    def __post_init__(self) -> None:
        if (self.url is None) == (self.object is None):
            raise SpecError(
                "url", "set either url (with json) or object (with field or annotation)"
            )
        if self.url is not None:
            if not self.json:
                raise SpecError("json", "required with url: the dotted path of the date")
            try:
                http.Spec(url=self.url, headers=self.headers)
            except SpecError as exc:
                raise SpecError(exc.path, exc.message) from None
        if self.object is not None and (self.field is None) == (self.annotation is None):
            raise SpecError("field", "set field or annotation with object, one of them")
        if self.url is None and (self.headers or self.ca_file or self.insecure_skip_verify):
            raise SpecError("url", "headers, caFile and insecureSkipVerify go with url")
        if self.error_days > self.warn_days:
            raise SpecError(
                "errorDays",
                f"expected at most warnDays ({self.warn_days:g}), got {self.error_days:g}",
            )


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Read the date, then judge it against errorDays and warnDays."""
    where, value = await (_from_url(spec, ctx) if spec.url else _from_object(spec, ctx))
    at = _parse_date(value, spec.format, where)
    what = spec.what or where
    day = datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d")
    left = (at - time.time()) / _DAY
    if left <= 0:
        return Outcome.error(f"{what} expired on {day} ({math.floor(-left)} days ago)")
    told = f"{what} expires on {day}, in {math.floor(left)} days"
    if left <= spec.error_days:
        return Outcome.error(f"{told} (errorDays {spec.error_days:g}): renew it now")
    if left <= spec.warn_days:
        return Outcome.warn(f"{told} (warnDays {spec.warn_days:g}): renew it")
    return Outcome.passed(told)


async def _from_url(spec: Spec, ctx: Context) -> tuple[str, Any]:
    url = str(yarl.URL(spec.url or "").with_password(None).with_user(None))
    where = f"{spec.json} of {url}"
    request = http.Spec(
        url=spec.url,
        headers=spec.headers,
        ca_file=spec.ca_file,
        insecure_skip_verify=spec.insecure_skip_verify,
        expected_codes=(200,),
    )
    try:
        doc = http.json_of(await http.fetch(request, ctx))
        return where, http.lookup(doc, spec.json or "")
    except CheckFailed as exc:
        raise CheckFailed(f"cannot read {where}: {exc}", Status.UNKNOWN) from None
    except LookupError as exc:
        raise CheckFailed(f"cannot read {where}: {exc}", Status.UNKNOWN) from None


async def _from_object(spec: Spec, ctx: Context) -> tuple[str, Any]:
    obj = spec.object
    assert obj is not None  # the Spec requires url or object
    named = f"{obj.namespace}/{obj.name}" if obj.namespace else obj.name
    where = f"{obj.resource} {named}"
    where += f" annotation {spec.annotation}" if spec.annotation else f" field {spec.field}"
    try:
        found = await ctx.kube.get(obj.api, obj.name, namespace=obj.namespace)
    except KubeApiError as exc:
        raise CheckFailed(f"cannot read {where}: {exc}", Status.UNKNOWN) from None
    if spec.annotation is not None:
        annotations = found.get("metadata", {}).get("annotations") or {}
        if spec.annotation not in annotations:
            raise CheckFailed(f"cannot read {where}: no such annotation", Status.UNKNOWN)
        return where, annotations[spec.annotation]
    try:
        return where, http.lookup(found, spec.field or "")
    except LookupError as exc:
        raise CheckFailed(f"cannot read {where}: {exc}", Status.UNKNOWN) from None


def _parse_date(value: Any, fmt: str | None, where: str) -> float:
    """Return ``value`` as Unix seconds; UNKNOWN naming ``where`` if it is not a date."""
    if isinstance(value, int | float) and not isinstance(value, bool) and fmt is None:
        return float(value)
    text = str(value).strip()
    try:
        if fmt is not None:
            parsed = datetime.datetime.strptime(text, fmt)
        elif text.replace(".", "", 1).isdigit():
            return float(text)
        else:
            parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        want = f"a date like {fmt}" if fmt else "an RFC 3339 date or Unix seconds"
        raise CheckFailed(f"{where} is {shown(value)}, not {want}", Status.UNKNOWN) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)  # a date alone: midnight UTC
    return parsed.timestamp()
