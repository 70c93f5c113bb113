"""The ``addons`` prober: the cluster's core components run as many ready pods as they should.

CoreDNS, kube-proxy, the CNI's DaemonSet, an ingress controller: when one of them runs short
of ready pods, everything built on it degrades (names stop resolving, Services stop routing,
new pods get no network). This prober reads each component and compares ready with desired
pods; a Deployment must also be Available. Phase: ``read``.

``with:`` options:

- ``components``: ``kind/namespace/name`` items, ``kind`` being ``deployment`` or ``daemonset``
  (default: ``deployment/kube-system/coredns`` and ``daemonset/kube-system/kube-proxy``; add
  your CNI's DaemonSet and ingress controller, drop what your cluster does without).

ERROR: a component is missing, has fewer ready pods than desired, schedules no pod at all
(DaemonSet) or is not Available (Deployment). A read the API refuses is UNKNOWN.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from kubeprober.kube.resources import DAEMONSETS, DEPLOYMENTS, Resource
from kubeprober.probers.options import SpecError, option, shown
from kubeprober.probers.sdk import JSON, Context, KubeApiError, Outcome

DESCRIPTION = "Core components (CoreDNS, kube-proxy, CNI, ingress) have every desired pod ready."

PERMISSIONS = (DEPLOYMENTS.permission("get"), DAEMONSETS.permission("get"))

KINDS: dict[str, Resource] = {"deployment": DEPLOYMENTS, "daemonset": DAEMONSETS}


@dataclass(frozen=True)
class Spec:
    """Options of the ``addons`` prober."""

    components: tuple[str, ...] = option(
        "kind/namespace/name of each component (kind: deployment or daemonset)",
        default=("deployment/kube-system/coredns", "daemonset/kube-system/kube-proxy"),
    )

    def __post_init__(self) -> None:
        for i, item in enumerate(self.components):
            parts = item.split("/")
            if len(parts) != 3 or parts[0] not in KINDS or not all(parts):
                raise SpecError(
                    f"components[{i}]",
                    f"expected deployment/NAMESPACE/NAME or daemonset/NAMESPACE/NAME, "
                    f"got {shown(item)}",
                )


def judge(kind: str, obj: JSON) -> str | None:
    """Return what is wrong with a component, or None when it is healthy."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if kind == "daemonset":
        desired, ready = status.get("desiredNumberScheduled", 0), status.get("numberReady", 0)
        if not desired:
            return "schedules no pod (no node matches it, or its controller has not run)"
        return f"{ready}/{desired} ready" if ready < desired else None
    desired, ready = spec.get("replicas", 1), status.get("readyReplicas", 0)
    available: JSON = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Available"), {}
    )
    problems = [f"{ready}/{desired} ready"] if ready < desired else []
    if available.get("status") != "True":
        why = available.get("reason") or "no Available condition"
        detail = f": {available['message']}" if available.get("message") else ""
        problems.append(f"not Available ({why}{detail})")
    return ", ".join(problems) or None


async def _check(ctx: Context, item: str) -> str | None:
    kind, namespace, name = item.split("/")
    try:
        obj = await ctx.kube.get(KINDS[kind], name, namespace=namespace)
    except KubeApiError as exc:
        if exc.code == 404:
            return f"{kind} {namespace}/{name}: not found"
        raise
    problem = judge(kind, obj)
    return f"{kind} {namespace}/{name}: {problem}" if problem else None


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Read every component and judge it."""
    with ctx.phase("read"):
        found = await asyncio.gather(*(_check(ctx, item) for item in spec.components))
    problems = [p for p in found if p]
    if problems:
        return Outcome.error("; ".join(problems))
    return Outcome.passed(f"{len(spec.components)} components with every desired pod ready")
