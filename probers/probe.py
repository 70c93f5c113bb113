"""The Probe: what to check, how often, and in which layer — parsed from manifests.

``--probes FILE_OR_DIR`` takes the very manifests ``kubectl apply`` takes, so one file works
in both modes. Everything is validated here, at load time: an invalid Probe yields an error
that names the file, the Probe, the field path and the bad value, and never affects the
others in the same file.
"""

from __future__ import annotations

import json
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
from kubeprober.probers.options import SpecError, SpecErrors, parse_options, shown
from kubeprober.probers.targets import Target, Targets, parse_targets, sample, substitute

API_VERSION = "kubeprober.io/v1"
KIND = "Probe"
Layer = Literal["application", "middleware", "kubernetes", "infrastructure"]
LAYERS: tuple[Layer, ...] = ("application", "middleware", "kubernetes", "infrastructure")
DEFAULT_TIMEOUT = 10.0
"""Seconds a check may take when neither check nor probe says: long enough for a slow
HTTPS login, short enough that a hung target shows within a typical 30s interval."""
DEFAULT_NAMESPACE = "default"
MAX_FILE_BYTES = 1024 * 1024
"""Bytes a probe file may hold: some 5,000 Probes, about 1.5 s of CPU to load. A larger file
is refused as a whole, so a runaway generator cannot stall the agent for minutes."""

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
CHECK_KEYS = {"name", "prober", "with", "timeout", "targets"}
CONTAINER = "container"
"""The ``prober`` of a container probe's checks: its container runs them and reports each."""


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
    targets: Targets | None = None
    """Run once per target (``spec`` is then None: each run gets its own, see :func:`bind`)."""
    problem: str = ""
    """Why a target's run cannot parse its options: it ends UNKNOWN with this, unrun."""


def bind(check: Check, target: Target) -> Check:
    """Return the run of ``check`` for one target: named ``<check>/<target>``, its
    ``${target.FIELD}`` references filled in."""
    name = f"{check.name}/{target.name}"
    missing = sorted(
        f for f in (check.targets.used if check.targets else ()) if target.get(f) is None
    )
    if missing:
        return Check(
            name,
            check.prober,
            None,
            check.options,
            check.timeout,
            problem=f"target has no {missing[0]}",
        )
    options = substitute(check.options, dict(target.fields))
    prober = registry.get(check.prober)
    if prober is None:
        return Check(name, check.prober, None, options, check.timeout)
    try:
        spec: Any = parse_options(prober.spec, options, "with")
    except SpecError as exc:
        return Check(name, check.prober, None, options, check.timeout, problem=str(exc))
    return Check(name, check.prober, spec, options, check.timeout)


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
    template: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    """A container probe's PodSpec: each run is a Job of it (see ``template_json``)."""
    template_json: str = ""
    """The template as canonical JSON: what equality compares, so an edited template restarts
    the probe while the dict itself stays unhashable-safe."""
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

    @property
    def whole_file(self) -> bool:
        """Whether the file as a whole failed (unreadable, too large, not UTF-8, not YAML)."""
        return not self.name

    def __str__(self) -> str:
        named = f"{self.name}: " if self.name else ""
        return f"{self.source}: {named}{self.error}"


