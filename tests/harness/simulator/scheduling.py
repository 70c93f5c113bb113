"""The scheduler stand-in's filters: which simulated node a pod fits, and why none does.

As kube-scheduler's NodeUnschedulable, NodeAffinity (``nodeSelector`` and required node
affinity terms: label expressions and the ``metadata.name`` field, which DaemonSet pods use)
and TaintToleration filters, with its message for a pod no node fits ("0/1 nodes are
available: 1 node(s) were unschedulable."). Pure functions of the objects: no API calls, no
resources, no preferred affinity, no pod affinity, no preemption.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    """Tell whether one of ``tolerations`` tolerates ``taint``."""
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t["key"] == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def why_not(pod: dict[str, Any], node: dict[str, Any]) -> str | None:
    """Return why ``pod`` does not fit ``node`` in the scheduler's words, or None if it fits."""
    spec, node_spec = pod.get("spec") or {}, node.get("spec") or {}
    tolerations = spec.get("tolerations") or []
    if node_spec.get("unschedulable") and not tolerates(tolerations, UNSCHEDULABLE_TAINT):
        return "node(s) were unschedulable"
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return "node(s) didn't match Pod's node affinity/selector"
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if terms and not any(_term_matches(t, node) for t in terms):
        return "node(s) didn't match Pod's node affinity/selector"
    for taint in node_spec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
    return None


def _matches(requirement: dict[str, Any], value: str | None) -> bool:
    operator, values = requirement.get("operator"), requirement.get("values") or []
    if operator == "In":
        return value in values
    if operator == "NotIn":
        return value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    return False  # Gt, Lt: not simulated


def _term_matches(term: dict[str, Any], node: dict[str, Any]) -> bool:
    """Tell whether a nodeSelectorTerm (all its requirements) matches the node."""
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    fields = {"metadata.name": meta.get("name")}
    return all(
        _matches(r, labels.get(r.get("key"))) for r in term.get("matchExpressions") or []
    ) and all(_matches(r, fields.get(r.get("key"))) for r in term.get("matchFields") or [])


def unschedulable_message(pod: dict[str, Any], nodes: list[dict[str, Any]]) -> str:
    """Return the PodScheduled=False message for a pod none of ``nodes`` fits ("" if one does)."""
    reasons = [why_not(pod, n) for n in nodes]
    if not nodes or any(r is None for r in reasons):
        return "" if nodes else "0/0 nodes are available."
    counted = Counter(r for r in reasons if r)
    parts = ", ".join(f"{n} {reason}" for reason, n in sorted(counted.items()))
    return f"0/{len(nodes)} nodes are available: {parts}."
