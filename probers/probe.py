"""The Probe: what to check, how often, and in which layer — parsed from manifests.

``--probes FILE_OR_DIR`` takes the very manifests ``kubectl apply`` takes, so one file works
in both modes. Everything is validated here, at load time: an invalid Probe yields an error
that names the file, the Probe, the field path and the bad value, and never affects the
others in the same file.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from croniter import croniter

from kubeprober.probers import registry
from kubeprober.probers.durations import parse_duration
from kubeprober.probers.options import SpecError, parse_options, shown

API_VERSION = "kubeprober.io/v1"
KIND = "Probe"
Layer = Literal["application", "middleware", "kubernetes", "infrastructure"]
LAYERS: tuple[Layer, ...] = ("application", "middleware", "kubernetes", "infrastructure")
DEFAULT_TIMEOUT = 10.0
"""Seconds a check may take when neither check nor probe says: long enough for a slow
HTTPS login, short enough that a hung target shows within a typical 30s interval."""
DEFAULT_NAMESPACE = "default"

# metadata.name: a DNS-1123 subdomain, as the API server requires.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# metadata.namespace: a DNS-1123 label.
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Check names become metric label values and ProbeStatus entries: keep them short and plain.
CHECK_NAME_PATTERN = r"^[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,61}[a-zA-Z0-9])?$"
_CHECK_NAME = re.compile(CHECK_NAME_PATTERN)
SPEC_KEYS = {
    "layer",
    "schedule",
    "timeZone",
    "interval",
    "jitter",
    "timeout",
    "suspend",
    "checks",
    "template",
}
CHECK_KEYS = {"name", "prober", "with", "timeout"}


@dataclass(frozen=True)
class Check:
    """One named check of a Probe: a prober and its parsed options."""

    name: str
    prober: str
    spec: Any
    """The prober's ``Spec`` instance, parsed from ``with:``."""
    options: Mapping[str, Any]
    """The ``with:`` map as written, for display and for re-serialising."""
    timeout: float
    """Seconds until the runner's hard deadline; the check's own or the probe's."""


@dataclass(frozen=True)
class Probe:
    """A validated Probe. Identity is ``(namespace, name)``; equality covers the whole spec."""

    namespace: str
    name: str
    layer: Layer
    checks: tuple[Check, ...]
    schedule: str | None = None
    time_zone: str | None = None
    interval: float | None = None
    """Seconds between runs; with neither schedule nor interval the probe runs once."""
    jitter: float = 0.0
    """Up to this many seconds of random delay per run, so a fleet does not probe in step."""
    timeout: float = DEFAULT_TIMEOUT
    suspend: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    source: str = ""
    """Where it came from: a file path, or ``kubernetes`` / ``assignment``."""

    @property
    def key(self) -> tuple[str, str]:
        """The ``(namespace, name)`` that identifies this probe."""
        return (self.namespace, self.name)


@dataclass(frozen=True)
class ProbeError:
    """A manifest that did not yield a Probe, with where and why."""

    source: str
    name: str
    error: SpecError
    key: tuple[str, str] | None = None
    """The Probe's ``(namespace, name)`` when the manifest got that far."""

    def __str__(self) -> str:
        return f"{self.source}: {self.name}: {self.error}"


@dataclass
class LoadResult:
    """Probes that validated, and errors for those that did not."""

    probes: list[Probe] = field(default_factory=list)
    errors: list[ProbeError] = field(default_factory=list)


