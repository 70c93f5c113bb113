"""The aggregator's Kubernetes mode, built on the shared API layer (:mod:`kubeprober.kube`)::

    source    Cluster, token Secret and Probe objects of one namespace, watched -> the same
              Fleet as files
    status    Cluster status written back (state, last seen, versions, summary, Ready)
    add       ``kubeprober cluster add --kubeconfig``: a Cluster and its token Secret
    mode      the above wired together for ``run_aggregator``

This ``__init__`` holds only the settings and what the HTTP handlers share with ``peers``
about passing a request to another replica, so code that merely configures the mode (or
serves the API in file mode) does not pay for importing the client. Nothing here may block
the event loop, and an API outage must never stop the aggregator serving: the last good
fleet stays in force.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kubeprober.pacing import BackoffSettings

FORWARDED = "X-Kubeprober-Forwarded"
"""Header of a request one replica passes to the cluster's holder (:mod:`.peers`): never
passed on again, so two replicas whose views of a hold disagree for a moment cannot bounce it
between them."""
PEER_MARGIN = 5.0
"""Seconds a replica waits for the holder it passed a request to beyond the holder's own
bound on that request (the holder answers 502 in time on its own)."""


class HolderFailed(Exception):
    """The replica holding a cluster gave no usable answer to a request passed to it; the
    message names the cluster, that replica and what went wrong (a 502 for the client)."""


@dataclass(frozen=True)
class Holder:
    """Another live replica, holding a cluster's tunnel."""

    identity: str
    url: str
    """Its API, as its membership Lease says."""


@dataclass(frozen=True)
class KubeModeSettings:
    """Where the fleet's objects live and how hard the aggregator may lean on the API."""

    kubeconfig: Path | None = None
    """This kubeconfig's current context; None means the pod's service account (in-cluster)."""
    namespace: str | None = None
    """Namespace of the Cluster, Secret and Probe objects; None: the context's or the pod's."""
    status_interval: float = 1.0
    """Seconds between looks for Cluster status to write: a state change shows in
    ``kubectl get clusters`` within about this long."""
    writes_per_second: float = 10.0
    """Status patches per second at most (bursts of ``write_burst``): a fleet coming online
    at once must not flood the API server."""
    write_burst: int = 20
    backoff: BackoffSettings = field(default_factory=BackoffSettings)
    """How the fleet's watches retry while the API server is away."""
    identity: str = ""
    """This replica's name among the aggregator's replicas (its Lease is named after it);
    empty: the host name, which in a pod is the pod's name."""
    advertise: str = ""
    """The URL other replicas reach this one's API at; empty: derived from where it listens
    (the host's address when it listens on every interface)."""
    lease_duration: int = 30
    """Seconds a replica's Lease (and the leader's) lasts unrenewed; renewed every third of
    it (10 s: six writes a minute per replica, the leader twice that). A dead replica's
    clusters are marked Offline, and leadership moves, within this; its agents reconnect to
    the others at once, without waiting for it."""
    peer_timeout: float = 0.5
    """Seconds ``/status`` waits for the other replicas' clusters before showing them from
    their Cluster status, marked stale."""
    last_seen_every: float = 600.0
    """Seconds: ``status.lastSeen`` alone is rewritten once per this period. Every pull moves
    it, and a patch per cluster per pull would cost the API server more than it tells anyone.
    Each cluster's rewrite falls at a moment of its own in the period (from its name), so at
    600 s a replica of 2,500 steady clusters writes about 4 a second all the time, well inside
    ``writes_per_second``, even when they all came Online together; state changes are never
    queued behind it. Any other change (Online to Offline above all) is written at once."""
