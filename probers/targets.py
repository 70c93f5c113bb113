"""A check's targets: a static list, or Kubernetes objects, each one run of the check.

``targets:`` on a check is either a list (each item a name, or a map of fields with a
``name``) or ``{fromObjects: {kind, namespace | allNamespaces, labelSelector, fieldSelector,
port}, max}``. The check's ``with:`` may then use ``${target.FIELD}``: a string that is just
one reference takes the field's value as it is (``port: ${target.port}`` is a number), any
other string gets the value inserted as text. Which fields exist depends on the kind
(:data:`FIELDS`); a reference to another one is an error when the Probe loads, never a
surprise per target.

This module only reads manifests and objects (plain dicts): following the objects is the
agent's business (``kubeprober.exporter.discovery``). It must not do I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubeprober.probers.options import SpecError, SpecErrors, shown

FieldValue = str | int | bool
STATIC = "static"
"""The kind name of a static list's targets, in messages."""
DEFAULT_MAX = 500
"""Targets a check runs at most unless ``targets.max`` says: hundreds of hosts fit, while a
selector that matches every Pod of a big cluster cannot turn one check into thousands of
runs (and a ProbeStatus into megabytes)."""
MAX_LIMIT = 1000
"""The highest ``targets.max``: at this many failing targets the ProbeStatus stays near
half a megabyte, a third of the API server's object size limit."""

# The fields each kind's targets have; every kind has ``name``.
FIELDS: dict[str, tuple[str, ...]] = {
    "Service": ("name", "namespace", "host", "ip", "port", "portName"),
    "Ingress": ("name", "namespace", "host", "tls", "scheme", "port", "ip"),
    "EndpointSlice": ("name", "namespace", "service", "ip", "port", "portName", "node"),
    "Pod": ("name", "namespace", "ip", "node", "port", "portName"),
    "Node": ("name", "ip", "host"),
}
KINDS = tuple(FIELDS)
_SAMPLE: dict[str, FieldValue] = {
    "name": "name",
    "namespace": "default",
    "host": "target.example",
    "ip": "192.0.2.1",
    "port": 1,
    "portName": "port",
    "tls": True,
    "scheme": "https",
    "service": "service",
    "node": "node",
}
"""Stand-in values of each field, to validate a check's options before any object exists."""

_REFERENCE = re.compile(r"\$\{target\.([^}]*)\}")
_WHOLE = re.compile(r"^\$\{target\.([^}]*)\}$")
_DISCOVERY_KEYS = {"kind", "namespace", "allNamespaces", "labelSelector", "fieldSelector", "port"}


@dataclass(frozen=True)
class Target:
    """One target: its name (unique within its check) and its fields."""

    name: str
    fields: tuple[tuple[str, FieldValue], ...]
    """``(field, value)`` pairs; a tuple so targets compare and hash cheaply."""

    def get(self, field: str) -> FieldValue | None:
        """Return one field's value, or None when the target lacks it."""
        return next((v for f, v in self.fields if f == field), None)


@dataclass(frozen=True)
class FromObjects:
    """Which Kubernetes objects are targets."""

    kind: str
    namespace: str | None
    """One namespace (the Probe's own by default); None follows all namespaces."""
    label_selector: str | None = None
    field_selector: str | None = None
    port: str | int | None = None
    """Which port is ``${target.port}``: a name or number; None takes the first listed."""


@dataclass(frozen=True)
class Targets:
    """A check's ``targets:``: a static list or discovery, the cap, the fields used."""

    static: tuple[Target, ...] | None
    discovery: FromObjects | None
    max: int
    used: frozenset[str]
    """Fields the check's options refer to: objects lacking one are not targets."""

    @property
    def kind(self) -> str:
        """The kind of object targets come from (``static`` for a list)."""
        return self.discovery.kind if self.discovery else STATIC


