"""What the agent says about its cluster in ``/status``: Kubernetes version and node count.

The aggregator shows both per cluster (and writes them to the Cluster status). Reading them is
best effort: a failure leaves the previous value and is logged once, never stops anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kubeprober.kube.api import KubeApi
from kubeprober.kube.errors import KubeError
from kubeprober.kube.resources import NODES, Permission

log = logging.getLogger(__name__)

# /version needs no grant: every authenticated client may read it.
PERMISSIONS: tuple[Permission, ...] = (NODES.permission("list"),)


@dataclass(frozen=True)
class ClusterFacts:
    """The cluster as the agent last saw it; None when unknown."""

    kubernetes_version: str | None = None
    node_count: int | None = None


async def read(api: KubeApi, previous: ClusterFacts) -> ClusterFacts:
    """Read both facts; keep the previous value of one that cannot be read now."""
    version, nodes = previous.kubernetes_version, previous.node_count
    try:
        version = str((await api.server_version()).get("gitVersion") or "") or None
    except KubeError as exc:
        log.warning("cannot read the Kubernetes version: %s", exc)
    try:
        nodes = len((await api.list(NODES, namespace=None))["items"])
    except KubeError as exc:
        log.warning("cannot count nodes: %s", exc)
    return ClusterFacts(version, nodes)
