"""The /status document of docs/contracts.md, spelled once for every test that checks its shape."""

from __future__ import annotations

import re
from typing import Any

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
SUMMARY_KEYS = {"status", "total", "pending", "byStatus"}
CLUSTER_KEYS = {
    "name",
    "state",
    "lastSeen",
    "agentVersion",
    "kubernetesVersion",
    "nodeCount",
    "assignmentRevision",
    "apiProxy",
    "summary",
    "layers",
    "configErrors",
    "probes",
}
PROBE_KEYS = {
    "namespace",
    "name",
    "layer",
    "status",
    "message",
    "lastRun",
    "nextRun",
    "stale",
    "configError",
    "checks",
    "targets",
}
CHECK_KEYS = {
    "name",
    "status",
    "pending",
    "message",
    "lastRun",
    "durationSeconds",
    "consecutiveFailures",
    "lastTransitionTime",
}


def pending_check(name: str) -> dict[str, Any]:
    """A check as an agent reports it before its first result."""
    return {
        "name": name,
        "status": None,
        "pending": True,
        "message": "no result yet",
        "lastRun": None,
        "durationSeconds": None,
        "consecutiveFailures": 0,
        "lastTransitionTime": None,
    }