def references(value: object, path: str = "") -> Iterator[tuple[str, str]]:
    """Yield ``(path, field)`` for every ``${target.FIELD}`` in a manifest value."""
    if isinstance(value, str):
        for field in _REFERENCE.findall(value):
            yield path, field
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from references(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from references(item, f"{path}[{i}]")


def substitute(value: Any, fields: Mapping[str, FieldValue]) -> Any:
    """Return ``value`` with every ``${target.FIELD}`` replaced by the field's value."""
    if isinstance(value, str):
        whole = _WHOLE.match(value)
        if whole:
            return fields[whole.group(1)]
        return _REFERENCE.sub(lambda m: str(fields[m.group(1)]), value)
    if isinstance(value, Mapping):
        return {k: substitute(v, fields) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, fields) for v in value]
    return value


def sample(kind: str, used: frozenset[str], static: tuple[Target, ...] | None) -> list[Target]:
    """The targets to validate options against at load: a static list's own, else stand-ins."""
    if static is not None:
        return list(static)
    return [Target("sample", tuple((f, _SAMPLE[f]) for f in FIELDS[kind] if f in used))]


def parse_targets(
    raw: object, *, path: str, options: object, probe_namespace: str
) -> Targets | None:
    """Validate a check's ``targets`` (``raw``, None when absent) against its ``with:``.

    Raise SpecError naming ``path`` and every ``${target.FIELD}`` the kind does not have.
    """
    found = list(references(options, f"{path}.with"))
    used = {field for _, field in found}
    if raw is None:
        if found:
            where, field = found[0]
            raise SpecError(
                where, f"${{target.{field}}} needs targets: on the check (a list or fromObjects)"
            )
        return None
    static: tuple[Target, ...] | None = None
    discovery: FromObjects | None = None
    limit = DEFAULT_MAX
    errors = SpecErrors()
    if isinstance(raw, list):
        none: tuple[Target, ...] = ()
        static = errors.attempt(_parse_static, raw, f"{path}.targets", default=none)
        limit = MAX_LIMIT  # a list is as long as its author made it; the cap is for discovery
    elif isinstance(raw, Mapping):
        for key in sorted(set(raw) - {"fromObjects", "max"}):
            errors.add(f"{path}.targets.{key}", "unknown field (known: fromObjects, max)")
        discovery = errors.attempt(
            _parse_discovery,
            raw.get("fromObjects"),
            f"{path}.targets.fromObjects",
            probe_namespace,
            default=None,
        )
        limit = raw.get("max", DEFAULT_MAX)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            errors.add(f"{path}.targets.max", f"expected integer 1-{MAX_LIMIT}, got {shown(limit)}")
            limit = DEFAULT_MAX
    else:
        errors.add(
            f"{path}.targets",
            f"expected a list of targets or a map with fromObjects, got {shown(raw)}",
        )
    errors.check()
    if discovery is not None:
        known = FIELDS[discovery.kind]
        for where, field in found:
            if field not in known:
                errors.add(
                    where,
                    f"${{target.{field}}}: {discovery.kind} targets have no field {shown(field)} "
                    f"(known: {', '.join(known)})",
                )
        if discovery.port is not None and "port" not in known:
            errors.add(f"{path}.targets.fromObjects.port", f"{discovery.kind} targets have no port")
    for target in static or ():
        for where, field in found:
            if target.get(field) is None:
                errors.add(
                    where,
                    f"${{target.{field}}}: target {shown(target.name)} has no field {shown(field)}",
                )
    errors.check()
    if static is not None and len(static) > MAX_LIMIT:
        raise SpecError(f"{path}.targets", f"at most {MAX_LIMIT} targets, got {len(static)}")
    return Targets(static, discovery, limit, frozenset(used))


def _parse_static(raw: list[Any], path: str) -> tuple[Target, ...]:
    if not raw:
        raise SpecError(path, "expected at least one target")
    errors = SpecErrors()
    targets: list[Target] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        fields: dict[str, FieldValue]
        if isinstance(item, str):
            fields = {"name": item, "host": item}
        elif isinstance(item, Mapping):
            fields = {}
            for key, value in item.items():
                if isinstance(value, str | int | bool):
                    fields[str(key)] = value
                else:
                    errors.add(
                        f"{path}[{i}].{key}",
                        f"expected a string, number or true/false, got {shown(value)}",
                    )
        else:
            errors.add(f"{path}[{i}]", f"expected a name or a map of fields, got {shown(item)}")
            continue
        name = fields.get("name")
        if not isinstance(name, str) or not name or len(name) > 253 or "\n" in name:
            errors.add(f"{path}[{i}].name", f"expected a name, got {shown(name)}")
            continue
        if name in seen:
            errors.add(f"{path}[{i}].name", f"duplicate target {shown(name)}")
        seen.add(name)
        targets.append(Target(name, tuple(fields.items())))
    errors.check()
    return tuple(targets)


