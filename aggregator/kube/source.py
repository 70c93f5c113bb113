"""The fleet from the Kubernetes API: Cluster, token Secret and Probe objects of one namespace.

Exists so Kubernetes mode builds its Fleet with the very ``parse_fleet`` the clusters file
uses: the two modes share every rule. The objects are followed by list-then-watch (the
shared :mod:`kubeprober.kube.watching`), so a change reaches agents within a second and an
idle fleet costs the API server three open watches, not three lists every few seconds.
Only Secrets labelled ``kubeprober.io/token-for`` are read, so the aggregator never holds
the namespace's other Secrets (docs/security.md says what RBAC can and cannot narrow); of
those, only the ones a Cluster references are handed on. It must not decide what an API
failure means for the service: the watches retry on their own, and the last fleet built
stays in force meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kubeprober.aggregator.registry import Fleet, parse_fleet
from kubeprober.kube.api import JSON, KubeApi
from kubeprober.kube.resources import CLUSTERS, PROBES, SECRETS, Permission
from kubeprober.kube.watching import Mirror, Selection
from kubeprober.pacing import BackoffSettings

SOURCE = "kubernetes"
TOKEN_LABEL = "kubeprober.io/token-for"
"""Label of a token Secret; its value names the cluster (``kubeprober cluster add`` sets it)."""


def selections(namespace: str, backoff: BackoffSettings | None = None) -> tuple[Selection, ...]:
    """What the aggregator follows: Clusters, labelled token Secrets, Probes."""
    b = backoff or BackoffSettings()
    return (
        Selection(CLUSTERS, namespace=namespace, backoff=b),
        Selection(SECRETS, namespace=namespace, label_selector=TOKEN_LABEL, backoff=b),
        Selection(PROBES, namespace=namespace, backoff=b),
    )


PERMISSIONS: tuple[Permission, ...] = tuple(p for s in selections("any") for p in s.permissions)


class FleetSource:
    """Follows the fleet's objects and builds a Fleet when their content changed."""

    def __init__(self, api: KubeApi, *, backoff: BackoffSettings | None = None) -> None:
        self.namespace = api.namespace
        self.changed = asyncio.Event()
        """Set whenever what the fleet is built from changed since the last :meth:`build`:
        not by a status write, which every replica makes all the time."""
        self.clusters, self.secrets, self.probes = (
            Mirror(api, s, on_change=self.changed.set, matters=_meaningful)
            for s in selections(api.namespace, backoff)
        )
        self._built: dict[tuple[str, str], tuple[JSON, tuple[Any, ...]]] | None = None
        """(kind, name) -> (the object, what of it matters) as of the last Fleet built. Every
        status write replaces a Cluster in its mirror; only the replaced objects are looked
        at again, so thousands of unchanged ones cost a dictionary walk, not a serialisation."""

    @property
    def mirrors(self) -> tuple[Mirror, Mirror, Mirror]:
        """The three followed selections."""
        return self.clusters, self.secrets, self.probes

    @property
    def synced(self) -> bool:
        """Whether every selection was listed at least once."""
        return all(m.watch.synced.is_set() for m in self.mirrors)

    def statuses(self) -> dict[str, JSON]:
        """Each Cluster's ``.status`` as last seen, to seed the status writer."""
        return {_name(c): c.get("status") or {} for c in self.clusters.objects.values()}

    def build(self) -> Fleet | None:
        """Return a new Fleet, or None when not synced yet or nothing that matters changed."""
        if not self.synced:
            return None
        self.changed.clear()
        clusters = list(self.clusters.objects.values())
        wanted = {
            str(((c.get("spec") or {}).get("tokenSecretRef") or {}).get("name", ""))
            for c in clusters
        }
        secrets = (s for s in self.secrets.objects.values() if _name(s) in wanted)
        docs = {
            (str(d.get("kind")), _name(d)): d
            for d in (*clusters, *secrets, *self.probes.objects.values())
        }
        # Status writes (ours) and resourceVersions move on every pull; the fleet does not.
        before = self._built or {}
        built = {}
        changed = self._built is None or docs.keys() != before.keys()
        for key, doc in docs.items():
            was = before.get(key)
            if was is not None and was[0] is doc:
                built[key] = was
                continue
            built[key] = (doc, _meaningful(doc))
            changed = changed or was is None or was[1] != built[key][1]
        if not changed:
            self._built = built
            return None
        # Sorted: watch events reorder the mirrors, and order alone is no change.
        fleet = parse_fleet(
            [docs[key] for key in sorted(docs)],
            source=f"{SOURCE} namespace {self.namespace}",
            secret_hint=f" among the Secrets labelled {TOKEN_LABEL}",
        )
        self._built = built
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
