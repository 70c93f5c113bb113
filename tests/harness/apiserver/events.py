"""Conversion between core/v1 Events and events.k8s.io/v1 Events, which share storage.

A real apiserver stores one Event and serves it through both APIs; clients that write one
shape and read the other (kubectl get events, our agent's recorder) must see the same objects.
"""

from __future__ import annotations

from typing import Any

# (events.k8s.io field, core field)
_RENAMES = (
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
)
_SAME = ("reason", "type", "action", "related", "eventTime", "series", "reportingInstance")


def to_events_v1(core: dict[str, Any]) -> dict[str, Any]:
    """Return the events.k8s.io/v1 shape of a stored core Event."""
    out: dict[str, Any] = {"metadata": core.get("metadata", {})}
    for new, old in _RENAMES:
        if old in core:
            out[new] = core[old]
    for k in _SAME:
        if k in core:
            out[k] = core[k]
    return out


def to_core(new: dict[str, Any]) -> dict[str, Any]:
    """Return the core/v1 shape of an events.k8s.io/v1 Event body."""
    out: dict[str, Any] = {"metadata": new.get("metadata", {})}
    for k in ("apiVersion", "kind"):
        if k in new:
            out[k] = new[k]
    for newk, old in _RENAMES:
        if newk in new:
            out[old] = new[newk]
    for k in _SAME:
        if k in new:
            out[k] = new[k]
    return out