def _parse_discovery(raw: object, path: str, probe_namespace: str) -> FromObjects:
    if not isinstance(raw, Mapping):
        raise SpecError(path, f"expected a map with kind, got {shown(raw)}")
    errors = SpecErrors()
    for key in sorted(set(raw) - _DISCOVERY_KEYS):
        errors.add(f"{path}.{key}", f"unknown field (known: {', '.join(sorted(_DISCOVERY_KEYS))})")
    kind = raw.get("kind")
    if kind not in KINDS:
        errors.add(f"{path}.kind", f"expected one of {', '.join(KINDS)}, got {shown(kind)}")
    every = raw.get("allNamespaces", False)
    if not isinstance(every, bool):
        errors.add(f"{path}.allNamespaces", f"expected true or false, got {shown(every)}")
    namespace = raw.get("namespace", probe_namespace)
    if not isinstance(namespace, str) or not namespace:
        errors.add(f"{path}.namespace", f"expected a namespace name, got {shown(namespace)}")
    if every is True and "namespace" in raw:
        errors.add(f"{path}.namespace", "set namespace or allNamespaces, not both")
    selectors: dict[str, str | None] = {}
    for key in ("labelSelector", "fieldSelector"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            errors.add(f"{path}.{key}", f"expected a selector string, got {shown(value)}")
        selectors[key] = value or None
    port = raw.get("port")
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, str | int) or port == ""
    ):
        errors.add(f"{path}.port", f"expected a port name or number, got {shown(port)}")
    errors.check()
    assert isinstance(kind, str)
    return FromObjects(
        kind=kind,
        # Nodes are cluster-scoped: they are followed cluster-wide whatever the namespace.
        namespace=None if every or kind == "Node" else str(namespace),
        label_selector=selectors["labelSelector"],
        field_selector=selectors["fieldSelector"],
        port=port,
    )


def discovered(spec: FromObjects, used: frozenset[str], obj: Mapping[str, Any]) -> list[Target]:
    """The targets one object of ``spec.kind`` gives: none while it lacks a field in ``used``
    (a Pod without an IP yet) or the port ``spec.port`` names."""
    meta = obj.get("metadata") or {}
    name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    if not name:
        return []
    found = _EXTRACT[spec.kind](obj, name, namespace, spec.port)
    return [
        Target(target, tuple((f, v) for f, v in fields.items() if v is not None))
        for target, fields in found
        if all(fields.get(f) is not None for f in used)
    ]


_Found = list[tuple[str, dict[str, FieldValue | None]]]


def _port(ports: list[tuple[str, int]], wanted: str | int | None) -> tuple[str, int] | None:
    """The port ``wanted`` names (by name or number), or the first one when none is wanted."""
    if wanted is None:
        return ports[0] if ports else None
    return next((p for p in ports if wanted in p), None)


def _port_fields(
    ports: list[tuple[str, int]], wanted: str | int | None
) -> dict[str, FieldValue | None] | None:
    chosen = _port(ports, wanted)
    if chosen is None:
        return None if wanted is not None else {"port": None, "portName": None}
    return {"port": chosen[1], "portName": chosen[0] or None}


def _ports(raw: object, number_key: str) -> list[tuple[str, int]]:
    out = []
    for p in raw if isinstance(raw, list) else []:
        if isinstance(p, Mapping) and isinstance(p.get(number_key), int):
            out.append((str(p.get("name") or ""), int(p[number_key])))
    return out