@dataclass
class LoadResult:
    """Probes that validated, errors for those that did not, warnings for what was skipped."""

    probes: list[Probe] = field(default_factory=list)
    errors: list[ProbeError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Documents of other kinds, named: ``--probes`` runs Probes only."""


def parse_probe(doc: Mapping[str, Any], *, source: str = "") -> Probe:
    """Validate one Probe manifest; raise SpecError naming every bad field path and value."""
    errors = SpecErrors()
    if doc.get("apiVersion") != API_VERSION:
        errors.add("apiVersion", f"expected {API_VERSION}, got {shown(doc.get('apiVersion'))}")
    if doc.get("kind") != KIND:
        errors.add("kind", f"expected {KIND}, got {shown(doc.get('kind'))}")
    meta: dict[str, Any] = errors.attempt(_parse_metadata, doc.get("metadata"), default={})
    namespace = meta.get("namespace") or DEFAULT_NAMESPACE
    spec: dict[str, Any] = errors.attempt(_parse_spec, doc.get("spec"), namespace, default={})
    errors.check()
    return Probe(**meta, **spec, source=source)


def _parse_metadata(meta: object) -> dict[str, Any]:
    if not isinstance(meta, Mapping):
        raise SpecError("metadata", f"expected a map, got {shown(meta)}")
    errors = SpecErrors()
    name = meta.get("name")
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 253:
        errors.add("metadata.name", f"expected a DNS-1123 name, got {shown(name)}")
    namespace = meta.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        errors.add("metadata.namespace", f"expected a DNS-1123 name, got {shown(namespace)}")
    labels = meta.get("labels") or {}
    if not isinstance(labels, Mapping):
        errors.add("metadata.labels", f"expected a map, got {shown(labels)}")
    errors.check()
    return {
        "name": name,
        "namespace": namespace,
        "labels": {str(k): str(v) for k, v in labels.items()},
    }


def _parse_spec(spec: object, namespace: str) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise SpecError("spec", f"expected a map, got {shown(spec)}")
    errors = SpecErrors()
    for key in sorted(set(spec) - SPEC_KEYS):
        errors.add(f"spec.{key}", f"unknown field (known: {', '.join(sorted(SPEC_KEYS))})")
    layer = spec.get("layer")
    if layer not in LAYERS:
        errors.add("spec.layer", f"expected one of {', '.join(LAYERS)}, got {shown(layer)}")
    unset: tuple[str | None, str | None, float | None] = (None, None, None)
    schedule, time_zone, interval = errors.attempt(_parse_timing, spec, default=unset)
    timeout = errors.attempt(
        _duration, spec, "timeout", DEFAULT_TIMEOUT, positive=True, default=DEFAULT_TIMEOUT
    )
    jitter = errors.attempt(_duration, spec, "jitter", 0.0, default=0.0)
    if interval is not None and jitter >= interval:
        errors.add(
            "spec.jitter", f"must be shorter than spec.interval, got {shown(spec['jitter'])}"
        )
    suspend = spec.get("suspend", False)
    if not isinstance(suspend, bool):
        errors.add("spec.suspend", f"expected true or false, got {shown(suspend)}")
    template = spec.get("template")
    if template is not None:
        errors.attempt(_check_template, template, default=None)
    checks: tuple[Check, ...] = errors.attempt(
        _parse_checks,
        spec.get("checks"),
        timeout,
        container=template is not None,
        namespace=namespace,
        default=(),
    )
    errors.check()
    return {
        "template": template,
        "template_json": json.dumps(template, sort_keys=True) if template is not None else "",
        "layer": layer,
        "checks": checks,
        "schedule": schedule,
        "time_zone": time_zone,
        "interval": interval,
        "jitter": jitter,
        "timeout": timeout,
        "suspend": suspend,
    }


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


def _check_template(template: object) -> None:
    """Check the little of a PodSpec the agent relies on; the API server checks the rest."""
    if not isinstance(template, Mapping):
        raise SpecError("spec.template", f"expected a PodSpec map, got {shown(template)}")
    errors = SpecErrors()
    containers = template.get("containers")
    if not isinstance(containers, list) or not containers:
        errors.add(
            "spec.template.containers",
            f"expected a non-empty list of containers, got {shown(containers)}",
        )
    else:
        for i, c in enumerate(containers):
            for key in ("name", "image"):
                value = c.get(key) if isinstance(c, Mapping) else None
                if not isinstance(value, str) or not value:
                    errors.add(
                        f"spec.template.containers[{i}].{key}",
                        f"expected a string, got {shown(value)}",
                    )
    policy = template.get("restartPolicy", "Never")
    if policy != "Never":
        errors.add(
            "spec.template.restartPolicy",
            f"expected Never (each run is one pod; a run that fails ends UNKNOWN), got "
            f"{shown(policy)}",
        )
    errors.check()


def _parse_checks(
    raw: object, default_timeout: float, *, container: bool, namespace: str
) -> tuple[Check, ...]:
    if not isinstance(raw, list) or not raw:
        raise SpecError("spec.checks", f"expected a non-empty list of checks, got {shown(raw)}")
    errors = SpecErrors()
    checks: list[Check] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        path = f"spec.checks[{i}]"
        if container:
            check = errors.attempt(
                _parse_container_check, item, path, default_timeout, default=None
            )
        else:
            check = errors.attempt(
                _parse_check, item, path, default_timeout, namespace, default=None
            )
        name = item.get("name") if isinstance(item, Mapping) else None
        if isinstance(name, str) and name in seen:
            errors.add(f"spec.checks[{i}].name", f"duplicate check name {shown(name)}")
        elif isinstance(name, str):
            seen.add(name)
        if check is not None:
            checks.append(check)
    errors.check()
    return tuple(checks)


def _parse_check(item: object, path: str, default_timeout: float, namespace: str) -> Check:
    if not isinstance(item, Mapping):
        raise SpecError(path, f"expected a map, got {shown(item)}")
    errors = SpecErrors()
    for key in sorted(set(item) - CHECK_KEYS):
        errors.add(f"{path}.{key}", f"unknown field (known: {', '.join(sorted(CHECK_KEYS))})")
    name = item.get("name")
    if not isinstance(name, str) or not _CHECK_NAME.match(name):
        errors.add(
            f"{path}.name",
            f"expected a name of letters, digits, '-', '_' or '.', got {shown(name)}",
        )
    prober_name = item.get("prober")
    prober = registry.get(prober_name) if isinstance(prober_name, str) else None
    options = item.get("with") or {}
    spec: Any = None
    if prober is None:
        known = ", ".join(sorted(registry.probers()))
        errors.add(f"{path}.prober", f"unknown prober {shown(prober_name)} (known: {known})")
    targets = errors.attempt(
        parse_targets,
        item.get("targets"),
        path=path,
        options=options,
        probe_namespace=namespace,
        default=None,
    )
    if prober is not None and "targets" not in item:
        spec = errors.attempt(parse_options, prober.spec, options, f"{path}.with", default=None)
    elif prober is not None and targets is not None:
        for target in sample(targets.kind, targets.used, targets.static):
            filled = substitute(options, dict(target.fields))
            try:
                parse_options(prober.spec, filled, f"{path}.with")
            except SpecError as exc:
                whose = f"target {shown(target.name)}" if targets.static else targets.kind
                for leaf in exc.errors:
                    errors.add(leaf.path, f"{leaf.message} (with the fields of {whose})")
                break
    timeout = errors.attempt(
        _duration, item, "timeout", default_timeout, positive=True, path=path, default=None
    )
    errors.check()
    assert prober is not None and isinstance(name, str)  # else errors.check() raised
    return Check(name, prober.name, spec, dict(options), timeout, targets)


def _parse_container_check(item: object, path: str, timeout: float) -> Check:
    if not isinstance(item, Mapping):
        raise SpecError(path, f"expected a map, got {shown(item)}")
    errors = SpecErrors()
    for key in sorted(set(item) - {"name"}):
        errors.add(
            f"{path}.{key}",
            "a container probe's checks only name what its container reports; remove it",
        )
    name = item.get("name")
    if not isinstance(name, str) or not _CHECK_NAME.match(name):
        errors.add(
            f"{path}.name",
            f"expected a name of letters, digits, '-', '_' or '.', got {shown(name)}",
        )
    errors.check()
    assert isinstance(name, str)
    return Check(name, CONTAINER, None, {}, timeout)


def iter_documents(text: str) -> Iterator[Any]:
    """Yield manifests from multi-document YAML, unpacking ``kind: List`` like kubectl."""
    # libyaml's loader: ten times faster than PyYAML's own, and it caps nesting depth.
    for doc in yaml.load_all(text, Loader=yaml.CSafeLoader):
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
    """Parse every Probe in one YAML text; documents of other kinds are skipped with a warning."""
    result = LoadResult()
    try:
        docs = list(iter_documents(text))
    except yaml.YAMLError as exc:
        result.errors.append(ProbeError(source, "", SpecError("", yaml_problem(exc))))
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
            result.warnings.append(f"{source}: document {i + 1}: skipped {_kind_of(doc)}")
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


def _kind_of(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    named = f" {shown(name)}" if name is not None else ""
    return (
        f"{shown(doc.get('apiVersion'))} {shown(doc.get('kind'))}{named}: not a kubeprober.io Probe"
    )


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error (PyYAML's own text spans several, with a code excerpt)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        context = ""
        if exc.context and exc.context_mark is not None and exc.context_mark.line != mark.line:
            context = f" ({exc.context} from line {exc.context_mark.line + 1})"
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        return f"invalid YAML at {where}: {exc.problem}{context}"
    return "invalid YAML: " + " ".join(str(exc).split())


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


def load_file(file: Path, *, max_bytes: int = MAX_FILE_BYTES) -> LoadResult:
    """Load one file's Probes. A file that cannot be read, is larger than ``max_bytes``, is not
    UTF-8 or not YAML yields no Probe and one error for the whole file (its ``name`` is "")."""
    try:
        with file.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        return _file_failed(file, f"cannot read: {exc.strerror or exc}")
    if len(data) > max_bytes:
        return _file_failed(
            file, f"larger than the limit of {max_bytes} bytes (--max-probe-file-size)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return _file_failed(file, f"not UTF-8: byte 0x{data[exc.start]:02x} on line {line}")
    return load_text(text, source=str(file))


def _file_failed(file: Path, message: str) -> LoadResult:
    return LoadResult(errors=[ProbeError(str(file), "", SpecError("", message))])


def combine(parts: Iterable[LoadResult]) -> LoadResult:
    """Merge the results of several files; of two Probes with one name, the first one wins."""
    result = LoadResult()
    seen: set[tuple[str, str]] = set()
    for part in parts:
        for probe in part.probes:
            if probe.key in seen:
                duplicate = f"duplicate Probe {probe.namespace}/{probe.name}"
                result.errors.append(
                    ProbeError(probe.source, probe.name, SpecError("metadata.name", duplicate))
                )
                continue
            seen.add(probe.key)
            result.probes.append(probe)
        result.errors.extend(part.errors)
        result.warnings.extend(part.warnings)
    return result


def load_path(path: Path, *, max_bytes: int = MAX_FILE_BYTES) -> LoadResult:
    """Load every Probe from a file or directory; unreadable files become errors too."""
    return combine(load_file(file, max_bytes=max_bytes) for file in probe_files(path))


def by_key(probes: Iterable[Probe]) -> dict[tuple[str, str], Probe]:
    """Index probes by ``(namespace, name)``."""
    return {p.key: p for p in probes}
