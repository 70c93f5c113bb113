"""Probes assigned by the aggregator: validated, persisted, merged with local ones.

The aggregator pushes ``PUT /v1/assignment {revision, probes}`` through the tunnel on every
connect and change. Whoever controls the aggregator must not gain code execution in every
cluster by default, so pushed ``exec`` checks and container probes
(:mod:`exporter.exec_policy`) are refused
unless the agent runs with ``--accept-remote-exec``. Assigned probes run in the agent's own
namespace (whatever a manifest says): in Kubernetes mode the namespace whose Probes it runs,
where ``kubectl -n`` users look; ``default`` in file mode. Local Probes always win a clash of
namespace and name: an assignment never replaces or removes what the cluster's owners defined.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeprober.exporter.exec_policy import code_at
from kubeprober.exporter.persist import write_json_atomic
from kubeprober.probers.options import SpecError
from kubeprober.probers.probe import DEFAULT_NAMESPACE, Probe, parse_probe

log = logging.getLogger(__name__)
SOURCE = "assignment"


class AssignmentError(ValueError):
    """An assignment body that cannot be used at all (not one bad Probe: the whole body)."""


@dataclass
class Assignment:
    """The current assignment. Owned by the event loop (HTTP handler and agent)."""

    accept_remote_exec: bool = False
    state_dir: Path | None = None
    namespace: str = DEFAULT_NAMESPACE
    """The namespace every assigned probe runs in: the agent's own."""
    revision: int | None = None
    probes: list[Probe] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    """Probe name -> why it was not accepted (apply()'s refusals plus merge()'s clashes)."""
    invalid: dict[str, str] = field(default_factory=dict)
    """Probe name -> why apply() refused it; merge() starts again from these."""

    @property
    def path(self) -> Path | None:
        """Where the last accepted body is kept."""
        return self.state_dir / "assignment.json" if self.state_dir else None

    def load(self) -> None:
        """Re-apply the persisted body, so assigned probes run before the aggregator is back."""
        if self.path is None or not self.path.exists():
            return
        try:
            self.apply(json.loads(self.path.read_text(encoding="utf-8")), persist=False)
        except (OSError, ValueError) as exc:
            log.error("ignoring saved assignment %s: %s", self.path, exc)

    def apply(self, body: object, *, persist: bool = True) -> dict[str, Any]:
        """Validate and take ``body``; return what was accepted and refused, by name."""
        if not isinstance(body, Mapping):
            raise AssignmentError("expected a JSON object {revision, probes}")
        revision = body.get("revision")
        if not isinstance(revision, int) or isinstance(revision, bool):
            raise AssignmentError(f"revision: expected an integer, got {revision!r}")
        docs = body.get("probes")
        if not isinstance(docs, list):
            raise AssignmentError("probes: expected a list of Probe manifests")
        probes, refused = [], {}
        for i, doc in enumerate(docs):
            name = _name(doc, i)
            if not isinstance(doc, Mapping):
                refused[name] = f"expected a Probe manifest map, got {type(doc).__name__}"
                continue
            try:
                probe = parse_probe(self._placed(doc), source=SOURCE)
            except SpecError as exc:
                refused[name] = str(exc)
                continue
            reason = self._refusal(probe)
            if reason:
                refused[name] = reason
            else:
                probes.append(probe)
        for name, reason in refused.items():
            log.warning("assigned probe %s refused: %s", name, reason)
        self.revision, self.probes, self.invalid = revision, probes, refused
        self.refused = dict(refused)
        if persist and self.path is not None:
            write_json_atomic(self.path, {"revision": revision, "probes": docs})
        log.info(
            "assignment revision %d: %d probes accepted, %d refused",
            revision,
            len(probes),
            len(refused),
        )
        return self.report()

    def _placed(self, doc: Mapping[str, Any]) -> Mapping[str, Any]:
        """Return doc with its namespace set to the agent's (the body sent is kept as it is)."""
        meta = doc.get("metadata")
        if not isinstance(meta, Mapping):
            return doc  # parse_probe names the field
        return {**doc, "metadata": {**meta, "namespace": self.namespace}}

    def _refusal(self, probe: Probe) -> str:
        found = code_at(probe)
        if self.accept_remote_exec or found is None:
            return ""
        return (
            f"{found[0]}: {found[1]}; pushed exec and container probes need "
            "--accept-remote-exec on the agent"
        )

    def report(self) -> dict[str, Any]:
        """What the agent took of the current assignment."""
        return {
            "revision": self.revision,
            "accepted": sorted(p.name for p in self.probes),
            "refused": [{"name": n, "reason": r} for n, r in sorted(self.refused.items())],
        }


def merge(local: Iterable[Probe], assigned: Assignment) -> list[Probe]:
    """Local probes plus assigned ones whose names are free; clashes are recorded as refused."""
    out = {p.key: p for p in local}
    assigned.refused = dict(assigned.invalid)  # a clash ends when the local Probe goes
    for probe in assigned.probes:
        if probe.key in out:
            assigned.refused[probe.name] = f"a local Probe {probe.namespace}/{probe.name} exists"
            continue
        out[probe.key] = probe
    return list(out.values())


def _name(doc: object, index: int) -> str:
    if isinstance(doc, Mapping) and isinstance(doc.get("metadata"), Mapping):
        return str(doc["metadata"].get("name", f"probes[{index}]"))
    return f"probes[{index}]"
