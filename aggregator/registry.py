"""The fleet's definition: clusters, their tokens and the Probes assigned to them.

Read from the same manifests in both modes — ``Cluster``, ``Secret`` and ``Probe`` objects,
from a multi-document YAML file (``--clusters FILE``, the embedded default) or from the
Kubernetes API — so a file works unchanged with ``kubectl apply``. A Probe is assigned to a
cluster by the label ``probe/<probe-name>=true`` on the Cluster, as in the original.
Tokens are handed to :class:`aggregator.tokens.TokenStore`, which keeps only hashes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubeprober.aggregator.tokens import InvalidToken, TokenStore, parse_hash
from kubeprober.probers.options import SpecError
from kubeprober.probers.probe import is_probe, iter_documents, parse_probe, yaml_problem

log = logging.getLogger(__name__)
ASSIGN_LABEL_PREFIX = "probe/"
# The cluster name is the middle of its agents' tokens and the Host of requests to them.
_CLUSTER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class ClusterSpec:
    """One managed cluster as defined centrally."""

    name: str
    display_name: str = ""
    maintenance: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    token_secret: str = ""
    """Name of the Secret holding ``tokenHash`` or ``token`` (and their ``previous…``)."""

    def assigned(self, probe_name: str) -> bool:
        """Whether the label ``probe/<probe_name>=true`` assigns that Probe here."""
        return self.labels.get(ASSIGN_LABEL_PREFIX + probe_name) == "true"


@dataclass
class Fleet:
    """A consistent snapshot of clusters, tokens and central Probes."""

    clusters: dict[str, ClusterSpec] = field(default_factory=dict)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Central Probe manifests by name, already validated."""
    errors: list[str] = field(default_factory=list)
    tokens: TokenStore = field(default_factory=TokenStore)
    """Hashes of each cluster's current and previous token; no secret is kept."""
    _bodies: dict[tuple[str, ...], dict[str, Any]] = field(
        default_factory=dict, repr=False, compare=False
    )
    """Assignment bodies by the names of the Probes they carry: every connected cluster's
    is looked at every reload, and most clusters share a few sets of Probes."""

    def assignment(self, cluster: str) -> dict[str, Any]:
        """The ``PUT /v1/assignment`` body for ``cluster``: its Probes and a content revision.

        Not to be mutated; made once per set of Probes of this snapshot."""
        spec = self.clusters.get(cluster)
        names = tuple(n for n in sorted(self.probes) if spec and spec.assigned(n))
        body = self._bodies.get(names)
        if body is None:
            probes = [self.probes[n] for n in names]
            digest = hashlib.sha256(json.dumps(probes, sort_keys=True).encode()).hexdigest()
            # A content hash, not a counter: it survives aggregator restarts and replicas agree.
            body = self._bodies[names] = {"revision": int(digest[:12], 16), "probes": probes}
        return body


def _decode_secret(doc: Mapping[str, Any]) -> dict[str, str]:
    out = {str(k): str(v) for k, v in (doc.get("stringData") or {}).items()}
    for key, value in (doc.get("data") or {}).items():
        out.setdefault(str(key), base64.b64decode(str(value)).decode())
    return out


def parse_fleet(docs: Iterable[Any], *, source: str, secret_hint: str = "") -> Fleet:
    """Build a Fleet from manifests; bad objects become errors and are left out.

    ``secret_hint`` ends the error of a Cluster whose token Secret is missing.
    """
    fleet = Fleet()
    secrets: dict[str, dict[str, str]] = {}  # plain tokens: only to build the hashes
    for doc in docs:
        if not isinstance(doc, Mapping):
            fleet.errors.append(f"{source}: expected a manifest map, got {type(doc).__name__}")
            continue
        meta = doc.get("metadata") or {}
        name = str(meta.get("name", ""))
        kind = doc.get("kind")
        try:
            if kind == "Cluster":
                fleet.clusters[name] = _parse_cluster(doc, name)
            elif kind == "Secret":
                secrets[name] = _decode_secret(doc)
            elif is_probe(doc):
                parse_probe(doc, source=source)  # validate now: a bad Probe fails on load
                fleet.probes[name] = _manifest(doc)
        except (SpecError, ValueError) as exc:
            fleet.errors.append(f"{source}: {kind} {name}: {exc}")
    for cluster in fleet.clusters.values():
        data = secrets.get(cluster.token_secret)
        if data is None or not {"token", "tokenHash"} & data.keys():
            fleet.errors.append(
                f"cluster {cluster.name}: Secret {cluster.token_secret!r} "
                f"with key tokenHash or token not found{secret_hint}; its agent cannot connect"
            )
            continue
        try:
            _set_tokens(fleet.tokens, cluster.name, data)
        except InvalidToken as exc:
            fleet.errors.append(f"cluster {cluster.name}: Secret {cluster.token_secret}: {exc}")
    return fleet


def _set_tokens(tokens: TokenStore, cluster: str, data: Mapping[str, str]) -> None:
    """Store a Secret's token hashes: ``tokenHash`` as given, a plain ``token`` hashed now."""
    if "tokenHash" in data:
        previous = data.get("previousTokenHash")
        tokens.set_hashes(
            cluster, parse_hash(data["tokenHash"]), parse_hash(previous) if previous else None
        )
    else:
        tokens.set(cluster, data["token"], previous=data.get("previousToken"))


def _parse_cluster(doc: Mapping[str, Any], name: str) -> ClusterSpec:
    if not _CLUSTER_NAME.fullmatch(name):
        raise SpecError("metadata.name", f"expected a DNS label, got {name!r}")
    spec = doc.get("spec") or {}
    ref = spec.get("tokenSecretRef") or {}
    if not isinstance(ref, Mapping) or not ref.get("name"):
        raise SpecError("spec.tokenSecretRef.name", "required")
    maintenance = spec.get("maintenance", False)
    if not isinstance(maintenance, bool):
        raise SpecError("spec.maintenance", f"expected true or false, got {maintenance!r}")
    labels = (doc.get("metadata") or {}).get("labels") or {}
    return ClusterSpec(
        name=name,
        display_name=str(spec.get("displayName", "")),
        maintenance=maintenance,
        labels={str(k): str(v) for k, v in labels.items()},
        token_secret=str(ref["name"]),
    )


def _manifest(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Keep what an agent needs of a central Probe: apiVersion, kind, name, labels, spec."""
    meta = doc.get("metadata") or {}
    out_meta: dict[str, Any] = {"name": meta["name"]}
    if meta.get("labels"):
        out_meta["labels"] = dict(meta["labels"])
    return {
        "apiVersion": doc["apiVersion"],
        "kind": "Probe",
        "metadata": out_meta,
        "spec": dict(doc["spec"]),
    }


def load_file(path: Path) -> Fleet:
    """Read the clusters file; an unreadable or invalid file raises with the reason."""
    text = path.read_text(encoding="utf-8")
    try:
        docs = list(iter_documents(text))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: {yaml_problem(exc)}") from None
    return parse_fleet(docs, source=str(path))
