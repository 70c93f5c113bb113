"""Subresources without storage of their own: pods/binding, deployments/scale, ns/finalize."""

from __future__ import annotations

from typing import Any

from . import patching
from .errors import ApiError, not_found
from .objects import NS_KEY, Objects
from .resources import ResourceType

SUCCESS = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


def bind(api: Objects, rt: ResourceType, ns: str, name: str, body: Any) -> dict[str, Any]:
    """Assign a pod to a node (what the scheduler does); 409 when already assigned."""
    node = ((body or {}).get("target") or {}).get("name")
    if rt.key != ("", "pods") or not node:
        raise ApiError(400, "binding requires target.name")
    pod = api.view(rt, api.current(rt, ns, name))
    if pod["spec"].get("nodeName"):
        raise ApiError(
            409,
            f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"',
            reason="Conflict",
            details={"name": name, "kind": "pods"},
        )
    # Binding is the one write allowed to set spec.nodeName, so it bypasses update rules.
    pod["spec"]["nodeName"] = node
    api.store.write(rt, pod, created=False)
    pod = api.view(rt, api.current(rt, ns, name))
    conds = [c for c in pod["status"].get("conditions") or [] if c["type"] != "PodScheduled"]
    conds.append(
        {
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": pod["metadata"]["creationTimestamp"],
        }
    )
    pod["status"]["conditions"] = conds
    api.update(rt, ns, name, pod, subresource="status")
    return SUCCESS


def scale(
    api: Objects, rt: ResourceType, ns: str, name: str, method: str, body: Any
) -> dict[str, Any]:
    """Read or change spec.replicas through an autoscaling/v1 Scale; a patch applies to it."""
    if method in ("PUT", "PATCH"):
        if method == "PATCH":
            body = patching.merge_patch(_scale(api.view(rt, api.current(rt, ns, name))), body)
        obj = api.view(rt, api.current(rt, ns, name))
        obj["spec"]["replicas"] = ((body or {}).get("spec") or {}).get("replicas") or 0
        api.update(rt, ns, name, obj)
    return _scale(api.view(rt, api.current(rt, ns, name)))


def _scale(obj: dict[str, Any]) -> dict[str, Any]:
    """Return the Scale of a workload, zero values left out where the API type says omitempty."""
    sel = (obj["spec"].get("selector") or {}).get("matchLabels") or {}
    keys = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
    replicas = obj["spec"].get("replicas", 1)
    status: dict[str, Any] = {"replicas": obj.get("status", {}).get("replicas", 0)}
    if sel:
        status["selector"] = ",".join(f"{k}={v}" for k, v in sel.items())
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: obj["metadata"][k] for k in keys},
        "spec": {"replicas": replicas} if replicas else {},
        "status": status,
    }


def finalize(api: Objects, rt: ResourceType, name: str, body: Any) -> dict[str, Any]:
    """Set a namespace's spec.finalizers; a terminating namespace without any is deleted."""
    if rt.key != NS_KEY:
        raise not_found(rt.group, rt.plural, name)
    obj = api.view(rt, api.current(rt, "", name))
    finalizers = ((body or {}).get("spec") or {}).get("finalizers") or []
    obj.setdefault("spec", {})["finalizers"] = finalizers
    if api.finalized(rt, obj):
        api.remove_now(rt, obj)
        return obj
    return api.view(rt, api.store.write(rt, obj, created=False))
