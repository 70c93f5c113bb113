"""The fleet from the Kubernetes API: Cluster, Secret and Probe objects of one namespace.

Exists so Kubernetes mode builds its Fleet with the very ``parse_fleet`` the clusters file
uses: the two modes share every rule. It polls (three lists per reload, about 1.5 requests
a second at the default 2 s) rather than watching: simple, self-healing after any outage,
and cheap at the fleet sizes one namespace holds. Only Secrets a Cluster references are
handed on, so unrelated Secrets of the namespace are never kept. It must not decide what
an API failure means for the service: :meth:`FleetSource.load` raises, the caller keeps
its last good fleet.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from kubeprober.aggregator.kube.api import CLUSTERS, JSON, PROBES, SECRETS, KubeApi, Permission
from kubeprober.aggregator.registry import Fleet, parse_fleet

SOURCE = "kubernetes"
PERMISSIONS: tuple[Permission, ...] = (
    CLUSTERS.permission("list"),
    SECRETS.permission("list"),
    PROBES.permission("list"),
)


class FleetSource:
    """Lists the fleet's objects and builds a Fleet when their content changed."""

    def __init__(self, api: KubeApi) -> None:
        self._api = api
        self._fingerprint: bytes | None = None
        self.statuses: dict[str, JSON] = {}
        """Each Cluster's ``.status`` as last listed, to seed the status writer."""

    async def load(self) -> Fleet | None:
        """List the objects; return a new Fleet, or None when nothing that matters changed."""
        clusters, secrets, probes = await asyncio.gather(
            self._api.list(CLUSTERS), self._api.list(SECRETS), self._api.list(PROBES)
        )
        self.statuses = {_name(c): c.get("status") or {} for c in clusters}
        wanted = {
            str(((c.get("spec") or {}).get("tokenSecretRef") or {}).get("name", ""))
            for c in clusters
        }
        docs = [*clusters, *(s for s in secrets if _name(s) in wanted), *probes]
        # Status writes (ours) and resourceVersions move on every pull; the fleet does not.
        fingerprint = hashlib.sha256(
            json.dumps([_meaningful(d) for d in docs], sort_keys=True).encode()
        ).digest()
        if fingerprint == self._fingerprint:
            return None
        fleet = parse_fleet(docs, source=f"{SOURCE} namespace {self._api.namespace}")
        self._fingerprint = fingerprint
        return fleet


def _name(doc: JSON) -> str:
    return str((doc.get("metadata") or {}).get("name", ""))


def _meaningful(doc: JSON) -> tuple[Any, ...]:
    meta = doc.get("metadata") or {}
    return (
        doc.get("apiVersion"),
        doc.get("kind"),
        meta.get("name"),
        meta.get("labels"),
        doc.get("spec"),
        doc.get("data"),
        doc.get("stringData"),
    )