def parse_probe(doc: Mapping[str, Any], *, source: str = "") -> Probe:
    """Validate one Probe manifest; raise SpecError naming the field path and the bad value."""
    if doc.get("apiVersion") != API_VERSION:
        raise SpecError("apiVersion", f"expected {API_VERSION}, got {shown(doc.get('apiVersion'))}")
    if doc.get("kind") != KIND:
        raise SpecError("kind", f"expected {KIND}, got {shown(doc.get('kind'))}")
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping):
        raise SpecError("metadata", f"expected a map, got {shown(meta)}")
    name = meta.get("name")
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 253:
        raise SpecError("metadata.name", f"expected a DNS-1123 name, got {shown(name)}")
    namespace = meta.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise SpecError("metadata.namespace", f"expected a DNS-1123 name, got {shown(namespace)}")
    labels = meta.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise SpecError("metadata.labels", f"expected a map, got {shown(labels)}")
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise SpecError("spec", f"expected a map, got {shown(spec)}")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise SpecError(
            f"spec.{unknown[0]}", f"unknown field (known: {', '.join(sorted(SPEC_KEYS))})"
        )

    layer = spec.get("layer")
    if layer not in LAYERS:
        raise SpecError("spec.layer", f"expected one of {', '.join(LAYERS)}, got {shown(layer)}")
    schedule, time_zone, interval = _parse_timing(spec)
    timeout = _duration(spec, "timeout", DEFAULT_TIMEOUT, positive=True)
    jitter = _duration(spec, "jitter", 0.0)
    if interval is not None and jitter >= interval:
        raise SpecError(
            "spec.jitter", f"must be shorter than spec.interval, got {shown(spec['jitter'])}"
        )
    suspend = spec.get("suspend", False)
    if not isinstance(suspend, bool):
        raise SpecError("spec.suspend", f"expected true or false, got {shown(suspend)}")
    if "template" in spec:
        # The CRD keeps the field for what is to come; ignoring it would pass a stub as done.
        raise SpecError(
            "spec.template", "container probes are not supported yet; use checks without it"
        )
    return Probe(
        namespace=namespace,
        name=name,
        layer=layer,
        checks=_parse_checks(spec.get("checks"), default_timeout=timeout),
        schedule=schedule,
        time_zone=time_zone,
        interval=interval,
        jitter=jitter,
        timeout=timeout,
        suspend=suspend,
        labels={str(k): str(v) for k, v in labels.items()},
        source=source,
    )


def _parse_timing(spec: Mapping[str, Any]) -> tuple[str | None, str | None, float | None]:
    schedule = spec.get("schedule")
    time_zone = spec.get("timeZone")
    if schedule is not None and "interval" in spec:
        raise SpecError("spec.interval", "set spec.schedule or spec.interval, not both")
    if schedule is not None and (not isinstance(schedule, str) or not croniter.is_valid(schedule)):
        raise SpecError(
            "spec.schedule",
            f'expected a cron expression like "*/5 * * * *", got {shown(schedule)}',
        )
    if time_zone is not None:
        if schedule is None:
            raise SpecError("spec.timeZone", "only applies to spec.schedule")
        try:
            zoneinfo.ZoneInfo(str(time_zone))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a directory
            raise SpecError(
                "spec.timeZone",
                f"expected an IANA time zone like Europe/Paris, got {shown(time_zone)}",
            ) from None
    interval = _duration(spec, "interval", None, positive=True) if "interval" in spec else None
    return schedule, time_zone, interval


def _duration(
    spec: Mapping[str, Any], key: str, default: Any, *, positive: bool = False, path: str = "spec"
) -> Any:
    if key not in spec:
        return default
    value = spec[key]
    try:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError
        seconds = parse_duration(value) if isinstance(value, str) else float(value)
    except ValueError:
        seconds = -1.0
    if seconds < 0 or (positive and seconds == 0):
        raise SpecError(
            f"{path}.{key}", f"expected a duration like 30s or 1m30s, got {shown(value)}"
        )
    return seconds


def _parse_checks(raw: object, *, default_timeout: float) -> tuple[Check, ...]:
    if not isinstance(raw, list) or not raw:
        raise SpecError("spec.checks", f"expected a non-empty list of checks, got {shown(raw)}")
    checks: list[Check] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        path = f"spec.checks[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError(path, f"expected a map, got {shown(item)}")
        unknown = sorted(set(item) - CHECK_KEYS)
        if unknown:
            raise SpecError(
                f"{path}.{unknown[0]}", f"unknown field (known: {', '.join(sorted(CHECK_KEYS))})"
            )
        name = item.get("name")
        if not isinstance(name, str) or not _CHECK_NAME.match(name):
            raise SpecError(
                f"{path}.name",
                f"expected a name of letters, digits, '-', '_' or '.', got {shown(name)}",
            )
        if name in seen:
            raise SpecError(f"{path}.name", f"duplicate check name {shown(name)}")
        seen.add(name)
        prober_name = item.get("prober")
        prober = registry.get(prober_name) if isinstance(prober_name, str) else None
        if prober is None:
            known = ", ".join(sorted(registry.probers()))
            raise SpecError(
                f"{path}.prober", f"unknown prober {shown(prober_name)} (known: {known})"
            )
        options = item.get("with") or {}
        spec: Any = parse_options(prober.spec, options, f"{path}.with")
        timeout = _duration(item, "timeout", default_timeout, positive=True, path=path)
        checks.append(Check(name, prober.name, spec, dict(options), timeout))
    return tuple(checks)


