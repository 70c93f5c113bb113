"""The kinds the test server serves: built-in ones and those CustomResourceDefinitions add.

One table drives discovery, OpenAPI, routing, selectors and tables, so a kind is declared once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Field selectors every kind supports; kinds add their own below (as a real apiserver does).
BASE_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass
class ResourceType:
    """One served resource (group, version, plural) and how the server treats it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # True when writes to the main resource ignore .status and /status ignores the rest.
    status_subresource: bool = False
    # True when metadata.generation is tracked (bumped on spec changes).
    generation: bool = False
    selectable_fields: tuple[str, ...] = BASE_FIELDS
    # CRD printer columns (additionalPrinterColumns), None for built-in kinds.
    printer_columns: list[dict[str, Any]] | None = None
    # CRD openAPIV3Schema used for pruning and validation, None for built-in kinds.
    schema: dict[str, Any] | None = None
    crd: bool = False
    # Subresources without their own storage (e.g. pods/binding, pods/eviction).
    extra_subresources: tuple[str, ...] = ()
    # Default deletion propagation when the client sends none (batch/v1 Jobs orphan).
    default_propagation: str = "Background"
    all_versions: tuple[str, ...] = field(default_factory=tuple)
    # Storage shared with another resource (events.k8s.io Events are core Events).
    storage: tuple[str, str] | None = None

    @property
    def api_version(self) -> str:
        """Return the apiVersion string."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        """Return the singular resource name."""
        return self.kind.lower()

    @property
    def key(self) -> tuple[str, str]:
        """Return the storage key: versions of one group/plural share objects."""
        return self.storage or (self.group, self.plural)


def _b(
    gv: str,
    plural: str,
    kind: str,
    namespaced: bool = True,
    **kw: Any,
) -> ResourceType:
    group, _, version = gv.rpartition("/")
    return ResourceType(
        group=group, version=version, plural=plural, kind=kind, namespaced=namespaced, **kw
    )


POD_FIELDS = (
    *BASE_FIELDS,
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
EVENT_FIELDS = (
    *BASE_FIELDS,
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)
RBAC = "rbac.authorization.k8s.io/v1"

BUILTINS: list[ResourceType] = [
    _b(
        "/v1",
        "namespaces",
        "Namespace",
        False,
        short_names=("ns",),
        status_subresource=True,
        selectable_fields=(*BASE_FIELDS, "status.phase"),
        extra_subresources=("finalize",),
    ),
    _b(
        "/v1",
        "pods",
        "Pod",
        short_names=("po",),
        categories=("all",),
        status_subresource=True,
        selectable_fields=POD_FIELDS,
        extra_subresources=("binding", "eviction"),
    ),
    _b(
        "/v1",
        "services",
        "Service",
        short_names=("svc",),
        categories=("all",),
        status_subresource=True,
    ),
    _b("/v1", "endpoints", "Endpoints", short_names=("ep",)),
    _b("/v1", "configmaps", "ConfigMap", short_names=("cm",)),
    _b("/v1", "secrets", "Secret", selectable_fields=(*BASE_FIELDS, "type")),
    _b("/v1", "events", "Event", short_names=("ev",), selectable_fields=EVENT_FIELDS),
    _b(
        "/v1",
        "nodes",
        "Node",
        False,
        short_names=("no",),
        status_subresource=True,
        selectable_fields=(*BASE_FIELDS, "spec.unschedulable"),
    ),
    _b("/v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _b(
        "/v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        short_names=("pvc",),
        status_subresource=True,
    ),
    _b("/v1", "resourcequotas", "ResourceQuota", short_names=("quota",), status_subresource=True),
    _b("/v1", "limitranges", "LimitRange", short_names=("limits",)),
    _b(
        "apps/v1",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        categories=("all",),
        status_subresource=True,
        generation=True,
        extra_subresources=("scale",),
    ),
    _b(
        "apps/v1",
        "replicasets",
        "ReplicaSet",
        short_names=("rs",),
        categories=("all",),
        status_subresource=True,
        generation=True,
    ),
    _b(
        "apps/v1",
        "statefulsets",
        "StatefulSet",
        short_names=("sts",),
        categories=("all",),
        status_subresource=True,
        generation=True,
    ),
    _b(
        "apps/v1",
        "daemonsets",
        "DaemonSet",
        short_names=("ds",),
        categories=("all",),
        status_subresource=True,
        generation=True,
    ),
    _b(
        "batch/v1",
        "jobs",
        "Job",
        categories=("all",),
        status_subresource=True,
        generation=True,
        default_propagation="Orphan",
        selectable_fields=(*BASE_FIELDS, "status.successful"),
    ),
    _b(
        "batch/v1",
        "cronjobs",
        "CronJob",
        short_names=("cj",),
        categories=("all",),
        status_subresource=True,
        generation=True,
    ),
    _b("coordination.k8s.io/v1", "leases", "Lease"),
    _b(
        "discovery.k8s.io/v1",
        "endpointslices",
        "EndpointSlice",
        selectable_fields=(*BASE_FIELDS, "addressType"),
    ),
    _b(
        "events.k8s.io/v1",
        "events",
        "Event",
        short_names=("ev",),
        selectable_fields=EVENT_FIELDS,
        storage=("", "events"),
    ),
    _b(
        "networking.k8s.io/v1",
        "ingresses",
        "Ingress",
        short_names=("ing",),
        status_subresource=True,
        generation=True,
    ),
    _b(
        "networking.k8s.io/v1",
        "networkpolicies",
        "NetworkPolicy",
        short_names=("netpol",),
        generation=True,
    ),
    _b(
        "policy/v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        short_names=("pdb",),
        status_subresource=True,
        generation=True,
    ),
    _b(RBAC, "roles", "Role"),
    _b(RBAC, "rolebindings", "RoleBinding"),
    _b(RBAC, "clusterroles", "ClusterRole", False),
    _b(RBAC, "clusterrolebindings", "ClusterRoleBinding", False),
    _b(
        "admissionregistration.k8s.io/v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        False,
        categories=("api-extensions",),
        generation=True,
    ),
    _b(
        "admissionregistration.k8s.io/v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        False,
        categories=("api-extensions",),
        generation=True,
    ),
    _b(
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        short_names=("crd", "crds"),
        categories=("api-extensions",),
        status_subresource=True,
        generation=True,
    ),
]

# Groups in discovery order; a real apiserver lists core groups before CRD groups.
BUILTIN_GROUPS = list(dict.fromkeys(rt.group for rt in BUILTINS if rt.group))


class Registry:
    """The served resource types, keyed for routing; CRDs are added and removed at runtime."""

    def __init__(self) -> None:
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.crd_types: dict[str, list[ResourceType]] = {}
        for rt in BUILTINS:
            self.types[(rt.group, rt.version, rt.plural)] = rt

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        """Return the type served at group/version/plural, if any."""
        return self.types.get((group, version, plural))

    def by_key(self, key: tuple[str, str]) -> ResourceType | None:
        """Return one served version of a group/plural."""
        return next((rt for rt in self.types.values() if rt.key == key), None)

    def group_versions(self) -> dict[str, list[str]]:
        """Return group -> served versions (preferred first), in discovery order."""
        out: dict[str, list[str]] = {}
        for g in BUILTIN_GROUPS:
            out[g] = []
        for rt in self.types.values():
            if rt.group and rt.version not in out.setdefault(rt.group, []):
                out[rt.group].append(rt.version)
        for rts in self.crd_types.values():
            # The apiserver orders a CRD group's versions by "kube-aware" version priority.
            out[rts[0].group] = sorted(out[rts[0].group], key=_version_priority)
        return {g: v for g, v in out.items() if v}

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        """Return the types served in one group version."""
        return [rt for rt in self.types.values() if rt.group == group and rt.version == version]

    def register_crd(self, crd: dict[str, Any]) -> None:
        """Serve the versions a CRD declares (replacing what it served before)."""
        self.unregister_crd(crd["metadata"]["name"])
        spec = crd["spec"]
        names = spec["names"]
        served = [v for v in spec.get("versions", []) if v.get("served", True)]
        rts = []
        for v in served:
            rt = ResourceType(
                group=spec["group"],
                version=v["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames", ())),
                categories=tuple(names.get("categories", ())),
                status_subresource="status" in (v.get("subresources") or {}),
                generation=True,
                printer_columns=v.get("additionalPrinterColumns"),
                schema=(v.get("schema") or {}).get("openAPIV3Schema"),
                crd=True,
                all_versions=tuple(x["name"] for x in served),
            )
            self.types[(rt.group, rt.version, rt.plural)] = rt
            rts.append(rt)
        if rts:
            self.crd_types[crd["metadata"]["name"]] = rts

    def unregister_crd(self, name: str) -> None:
        """Stop serving a CRD's versions."""
        for rt in self.crd_types.pop(name, []):
            self.types.pop((rt.group, rt.version, rt.plural), None)

    def resolve_kind(self, api_version: str, kind: str) -> ResourceType | None:
        """Return the type for an apiVersion/kind pair (for owner references)."""
        group, _, version = api_version.rpartition("/")
        return next(
            (
                rt
                for rt in self.types.values()
                if rt.group == group and rt.version == version and rt.kind == kind
            ),
            None,
        )


def _version_priority(version: str) -> tuple[int, int, int]:
    """Sort key for Kubernetes version names: GA before beta before alpha, newest first."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0)
    rank = {"alpha": 2, "beta": 1, None: 0}[m.group(2)]
    return (rank, -int(m.group(1)), -int(m.group(3) or 0))
