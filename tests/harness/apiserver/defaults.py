"""Per-kind defaulting and validation done at create time, as the apiserver's strategies do.

Only what tests can observe and rely on: pod and service defaults, ClusterIP allocation from
127.0.101.0/24, Job selectors, Secret ``stringData``, Namespace phase, CRD status, and the
endpoint IPs no Service may send traffic to (loopback, link-local, unspecified).
"""

from __future__ import annotations

import base64
import ipaddress
import random
import re
from typing import Any

from .errors import ApiError, invalid
from .resources import ResourceType

# ClusterIPs come from here so the simulator's kube-proxy stand-in can bind them on loopback.
SERVICE_CIDR = ipaddress.ip_network("127.0.101.0/24")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_NAMED = {"namespaces", "services"}
_LINK_LOCAL_MULTICAST = (ipaddress.ip_network("224.0.0.0/24"), ipaddress.ip_network("ff02::/16"))


_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def check_name(rt: ResourceType, name: str) -> None:
    """Raise 422 when a name is not a valid DNS-1123 label or subdomain for its kind."""
    if rt.plural in LABEL_NAMED:
        pattern, limit, msg = _LABEL, 63, _LABEL_MSG
    else:
        pattern, limit, msg = _SUBDOMAIN, 253, _SUBDOMAIN_MSG
    if not pattern.fullmatch(name) or len(name) > limit:
        cause = ("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {msg}')
        raise invalid(rt.kind, rt.group, name, [cause])


_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
_LABEL_KEY_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


def check_labels(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Raise 422 for label keys or values the apiserver rejects."""
    causes = []
    for key, value in ((obj.get("metadata") or {}).get("labels") or {}).items():
        prefix, _, name = str(key).rpartition("/")
        if (
            not _LABEL_NAME.fullmatch(name)
            or len(name) > 63
            or (prefix and (not _SUBDOMAIN.fullmatch(prefix) or len(prefix) > 253))
        ):
            causes.append(
                (
                    "metadata.labels",
                    "FieldValueInvalid",
                    f'Invalid value: "{key}": {_LABEL_KEY_MSG}',
                )
            )
        if not isinstance(value, str) or (
            value and (not _LABEL_NAME.fullmatch(value) or len(value) > 63)
        ):
            causes.append(
                (
                    "metadata.labels",
                    "FieldValueInvalid",
                    f'Invalid value: "{value}": {_LABEL_VALUE_MSG}',
                )
            )
    if causes:
        raise invalid(rt.kind, rt.group, (obj.get("metadata") or {}).get("name", ""), causes)


class Allocator:
    """Hands out ClusterIPs and NodePorts; owned by the server's event loop."""

    def __init__(self) -> None:
        self.ips = [str(ip) for ip in list(SERVICE_CIDR.hosts())[1:]]
        self.used: set[str] = set()
        self.node_port = 30000

    def cluster_ip(self, wanted: str | None) -> str:
        """Return wanted (if free) or a free ClusterIP picked at random.

        At random as kube-apiserver does, and so that two test sessions side by side, whose
        kube-proxy stand-ins bind ClusterIPs on the one loopback, seldom pick the same one.
        """
        if wanted:
            if wanted in self.used:
                raise ApiError(
                    422,
                    f'spec.clusterIPs: Invalid value: ["{wanted}"]: failed '
                    f"to allocate IP {wanted}: provided IP is already allocated",
                    reason="Invalid",
                )
            self.used.add(wanted)
            return wanted
        free = [ip for ip in self.ips if ip not in self.used]
        if not free:
            raise ApiError(500, "range is full")
        ip = random.choice(free)
        self.used.add(ip)
        return ip

    def release(self, ip: str | None) -> None:
        """Give a ClusterIP back."""
        self.used.discard(ip or "")


def on_create(rt: ResourceType, obj: dict[str, Any], alloc: Allocator) -> None:
    """Default and validate obj in place before it is first stored."""
    fn = _HOOKS.get((rt.group, rt.plural))
    if fn:
        fn(obj, alloc)
    on_write(rt, obj)


def on_write(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Apply the defaults and checks every write gets (pod templates, endpoint addresses)."""
    _check_endpoint_ips(rt, obj)
    path = _TEMPLATE_PATHS.get((rt.group, rt.plural))
    if path is None:
        return
    cur: Any = obj
    for part in path:
        cur = cur.get(part) if isinstance(cur, dict) else None
    if isinstance(cur, dict):
        pod_spec_defaults(cur)


def _endpoint_ips(rt: ResourceType, obj: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return (field, value) of every endpoint IP of an EndpointSlice or Endpoints object."""
    if (rt.group, rt.plural) == ("discovery.k8s.io", "endpointslices"):
        if obj.get("addressType") == "FQDN":
            return []
        return [
            (f"endpoints[{i}].addresses[{j}]", a)
            for i, ep in enumerate(obj.get("endpoints") or [])
            for j, a in enumerate(ep.get("addresses") or [])
        ]
    if (rt.group, rt.plural) == ("", "endpoints"):
        return [
            (f"subsets[{i}].{kind}[{j}].ip", a.get("ip"))
            for i, sub in enumerate(obj.get("subsets") or [])
            for kind in ("addresses", "notReadyAddresses")
            for j, a in enumerate(sub.get(kind) or [])
        ]
    return []


def _check_endpoint_ips(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Raise 422 for endpoint IPs the apiserver refuses (loopback, link-local, unspecified)."""
    causes = []
    for field, value in _endpoint_ips(rt, obj):
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            causes.append((field, value, "must be a valid IP address"))
            continue
        if ip.is_unspecified:
            causes.append((field, value, f"may not be unspecified ({value})"))
        if ip.is_loopback:
            causes.append((field, value, "may not be in the loopback range (127.0.0.0/8, ::1/128)"))
        if ip.is_link_local:
            causes.append(
                (field, value, "may not be in the link-local range (169.254.0.0/16, fe80::/10)")
            )
        if any(ip in net for net in _LINK_LOCAL_MULTICAST):
            causes.append(
                (
                    field,
                    value,
                    "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
                )
            )
    if causes:
        raise invalid(
            rt.kind,
            rt.group,
            obj["metadata"]["name"],
            [(f, "FieldValueInvalid", f'Invalid value: "{v}": {m}') for f, v, m in causes],
        )


def pod_spec_defaults(spec: dict[str, Any]) -> None:
    """Fill the PodSpec fields API defaulting sets (containers included)."""
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        image = str(c.get("image", ""))
        latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
        c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
        for p in c.get("ports") or []:
            p.setdefault("protocol", "TCP")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})


_TEMPLATE_PATHS = {
    ("apps", "deployments"): ("spec", "template", "spec"),
    ("apps", "replicasets"): ("spec", "template", "spec"),
    ("apps", "statefulsets"): ("spec", "template", "spec"),
    ("apps", "daemonsets"): ("spec", "template", "spec"),
    ("batch", "jobs"): ("spec", "template", "spec"),
    ("batch", "cronjobs"): ("spec", "jobTemplate", "spec", "template", "spec"),
}


def _namespace(obj: dict[str, Any], alloc: Allocator) -> None:
    obj.setdefault("spec", {})["finalizers"] = ["kubernetes"]
    obj["status"] = {"phase": "Active"}
    meta = obj["metadata"]
    meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]


def _pod(obj: dict[str, Any], alloc: Allocator) -> None:
    spec = obj.setdefault("spec", {})
    name = obj["metadata"]["name"]
    containers = spec.get("containers") or []
    if not containers:
        raise invalid(
            "Pod", "", name, [("spec.containers", "FieldValueRequired", "Required value")]
        )
    for i, c in enumerate(containers):
        if not c.get("image"):
            raise invalid(
                "Pod",
                "",
                name,
                [(f"spec.containers[{i}].image", "FieldValueRequired", "Required value")],
            )
    pod_spec_defaults(spec)
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}


def _service(obj: dict[str, Any], alloc: Allocator) -> None:
    spec = obj.setdefault("spec", {})
    name = obj["metadata"]["name"]
    typ = spec.setdefault("type", "ClusterIP")
    if typ != "ExternalName":
        if not spec.get("ports") and spec.get("clusterIP") != "None":
            raise invalid(
                "Service", "", name, [("spec.ports", "FieldValueRequired", "Required value")]
            )
        if spec.get("clusterIP") != "None":
            ip = alloc.cluster_ip(spec.get("clusterIP"))
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        else:
            spec["clusterIPs"] = ["None"]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    spec.setdefault("sessionAffinity", "None")
    for p in spec.get("ports") or []:
        p.setdefault("protocol", "TCP")
        p.setdefault("targetPort", p.get("port"))
        if typ in ("NodePort", "LoadBalancer") and "nodePort" not in p:
            alloc.node_port += 1
            p["nodePort"] = alloc.node_port
    obj["status"] = {"loadBalancer": {}}


def _secret(obj: dict[str, Any], alloc: Allocator) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None) or {}
    data = obj.setdefault("data", {})
    for k, v in string_data.items():
        data[k] = base64.b64encode(str(v).encode()).decode()
    if not data:
        obj.pop("data")


def _deployment(obj: dict[str, Any], alloc: Allocator) -> None:
    spec = obj.setdefault("spec", {})
    name = obj["metadata"]["name"]
    selector = spec.get("selector")
    if not selector:
        raise invalid(
            "Deployment", "apps", name, [("spec.selector", "FieldValueRequired", "Required value")]
        )
    labels = (spec.get("template", {}).get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        raise invalid(
            "Deployment",
            "apps",
            name,
            [
                (
                    "spec.template.metadata.labels",
                    "FieldValueInvalid",
                    f"Invalid value: {labels!r}: `selector` does not match template `labels`",
                )
            ],
        )
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    spec.setdefault(
        "strategy",
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
    )
    obj["status"] = {}


def _job(obj: dict[str, Any], alloc: Allocator) -> None:
    spec = obj.setdefault("spec", {})
    meta = obj["metadata"]
    template = spec.setdefault("template", {})
    pod_spec = template.setdefault("spec", {})
    if pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
        raise invalid(
            "Job",
            "batch",
            meta["name"],
            [
                (
                    "spec.template.spec.restartPolicy",
                    "FieldValueRequired",
                    'Required value: valid values: "OnFailure", "Never"',
                )
            ],
        )
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    uid = meta["uid"]
    job_labels = {
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": meta["name"],
        "controller-uid": uid,
        "job-name": meta["name"],
    }
    if not spec.get("manualSelector"):
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        template.setdefault("metadata", {}).setdefault("labels", {}).update(job_labels)
    obj["status"] = {}


def _crd(obj: dict[str, Any], alloc: Allocator) -> None:
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    name = obj["metadata"]["name"]
    want = f"{names.get('plural')}.{spec.get('group')}"
    if name != want:
        raise invalid(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            name,
            [
                (
                    "metadata.name",
                    "FieldValueInvalid",
                    f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
                )
            ],
        )
    if not spec.get("versions"):
        raise invalid(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            name,
            [
                (
                    "spec.versions",
                    "FieldValueInvalid",
                    "Invalid value: null: must have exactly one version marked as storage version",
                )
            ],
        )
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", names["kind"] + "List")
    spec.setdefault("scope", "Namespaced")
    spec.setdefault("conversion", {"strategy": "None"})
    obj["status"] = crd_status(obj)


def crd_status(obj: dict[str, Any]) -> dict[str, Any]:
    """Return the status a CRD gets once its names are accepted and it is served."""
    from .timeutil import now

    spec = obj["spec"]
    ts = now()
    storage = next(
        (v["name"] for v in spec["versions"] if v.get("storage")), spec["versions"][0]["name"]
    )
    return {
        "acceptedNames": spec["names"],
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": ts,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": ts,
            },
        ],
        "storedVersions": [storage],
    }


_HOOKS = {
    ("", "namespaces"): _namespace,
    ("", "pods"): _pod,
    ("", "services"): _service,
    ("", "secrets"): _secret,
    ("apps", "deployments"): _deployment,
    ("batch", "jobs"): _job,
    ("apiextensions.k8s.io", "customresourcedefinitions"): _crd,
}
