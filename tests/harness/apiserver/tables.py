"""Server-side ``Table`` output: CRD printer columns and default columns for core kinds.

kubectl prints whatever columns the server sends, so ``kubectl get`` output in tests depends on
this module. Dates are rendered as ages on the server, as the apiserver does.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

from .resources import ResourceType
from .timeutil import human_age, parse

Row = list[Any]


def jsonpath(obj: Any, expr: str) -> list[Any]:
    """Evaluate the simple JSONPath subset printer columns use (.a.b, [n], [*], [?(@.k=="v")])."""
    expr = expr.strip()
    if expr.startswith("{") and expr.endswith("}"):
        expr = expr[1:-1]
    tokens = re.findall(r"\.([A-Za-z0-9_$-]+)|\[(\*|-?\d+|\?\(@\.[^)]*\))\]|\['([^']*)'\]", expr)
    cur = [obj]
    for name, index, quoted in tokens:
        nxt: list[Any] = []
        for v in cur:
            if name or quoted:
                key = name or quoted
                if isinstance(v, dict) and key in v:
                    nxt.append(v[key])
            elif index == "*":
                nxt.extend(
                    v if isinstance(v, list) else (v.values() if isinstance(v, dict) else [])
                )
            elif index.startswith("?"):
                m = re.fullmatch(r"\?\(@\.([A-Za-z0-9_.]+)\s*==\s*[\"']?([^\"']*)[\"']?\)", index)
                if m and isinstance(v, list):
                    field, want = m.groups()
                    nxt.extend(x for x in v if isinstance(x, dict) and str(_dig(x, field)) == want)
            elif isinstance(v, list):
                i = int(index)
                if -len(v) <= i < len(v):
                    nxt.append(v[i])
        cur = nxt
    return cur


def _dig(obj: Any, dotted: str) -> Any:
    for p in dotted.split("."):
        obj = obj.get(p) if isinstance(obj, dict) else None
    return obj


def _cell(value: Any, typ: str) -> Any:
    if typ == "date":
        return human_age(value) if isinstance(value, str) else None
    if typ == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        return (
            json.dumps(value, separators=(",", ":"))
            if isinstance(value, (dict, list))
            else str(value)
        )
    return value


def _col(
    name: str, typ: str = "string", fmt: str = "", desc: str = "", priority: int = 0
) -> dict[str, Any]:
    return {"name": name, "type": typ, "format": fmt, "description": desc, "priority": priority}


NAME = _col("Name", fmt="name", desc="Name must be unique within a namespace.")
AGE = _col(
    "Age",
    desc="CreationTimestamp is a timestamp representing the server time when "
    "this object was created.",
)


def _age(o: dict[str, Any]) -> str:
    return human_age(o["metadata"].get("creationTimestamp"))


def _pod_row(o: dict[str, Any]) -> Row:
    st = o.get("status", {})
    cs = st.get("containerStatuses") or []
    total = len(o.get("spec", {}).get("containers") or [])
    ready = sum(1 for c in cs if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in cs)
    reason = st.get("reason") or st.get("phase", "")
    for c in cs:
        state = c.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state and st.get("phase") not in ("Running",):
            reason = state["terminated"].get("reason") or reason
    if o["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return [
        o["metadata"]["name"],
        f"{ready}/{total}",
        reason,
        restarts,
        _age(o),
        st.get("podIP") or "<none>",
        o.get("spec", {}).get("nodeName") or "<none>",
        "<none>",
        "<none>",
    ]


def _svc_row(o: dict[str, Any]) -> Row:
    spec = o.get("spec", {})
    ports = (
        ",".join(
            f"{p['port']}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/"
            f"{p.get('protocol', 'TCP')}"
            for p in spec.get("ports") or []
        )
        or "<none>"
    )
    ext = ",".join(spec.get("externalIPs") or []) or (
        spec.get("externalName")
        or ("<pending>" if spec.get("type") == "LoadBalancer" else "<none>")
    )
    sel = ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items()) or "<none>"
    return [
        o["metadata"]["name"],
        spec.get("type"),
        spec.get("clusterIP") or "<none>",
        ext,
        ports,
        _age(o),
        sel,
    ]


def _deploy_row(o: dict[str, Any]) -> Row:
    st, spec = o.get("status", {}), o.get("spec", {})
    return [
        o["metadata"]["name"],
        f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        st.get("updatedReplicas", 0),
        st.get("availableReplicas", 0),
        _age(o),
    ]


def _job_row(o: dict[str, Any]) -> Row:
    st, spec = o.get("status", {}), o.get("spec", {})
    conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
    status = (
        "Complete"
        if conds.get("Complete") == "True"
        else ("Failed" if conds.get("Failed") == "True" else "Running")
    )
    duration = ""
    if st.get("startTime"):
        end = st.get("completionTime")
        seconds = int(
            (
                (parse(end) if end else dt.datetime.now(dt.UTC)) - parse(st["startTime"])
            ).total_seconds()
        )
        duration = f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"
    return [
        o["metadata"]["name"],
        status,
        f"{st.get('succeeded', 0)}/{spec.get('completions', 1)}",
        duration,
        _age(o),
    ]


def _ep_row(o: dict[str, Any]) -> Row:
    addrs = [
        f"{a['ip']}:{p['port']}"
        for s in o.get("subsets") or []
        for a in s.get("addresses") or []
        for p in s.get("ports") or []
    ]
    text = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [o["metadata"]["name"], text or "<none>", _age(o)]


def _slice_row(o: dict[str, Any]) -> Row:
    ports = ",".join(str(p.get("port", "<unset>")) for p in o.get("ports") or []) or "<unset>"
    addrs = [a for e in o.get("endpoints") or [] for a in e.get("addresses") or []]
    text = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [o["metadata"]["name"], o.get("addressType", ""), ports, text or "<unset>", _age(o)]


def _node_row(o: dict[str, Any]) -> Row:
    conds = {c["type"]: c["status"] for c in o.get("status", {}).get("conditions") or []}
    status = "Ready" if conds.get("Ready") == "True" else "NotReady"
    roles = (
        ",".join(
            k.split("/", 1)[1]
            for k in (o["metadata"].get("labels") or {})
            if k.startswith("node-role.kubernetes.io/")
        )
        or "<none>"
    )
    version = o.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")
    return [o["metadata"]["name"], status, roles, _age(o), version]


def _event_row(o: dict[str, Any]) -> Row:
    inv = o.get("involvedObject") or o.get("regarding") or {}
    last = o.get("lastTimestamp") or o.get("eventTime") or o["metadata"].get("creationTimestamp")
    return [
        human_age(last),
        o.get("type", ""),
        o.get("reason", ""),
        f"{inv.get('kind', '').lower()}/{inv.get('name', '')}",
        o.get("message") or o.get("note", ""),
    ]


DEFAULTS: dict[tuple[str, str], tuple[list[dict[str, Any]], Callable[[dict[str, Any]], Row]]] = {
    ("", "pods"): (
        [
            NAME,
            _col("Ready"),
            _col("Status"),
            _col("Restarts", "string"),
            AGE,
            _col("IP", priority=1),
            _col("Node", priority=1),
            _col("Nominated Node", priority=1),
            _col("Readiness Gates", priority=1),
        ],
        _pod_row,
    ),
    ("", "namespaces"): (
        [NAME, _col("Status"), AGE],
        lambda o: [o["metadata"]["name"], o.get("status", {}).get("phase"), _age(o)],
    ),
    ("", "services"): (
        [
            NAME,
            _col("Type"),
            _col("Cluster-IP"),
            _col("External-IP"),
            _col("Port(s)"),
            AGE,
            _col("Selector", priority=1),
        ],
        _svc_row,
    ),
    ("", "configmaps"): (
        [NAME, _col("Data", "integer"), AGE],
        lambda o: [
            o["metadata"]["name"],
            len(o.get("data") or {}) + len(o.get("binaryData") or {}),
            _age(o),
        ],
    ),
    ("", "secrets"): (
        [NAME, _col("Type"), _col("Data", "integer"), AGE],
        lambda o: [
            o["metadata"]["name"],
            o.get("type", "Opaque"),
            len(o.get("data") or {}),
            _age(o),
        ],
    ),
    ("", "nodes"): ([NAME, _col("Status"), _col("Roles"), AGE, _col("Version")], _node_row),
    ("", "events"): (
        [_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")],
        _event_row,
    ),
    ("apps", "deployments"): (
        [NAME, _col("Ready"), _col("Up-to-date", "integer"), _col("Available", "integer"), AGE],
        _deploy_row,
    ),
    ("apps", "replicasets"): (
        [
            NAME,
            _col("Desired", "integer"),
            _col("Current", "integer"),
            _col("Ready", "integer"),
            AGE,
        ],
        lambda o: [
            o["metadata"]["name"],
            o["spec"].get("replicas", 1),
            o.get("status", {}).get("replicas", 0),
            o.get("status", {}).get("readyReplicas", 0),
            _age(o),
        ],
    ),
    ("batch", "jobs"): (
        [NAME, _col("Status"), _col("Completions"), _col("Duration"), AGE],
        _job_row,
    ),
    ("", "endpoints"): ([NAME, _col("Endpoints"), AGE], _ep_row),
    ("discovery.k8s.io", "endpointslices"): (
        [NAME, _col("AddressType"), _col("Ports"), _col("Endpoints"), AGE],
        _slice_row,
    ),
    ("coordination.k8s.io", "leases"): (
        [NAME, _col("Holder"), AGE],
        lambda o: [o["metadata"]["name"], o.get("spec", {}).get("holderIdentity", ""), _age(o)],
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions"): (
        [NAME, _col("Created At", "date")],
        lambda o: [o["metadata"]["name"], o["metadata"].get("creationTimestamp")],
    ),
}


def columns_and_row(
    rt: ResourceType,
) -> tuple[list[dict[str, Any]], Callable[[dict[str, Any]], Row]]:
    """Return the column definitions and the row function for a resource type."""
    if rt.crd:
        cols = [c for c in rt.printer_columns or []]
        defs = [NAME] + [
            _col(
                c["name"],
                c.get("type", "string"),
                c.get("format", ""),
                c.get("description", ""),
                c.get("priority", 0),
            )
            for c in cols
        ]
        if not cols:
            defs.append(AGE)

        def crd_row(o: dict[str, Any]) -> Row:
            row: Row = [o["metadata"]["name"]]
            for c in cols:
                found = jsonpath(o, c["jsonPath"])
                row.append(_cell(found[0], c.get("type", "string")) if found else None)
            if not cols:
                row.append(_age(o))
            return row

        return defs, crd_row
    if rt.key in DEFAULTS:
        return DEFAULTS[rt.key]
    return [NAME, AGE], lambda o: [o["metadata"]["name"], _age(o)]


def wants_table(accept: str) -> bool:
    """Tell whether the Accept header asks for meta.k8s.io Table output."""
    return "as=Table" in accept.replace(" ", "")


def table(
    rt: ResourceType,
    objs: list[dict[str, Any]],
    *,
    rv: str,
    include: str = "Metadata",
    with_columns: bool = True,
    cont: str = "",
) -> dict[str, Any]:
    """Render objects as a meta.k8s.io/v1 Table."""
    defs, row = columns_and_row(rt)
    rows = []
    for o in objs:
        cells = row(o)
        if include == "Object":
            obj: Any = o
        elif include == "None":
            obj = None
        else:
            obj = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"],
            }
        rows.append({"cells": cells, "object": obj})
    meta: dict[str, Any] = {"resourceVersion": rv}
    if cont:
        meta["continue"] = cont
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": defs if with_columns else [],
        "rows": rows,
    }
