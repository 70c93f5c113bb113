"""The ``nodes`` prober: every node Ready, schedulable, untainted, unpressured and in version skew.

A cluster degrades node by node long before it falls over: a NotReady kubelet, a node left
cordoned after maintenance, a taint nobody remembers, disk pressure evicting pods. This
prober reads the nodes once and names every bad one with what is wrong with it.

``with:`` options:

- ``labelSelector``: only the nodes with these labels (e.g. ``node-role.kubernetes.io/worker``).
- ``allowedTaints``: taint keys that are expected (default: the control-plane role's). Taints
  under ``node.kubernetes.io/`` are the node controller's own, mirroring the conditions and
  cordons reported here, and never counted twice.
- ``maxVersionSkew``: minor versions a kubelet may lag the API server (default 3, the
  Kubernetes policy since 1.28); a kubelet newer than the API server is always out of policy.
- ``minNodes``: fewer nodes than this is ERROR (default 1).

ERROR: a node NotReady, cordoned, with an unexpected NoSchedule/NoExecute taint or under
memory, disk or PID pressure, or fewer nodes than ``minNodes``. WARN: only version skew out of
policy (it works today; the next upgrade may not). A node list the API refuses is UNKNOWN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kubeprober.kube.resources import NODES
from kubeprober.probers.options import option
from kubeprober.probers.sdk import Context, Outcome

DESCRIPTION = "Every node Ready, schedulable, without unexpected taints, pressure or version skew."

PERMISSIONS = (NODES.permission("list"),)

CONTROLLER_TAINTS = "node.kubernetes.io/"
PRESSURES = ("MemoryPressure", "DiskPressure", "PIDPressure")
SHOWN = 10
"""Bad nodes named in a message; the rest are counted."""
_VERSION = re.compile(r"v?(\d+)\.(\d+)")


@dataclass(frozen=True)
class Spec:
    """Options of the ``nodes`` prober."""

    label_selector: str | None = option("only nodes matching this label selector", default=None)
    allowed_taints: tuple[str, ...] = option(
        "taint keys that are expected on nodes",
        default=("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"),
    )
    max_version_skew: int = option(
        "minor versions a kubelet may lag the API server", default=3, minimum=0
    )
    min_nodes: int = option("fewer nodes than this is ERROR", default=1, minimum=0)


def minor(version: str) -> tuple[int, int] | None:
    """Return (major, minor) of a version like ``v1.31.2-eks``, or None."""
    match = _VERSION.match(version)
    return (int(match[1]), int(match[2])) if match else None


def broken(node: dict[str, Any], allowed: tuple[str, ...]) -> list[str]:
    """Return what makes ``node`` unfit to run pods."""
    found = []
    conditions = {c.get("type"): c for c in (node.get("status") or {}).get("conditions") or []}
    ready = conditions.get("Ready") or {}
    if ready.get("status") != "True":
        why = ready.get("reason") or "no Ready condition"
        detail = f": {ready['message']}" if ready.get("message") else ""
        found.append(f"NotReady ({why}{detail})")
    found += [p for p in PRESSURES if (conditions.get(p) or {}).get("status") == "True"]
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        found.append("cordoned")
    for taint in spec.get("taints") or []:
        key = str(taint.get("key", ""))
        if taint.get("effect") == "PreferNoSchedule" or key.startswith(CONTROLLER_TAINTS):
            continue
        if key not in allowed:
            value = f"={taint['value']}" if taint.get("value") else ""
            found.append(f"taint {key}{value}:{taint.get('effect')}")
    return found


def skewed(node: dict[str, Any], server: tuple[int, int] | None, limit: int) -> str | None:
    """Return how the node's kubelet is out of version policy, or None."""
    version = str(((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", ""))
    kubelet = minor(version)
    if server is None or kubelet is None or kubelet[0] != server[0]:
        return None
    behind = server[1] - kubelet[1]
    if behind < 0:
        return f"kubelet {version} is newer than the API server"
    if behind > limit:
        return f"kubelet {version} is {behind} minor versions behind the API server (max {limit})"
    return None


def _listed(issues: dict[str, list[str]]) -> str:
    shown = [f"{name}: {', '.join(why)}" for name, why in sorted(issues.items())[:SHOWN]]
    more = len(issues) - SHOWN
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """List the nodes and judge each one."""
    with ctx.phase("list"):
        nodes = (await ctx.kube.list(NODES, label_selector=spec.label_selector))["items"]
        server_version = str((await ctx.kube.version()).get("gitVersion", ""))
    which = f" matching {spec.label_selector}" if spec.label_selector else ""
    if len(nodes) < spec.min_nodes:
        return Outcome.error(f"{len(nodes)} nodes{which}, expected at least {spec.min_nodes}")
    server = minor(server_version)
    errors: dict[str, list[str]] = {}
    warnings: dict[str, list[str]] = {}
    for node in nodes:
        name = str(node["metadata"]["name"])
        if bad := broken(node, spec.allowed_taints):
            errors[name] = bad
        if skew := skewed(node, server, spec.max_version_skew):
            (errors if name in errors else warnings).setdefault(name, []).append(skew)
    if errors:
        return Outcome.error(f"{len(errors)} of {len(nodes)} nodes unfit: {_listed(errors)}")
    if warnings:
        return Outcome.warn(
            f"API server {server_version}; {len(warnings)} of {len(nodes)} nodes out of "
            f"version policy: {_listed(warnings)}"
        )
    return Outcome.passed(f"{len(nodes)} nodes{which} Ready and schedulable")
