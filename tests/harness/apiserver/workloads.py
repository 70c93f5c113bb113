"""Workload controllers: Deployment -> ReplicaSet -> Pods, DaemonSet -> a pod per node, Job
completion and deadline, EndpointSlices.

Simplified but observable the same way: objects are created with owner references and the
status fields tests read (replicas, readyReplicas, Job conditions, endpoint readiness).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
from typing import Any

from .controllers import create_obj, delete_obj, rt_of, update_obj
from .objects import Objects
from .resources import ResourceType
from .selectors import match_label_selector
from .timeutil import now, parse

PODS = ("", "pods")
TERMINAL = ("Succeeded", "Failed")


def _owner_ref(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": rt.api_version,
        "kind": rt.kind,
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _owned(api: Objects, key: tuple[str, str], owner: dict[str, Any]) -> list[dict[str, Any]]:
    uid = owner["metadata"]["uid"]
    return [
        o
        for o in api.store.items(key, owner["metadata"].get("namespace", ""))
        if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
    ]


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )


def _active(pod: dict[str, Any]) -> bool:
    return (
        not pod["metadata"].get("deletionTimestamp")
        and pod.get("status", {}).get("phase") not in TERMINAL
    )


def _pod_from_template(
    owner_rt: ResourceType,
    owner: dict[str, Any],
    template: dict[str, Any],
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    tmeta = template.get("metadata") or {}
    labels = {**(tmeta.get("labels") or {}), **(extra_labels or {})}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": owner["metadata"]["name"] + "-",
            "labels": labels,
            "annotations": dict(tmeta.get("annotations") or {}),
            "ownerReferences": [_owner_ref(owner_rt, owner)],
        },
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


def _set_status(
    api: Objects, rt: ResourceType, obj: dict[str, Any], status: dict[str, Any]
) -> None:
    if obj.get("status") == status:
        return
    view = api.view(rt, obj)
    view["status"] = status
    update_obj(api, rt, view, status=True)


def deployments(api: Objects) -> None:
    """Keep one ReplicaSet per Deployment template and roll its status up."""
    drt, rsrt = rt_of(api, ("apps", "deployments")), rt_of(api, ("apps", "replicasets"))
    assert drt is not None and rsrt is not None
    for d in list(api.store.items(drt.key)):
        if d["metadata"].get("deletionTimestamp"):
            continue
        spec = d["spec"]
        template = spec.get("template") or {}
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        rs_name = f"{d['metadata']['name']}-{digest}"
        owned = _owned(api, rsrt.key, d)
        current = next((r for r in owned if r["metadata"]["name"] == rs_name), None)
        replicas = spec.get("replicas", 1)
        ns = d["metadata"]["namespace"]
        if current is None:
            t = copy.deepcopy(template)
            t.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = digest
            sel = copy.deepcopy(spec.get("selector") or {})
            sel.setdefault("matchLabels", {})["pod-template-hash"] = digest
            create_obj(
                api,
                rsrt.key,
                ns,
                {
                    "metadata": {
                        "name": rs_name,
                        "labels": t["metadata"]["labels"],
                        "ownerReferences": [_owner_ref(drt, d)],
                    },
                    "spec": {"replicas": replicas, "selector": sel, "template": t},
                },
            )
            continue
        for rs in owned:
            want = replicas if rs is current else 0
            if rs["spec"].get("replicas") != want:
                view = api.view(rsrt, rs)
                view["spec"]["replicas"] = want
                update_obj(api, rsrt, view)
        st = [r.get("status", {}) for r in owned]
        ready = sum(s.get("readyReplicas", 0) for s in st)
        status = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": sum(s.get("replicas", 0) for s in st),
            "updatedReplicas": current.get("status", {}).get("replicas", 0),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(replicas - ready, 0),
        }
        available = ready >= replicas
        old_conds = {c["type"]: c for c in d.get("status", {}).get("conditions") or []}
        cond_status = "True" if available else "False"
        prev = old_conds.get("Available")
        status["conditions"] = [
            {
                "type": "Available",
                "status": cond_status,
                "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
                "lastUpdateTime": prev["lastUpdateTime"]
                if prev and prev["status"] == cond_status
                else now(),
                "lastTransitionTime": prev["lastTransitionTime"]
                if prev and prev["status"] == cond_status
                else now(),
            },
        ]
        for k in (
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
            "replicas",
            "updatedReplicas",
        ):
            if not status[k]:
                del status[k]
        _set_status(api, drt, d, status)


def replicasets(api: Objects) -> None:
    """Create or delete pods so each ReplicaSet has its replicas."""
    rsrt, prt = rt_of(api, ("apps", "replicasets")), rt_of(api, PODS)
    assert rsrt is not None and prt is not None
    for rs in list(api.store.items(rsrt.key)):
        if rs["metadata"].get("deletionTimestamp"):
            continue
        pods = [p for p in _owned(api, PODS, rs) if _active(p)]
        want = rs["spec"].get("replicas", 1)
        for _ in range(want - len(pods)):
            create_obj(
                api,
                PODS,
                rs["metadata"]["namespace"],
                _pod_from_template(rsrt, rs, rs["spec"].get("template") or {}),
            )
        for p in pods[want:] if len(pods) > want else []:
            delete_obj(api, prt, p, "Background")
        ready = sum(1 for p in pods if _ready(p))
        status = {
            "observedGeneration": rs["metadata"].get("generation", 1),
            "replicas": min(len(pods), want),
            "fullyLabeledReplicas": min(len(pods), want),
            "readyReplicas": ready,
            "availableReplicas": ready,
        }
        status = {k: v for k, v in status.items() if v or k in ("replicas", "observedGeneration")}
        _set_status(api, rsrt, rs, status)


def daemonsets(api: Objects) -> None:
    """Keep one pod on each node the template's nodeSelector matches, and count them."""
    dsrt, prt = rt_of(api, ("apps", "daemonsets")), rt_of(api, PODS)
    assert dsrt is not None and prt is not None
    nodes = list(api.store.items(("", "nodes")))
    for ds in list(api.store.items(dsrt.key)):
        if ds["metadata"].get("deletionTimestamp"):
            continue
        template = ds["spec"].get("template") or {}
        selector = (template.get("spec") or {}).get("nodeSelector") or {}
        wanted = {
            n["metadata"]["name"]
            for n in nodes
            if all((n["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
        }
        pods = [p for p in _owned(api, PODS, ds) if _active(p)]
        placed = {p["spec"].get("nodeName"): p for p in pods}
        for node in sorted(wanted - set(placed)):
            pod = _pod_from_template(dsrt, ds, template)
            pod["spec"]["nodeName"] = node  # bound by the controller itself, as before 1.12
            create_obj(api, PODS, ds["metadata"]["namespace"], pod)
        for node, pod in placed.items():
            if node not in wanted:
                delete_obj(api, prt, pod, "Background")
        scheduled = [p for n, p in placed.items() if n in wanted]
        ready = sum(1 for p in scheduled if _ready(p))
        status = {
            "observedGeneration": ds["metadata"].get("generation", 1),
            "desiredNumberScheduled": len(wanted),
            "currentNumberScheduled": len(scheduled),
            "updatedNumberScheduled": len(scheduled),
            "numberMisscheduled": 0,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": len(wanted) - ready,
        }
        optional = ("updatedNumberScheduled", "numberAvailable", "numberUnavailable")
        status = {k: v for k, v in status.items() if v or k not in optional}
        _set_status(api, dsrt, ds, status)


def jobs(api: Objects) -> None:
    """Run Job pods until completions succeed or backoffLimit failures, then set conditions."""
    jrt, prt = rt_of(api, ("batch", "jobs")), rt_of(api, PODS)
    assert jrt is not None and prt is not None
    for job in list(api.store.items(jrt.key)):
        meta, spec = job["metadata"], job["spec"]
        st = copy.deepcopy(job.get("status") or {})
        conds = {c["type"] for c in st.get("conditions") or [] if c.get("status") == "True"}
        if meta.get("deletionTimestamp") or conds & {"Complete", "Failed"}:
            continue
        pods = _owned(api, PODS, job)
        active = [p for p in pods if _active(p)]
        succeeded = sum(1 for p in pods if p.get("status", {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if p.get("status", {}).get("phase") == "Failed")
        completions = spec.get("completions", 1)
        st.setdefault("startTime", now())
        st.update(
            succeeded=succeeded,
            failed=failed,
            active=len(active),
            ready=sum(1 for p in active if _ready(p)),
            terminating=0,
            uncountedTerminatedPods={},
        )
        ts = now()
        deadline = spec.get("activeDeadlineSeconds")
        overdue = deadline is not None and (
            dt.datetime.now(dt.UTC) - parse(st["startTime"])
        ) >= dt.timedelta(seconds=deadline)
        if overdue and succeeded < completions:
            # As the Job controller does: fail the Job and delete the pods still running.
            st["conditions"] = [
                {
                    "type": kind,
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline",
                    "lastProbeTime": ts,
                    "lastTransitionTime": ts,
                }
                for kind in ("FailureTarget", "Failed")
            ]
            for p in active:
                delete_obj(api, prt, p, "Background")
            st["failed"] = failed + len(active)
            st["active"] = 0
        elif succeeded >= completions:
            st["conditions"] = [
                {
                    "type": "SuccessCriteriaMet",
                    "status": "True",
                    "reason": "CompletionsReached",
                    "message": "Reached expected number of succeeded pods",
                    "lastProbeTime": ts,
                    "lastTransitionTime": ts,
                },
                {
                    "type": "Complete",
                    "status": "True",
                    "reason": "CompletionsReached",
                    "message": "Reached expected number of succeeded pods",
                    "lastProbeTime": ts,
                    "lastTransitionTime": ts,
                },
            ]
            st["completionTime"] = ts
            for p in active:
                delete_obj(api, prt, p, "Background")
            st["active"] = 0
        elif failed > spec.get("backoffLimit", 6):
            st["conditions"] = [
                {
                    "type": "FailureTarget",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                    "lastProbeTime": ts,
                    "lastTransitionTime": ts,
                },
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                    "lastProbeTime": ts,
                    "lastTransitionTime": ts,
                },
            ]
            for p in active:
                delete_obj(api, prt, p, "Background")
            st["active"] = 0
        elif not spec.get("suspend"):
            want = min(spec.get("parallelism", 1), completions - succeeded) - len(active)
            for _ in range(max(want, 0)):
                create_obj(
                    api,
                    PODS,
                    meta["namespace"],
                    _pod_from_template(jrt, job, spec.get("template") or {}),
                )
        for k in ("succeeded", "failed", "active", "ready", "terminating"):
            if not st.get(k) and k not in ("ready", "terminating"):
                st.pop(k, None)
        _set_status(api, jrt, job, st)


def _target_port(svc_port: dict[str, Any], pod: dict[str, Any]) -> int | None:
    tp = svc_port.get("targetPort", svc_port.get("port"))
    if isinstance(tp, int):
        return tp
    if isinstance(tp, str) and tp.isdigit():
        return int(tp)
    for c in pod.get("spec", {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == tp:
                return int(p["containerPort"])
    return None


def endpoints(api: Objects) -> None:
    """Publish EndpointSlices and Endpoints for Services with selectors."""
    srt, esrt, ert = (
        rt_of(api, ("", "services")),
        rt_of(api, ("discovery.k8s.io", "endpointslices")),
        rt_of(api, ("", "endpoints")),
    )
    assert srt is not None and esrt is not None and ert is not None
    services = {}
    for svc in list(api.store.items(srt.key)):
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        spec = svc.get("spec", {})
        if (
            svc["metadata"].get("deletionTimestamp")
            or not spec.get("selector")
            or spec.get("type") == "ExternalName"
        ):
            continue
        services[(ns, name)] = svc
        pods = [
            p
            for p in api.store.items(PODS, ns)
            if match_label_selector(
                {"matchLabels": spec["selector"]}, p["metadata"].get("labels") or {}
            )
            and p.get("status", {}).get("podIP")
            and p.get("status", {}).get("phase") not in TERMINAL
        ]
        ports = []
        for sp in spec.get("ports") or []:
            port = next((_target_port(sp, p) for p in pods if _target_port(sp, p)), None)
            entry = {"name": sp.get("name", ""), "protocol": sp.get("protocol", "TCP")}
            if port is not None:
                entry["port"] = port
            ports.append(entry)
        eps = []
        for p in pods:
            terminating = bool(p["metadata"].get("deletionTimestamp"))
            ready = _ready(p) and not terminating
            ep: dict[str, Any] = {
                "addresses": [p["status"]["podIP"]],
                "conditions": {"ready": ready, "serving": _ready(p), "terminating": terminating},
                "targetRef": {
                    "kind": "Pod",
                    "namespace": ns,
                    "name": p["metadata"]["name"],
                    "uid": p["metadata"]["uid"],
                },
            }
            if p["spec"].get("nodeName"):
                ep["nodeName"] = p["spec"]["nodeName"]
            eps.append(ep)
        _sync_slice(api, esrt, srt, svc, eps, ports)
        _sync_endpoints(api, ert, svc, pods, ports)
    for ep in list(api.store.items(ert.key)):
        key = (ep["metadata"]["namespace"], ep["metadata"]["name"])
        managed = (ep["metadata"].get("labels") or {}).get(
            "endpoints.kubernetes.io/managed-by"
        ) == "endpoint-controller"
        if managed and key not in services:
            delete_obj(api, ert, ep, "Background")


def _sync_slice(
    api: Objects,
    esrt: ResourceType,
    srt: ResourceType,
    svc: dict[str, Any],
    eps: list[dict[str, Any]],
    ports: list[dict[str, Any]],
) -> None:
    ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
    labels = {
        "kubernetes.io/service-name": name,
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    }
    existing = [
        s
        for s in _owned(api, esrt.key, svc)
        if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == name
    ]
    body = {"addressType": "IPv4", "endpoints": eps or None, "ports": ports or None}
    body = {k: v for k, v in body.items() if v is not None}
    if not existing:
        create_obj(
            api,
            esrt.key,
            ns,
            {
                "metadata": {
                    "generateName": f"{name}-",
                    "labels": labels,
                    "ownerReferences": [_owner_ref(srt, svc)],
                },
                **body,
            },
        )
        return
    cur = existing[0]
    if {k: cur.get(k) for k in ("addressType", "endpoints", "ports")} != {
        k: body.get(k) for k in ("addressType", "endpoints", "ports")
    }:
        view = api.view(esrt, cur)
        for k in ("endpoints", "ports"):
            view.pop(k, None)
        view.update(body)
        update_obj(api, esrt, view)


def _sync_endpoints(
    api: Objects,
    ert: ResourceType,
    svc: dict[str, Any],
    pods: list[dict[str, Any]],
    ports: list[dict[str, Any]],
) -> None:
    ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]

    def addr(p: dict[str, Any]) -> dict[str, Any]:
        a = {
            "ip": p["status"]["podIP"],
            "targetRef": {
                "kind": "Pod",
                "namespace": ns,
                "name": p["metadata"]["name"],
                "uid": p["metadata"]["uid"],
            },
        }
        if p["spec"].get("nodeName"):
            a["nodeName"] = p["spec"]["nodeName"]
        return a

    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    ready = [addr(p) for p in live if _ready(p)]
    not_ready = [addr(p) for p in live if not _ready(p)]
    subset: dict[str, Any] = {}
    if ready:
        subset["addresses"] = ready
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    eports = [{k: v for k, v in p.items() if k != "name" or v} for p in ports if "port" in p]
    if subset and eports:
        subset["ports"] = eports
    subsets = [subset] if subset and eports else []
    cur = api.store.get(ert.key, ns, name)
    labels = {
        **(svc["metadata"].get("labels") or {}),
        "endpoints.kubernetes.io/managed-by": "endpoint-controller",
    }
    if cur is None:
        body: dict[str, Any] = {"metadata": {"name": name, "labels": labels}}
        if subsets:
            body["subsets"] = subsets
        create_obj(api, ert.key, ns, body)
    elif (cur.get("subsets") or []) != subsets:
        view = api.view(ert, cur)
        view.pop("subsets", None)
        if subsets:
            view["subsets"] = subsets
        update_obj(api, ert, view)


RECONCILERS = [deployments, replicasets, daemonsets, jobs, endpoints]