def _service(obj: Mapping[str, Any], name: str, ns: str, wanted: str | int | None) -> _Found:
    spec = obj.get("spec") or {}
    ports = _port_fields(_ports(spec.get("ports"), "port"), wanted)
    if ports is None:
        return []
    ip = spec.get("clusterIP")
    fields: dict[str, FieldValue | None] = {
        "name": name,
        "namespace": ns,
        "host": f"{name}.{ns}.svc",
        "ip": ip if isinstance(ip, str) and ip not in ("", "None") else None,
        **ports,
    }
    return [(f"{ns}/{name}", fields)]


def _ingress(obj: Mapping[str, Any], name: str, ns: str, wanted: str | int | None) -> _Found:
    spec = obj.get("spec") or {}
    tls_hosts = {
        h for t in spec.get("tls") or [] if isinstance(t, Mapping) for h in t.get("hosts") or []
    }
    balancers = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ip = next((b.get("ip") for b in balancers if isinstance(b, Mapping) and b.get("ip")), None)
    found: _Found = []
    seen = set()
    for rule in spec.get("rules") or []:
        host = rule.get("host") if isinstance(rule, Mapping) else None
        # A rule without a host (or a wildcard one) names no host that could be probed.
        if not isinstance(host, str) or not host or host.startswith("*") or host in seen:
            continue
        seen.add(host)
        tls = host in tls_hosts
        scheme, port = ("https", 443) if tls else ("http", 80)
        if wanted is not None and wanted not in (scheme, port):
            continue  # port: 443 (or https) keeps the TLS hosts, port: 80 (or http) the others
        fields: dict[str, FieldValue | None] = {
            "name": name,
            "namespace": ns,
            "host": host,
            "tls": tls,
            "scheme": scheme,
            "port": port,
            "ip": ip,
        }
        found.append((f"{ns}/{name}/{host}", fields))
    return found


def _endpoint_slice(obj: Mapping[str, Any], name: str, ns: str, wanted: str | int | None) -> _Found:
    ports = _port_fields(_ports(obj.get("ports"), "port"), wanted)
    if ports is None:
        return []
    service = str(((obj.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL) or name)
    found: _Found = []
    for endpoint in obj.get("endpoints") or []:
        if not isinstance(endpoint, Mapping) or not endpoint.get("addresses"):
            continue
        # Absent "ready" means ready, as the API documents.
        if (endpoint.get("conditions") or {}).get("ready") is False:
            continue
        ip = str(endpoint["addresses"][0])
        ref = endpoint.get("targetRef") or {}
        fields: dict[str, FieldValue | None] = {
            "name": str(ref.get("name") or ip),
            "namespace": ns,
            "service": service,
            "ip": ip,
            "node": endpoint.get("nodeName"),
            **ports,
        }
        found.append((f"{ns}/{service}/{ip}", fields))
    return found


SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def _pod(obj: Mapping[str, Any], name: str, ns: str, wanted: str | int | None) -> _Found:
    status = obj.get("status") or {}
    if (obj.get("metadata") or {}).get("deletionTimestamp") or status.get("phase") in (
        "Succeeded",
        "Failed",
    ):
        return []  # going or gone: nothing answers there any more
    spec = obj.get("spec") or {}
    declared = [
        p for c in spec.get("containers") or [] for p in _ports(c.get("ports"), "containerPort")
    ]
    ports = _port_fields(declared, wanted)
    if ports is None:
        return []
    fields: dict[str, FieldValue | None] = {
        "name": name,
        "namespace": ns,
        "ip": status.get("podIP") or None,
        "node": spec.get("nodeName") or None,
        **ports,
    }
    return [(f"{ns}/{name}", fields)]


def _node(obj: Mapping[str, Any], name: str, ns: str, wanted: str | int | None) -> _Found:
    addresses = {
        a.get("type"): a.get("address")
        for a in (obj.get("status") or {}).get("addresses") or []
        if isinstance(a, Mapping)
    }
    fields: dict[str, FieldValue | None] = {
        "name": name,
        "ip": addresses.get("InternalIP") or None,
        "host": addresses.get("Hostname") or name,
    }
    return [(name, fields)]


_EXTRACT = {
    "Service": _service,
    "Ingress": _ingress,
    "EndpointSlice": _endpoint_slice,
    "Pod": _pod,
    "Node": _node,
}
