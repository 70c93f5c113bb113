"""The fast /status path (cached per-cluster JSON) says exactly what the dict path says."""

from __future__ import annotations

import json
import time
from typing import Any

from kubeprober.aggregator.views import (
    ClusterView,
    rendered_entry,
    unified_status,
    unified_status_bytes,
)


def report(status: str, layer: str = "middleware") -> dict[str, Any]:
    """An agent's one-cluster entry with a single check."""
    check = {
        "name": "c",
        "status": status,
        "message": "" if status == "PASS" else "boom",
        "lastRun": None,
        "durationSeconds": 0.1,
        "consecutiveFailures": 0,
        "lastTransitionTime": None,
    }
    probe = {
        "namespace": "ns",
        "name": "p",
        "layer": layer,
        "status": status,
        "message": "",
        "lastRun": None,
        "nextRun": None,
        "stale": False,
        "checks": [check],
    }
    return {
        "agentVersion": "1",
        "kubernetesVersion": None,
        "nodeCount": None,
        "assignmentRevision": 7,
        "probes": [probe],
    }


def fleet(now: float) -> list[ClusterView]:
    """Online, offline and never-seen clusters."""
    return [
        ClusterView("a", connected=True, last_seen=now - 1, report=report("ERROR")),
        ClusterView("b", connected=False, last_seen=now - 100, report=report("PASS", "kubernetes")),
        ClusterView("c", maintenance=True),
        ClusterView("d", connected=True, last_seen=now - 2, report=report("WARN")),
    ]


def test_bytes_path_equals_dict_path() -> None:
    now = time.time()
    views = fleet(now)
    fast = json.loads(unified_status_bytes(views, ttl=30, now=now))
    assert fast == unified_status(views, ttl=30, now=now)
    assert fast["summary"]["status"] == "ERROR"
    assert [c["state"] for c in fast["clusters"]] == ["Online", "Offline", "Pending", "Online"]


def test_empty_fleet_renders_unknown() -> None:
    now = time.time()
    assert json.loads(unified_status_bytes([], ttl=30, now=now)) == unified_status(
        [], ttl=30, now=now
    )


def test_entry_is_rendered_again_only_when_something_changed() -> None:
    now = time.time()
    view = ClusterView("a", connected=True, last_seen=now, report=report("PASS"))
    first, _ = rendered_entry(view, now=now, ttl=30)
    assert rendered_entry(view, now=now + 1, ttl=30)[0] is first
    view.report, view.revision = report("ERROR"), view.revision + 1
    assert b'"ERROR"' in rendered_entry(view, now=now + 1, ttl=30)[0]
    view.connected = False  # state changes without a new report
    assert b'"Offline"' in rendered_entry(view, now=now + 1, ttl=30)[0]
