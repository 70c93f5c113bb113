"""The API resources both services and the probers touch, their URL paths, and the
permissions calls need.

Exists so paths are built in one place and every module can declare, next to its calls, the
``(apiGroup, resource, verb)`` triples it uses; the RBAC tests (agent and aggregator) hold
those declarations against ``manifests/*/rbac/`` and against the calls a run really made. It
must not make requests, and imports nothing but the standard library: probers name resources
with it without importing ``kubernetes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True, order=True)
class Permission:
    """One RBAC grant: ``verb`` on ``resource`` (``plural`` or ``plural/subresource``)."""

    group: str
    resource: str
    verb: str


@dataclass(frozen=True)
class Resource:
    """A resource type: where it lives in the API and what it is called."""

    group: str
    """API group; "" for the core group."""
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        """Return ``group/version`` (or just ``version`` for the core group)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """Return the URL path; no (or an empty) namespace means all namespaces, or a
        cluster-scoped resource."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
        if subresource is not None:
            base += f"/{subresource}"
        return base

    def permission(self, verb: str, subresource: str | None = None) -> Permission:
        """Return the grant ``verb`` needs on this resource (or one of its subresources)."""
        resource = f"{self.plural}/{subresource}" if subresource else self.plural
        return Permission(self.group, resource, verb)


GROUP = "kubeprober.io"
PROBES = Resource(GROUP, "v1", "probes", "Probe")
PROBE_STATUSES = Resource(GROUP, "v1", "probestatuses", "ProbeStatus")
CLUSTERS = Resource(GROUP, "v1", "clusters", "Cluster")
"""Central side: the managed clusters the aggregator accepts."""
SECRETS = Resource("", "v1", "secrets", "Secret")
"""Central side: the agents' token Secrets."""
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
"""Central side: the aggregator replicas' membership and leader Leases."""
EVENTS = Resource("", "v1", "events", "Event")
NODES = Resource("", "v1", "nodes", "Node")
"""Cluster-scoped: listed to report the node count, and followed for targets."""
JOBS = Resource("batch", "v1", "jobs", "Job")
"""Container probes: one Job per run."""
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
"""Container probes: the extra environment of every run."""

# The probers' (through ctx.kube).
NAMESPACES = Resource("", "v1", "namespaces", "Namespace")
PODS = Resource("", "v1", "pods", "Pod")
SERVICES = Resource("", "v1", "services", "Service")
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
DAEMONSETS = Resource("apps", "v1", "daemonsets", "DaemonSet")
INGRESSES = Resource("networking.k8s.io", "v1", "ingresses", "Ingress")
VALIDATING_WEBHOOKS = Resource(
    "admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations",
    "ValidatingWebhookConfiguration",
)  # fmt: skip
MUTATING_WEBHOOKS = Resource(
    "admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations",
    "MutatingWebhookConfiguration",
)  # fmt: skip