def iter_documents(text: str) -> Iterator[Any]:
    """Yield manifests from multi-document YAML, unpacking ``kind: List`` like kubectl."""
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, Mapping) and doc.get("kind") == "List":
            yield from doc.get("items") or []
        elif doc is not None:
            yield doc


def is_probe(doc: Mapping[str, Any]) -> bool:
    """Whether a manifest is ours to parse: kind Probe in our API group (any version)."""
    if doc.get("kind") != KIND:
        return False
    # prometheus-operator has a kind Probe too; files may hold both. A Probe with no
    # apiVersion at all is taken as ours, to be rejected with a clear error.
    api_version = doc.get("apiVersion")
    return api_version is None or str(api_version).partition("/")[0] == "kubeprober.io"


def load_text(text: str, *, source: str) -> LoadResult:
    """Parse every Probe in one YAML text; other kinds are skipped: ``--probes`` runs Probes."""
    result = LoadResult()
    try:
        docs = list(iter_documents(text))
    except yaml.YAMLError as exc:
        result.errors.append(ProbeError(source, "-", SpecError("", f"invalid YAML: {exc}")))
        return result
    seen: set[tuple[str, str]] = set()
    for i, doc in enumerate(docs):
        if not isinstance(doc, Mapping):
            result.errors.append(
                ProbeError(
                    source,
                    f"document {i + 1}",
                    SpecError("", f"expected a manifest map, got {shown(doc)}"),
                )
            )
            continue
        if not is_probe(doc):
            continue
        meta = doc.get("metadata")
        label, key = f"document {i + 1}", None
        if isinstance(meta, Mapping) and isinstance(meta.get("name"), str):
            label = meta["name"]
            key = (str(meta.get("namespace", DEFAULT_NAMESPACE)), label)
        try:
            probe = parse_probe(doc, source=source)
        except SpecError as exc:
            result.errors.append(ProbeError(source, label, exc, key))
            continue
        if probe.key in seen:
            result.errors.append(
                ProbeError(
                    source,
                    label,
                    SpecError("metadata.name", f"duplicate Probe {probe.namespace}/{probe.name}"),
                )
            )
            continue
        seen.add(probe.key)
        result.probes.append(probe)
    return result


def probe_files(path: Path) -> list[Path]:
    """The manifest files under ``path``: the file itself, or a directory's *.yaml/*.yml/*.json."""
    if not path.is_dir():
        return [path]
    # Skip hidden entries: a mounted ConfigMap keeps each file twice, once under "..data".
    return sorted(
        p
        for p in path.rglob("*")
        if p.suffix in (".yaml", ".yml", ".json")
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def load_path(path: Path) -> LoadResult:
    """Load every Probe from a file or directory; unreadable files become errors too."""
    result = LoadResult()
    seen: set[tuple[str, str]] = set()
    for file in probe_files(path):
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            result.errors.append(
                ProbeError(str(file), "-", SpecError("", f"cannot read: {exc.strerror}"))
            )
            continue
        part = load_text(text, source=str(file))
        for probe in part.probes:
            if probe.key in seen:
                result.errors.append(
                    ProbeError(
                        str(file),
                        probe.name,
                        SpecError(
                            "metadata.name", f"duplicate Probe {probe.namespace}/{probe.name}"
                        ),
                    )
                )
                continue
            seen.add(probe.key)
            result.probes.append(probe)
        result.errors.extend(part.errors)
    return result


def by_key(probes: Iterable[Probe]) -> dict[tuple[str, str], Probe]:
    """Index probes by ``(namespace, name)``."""
    return {p.key: p for p in probes}
