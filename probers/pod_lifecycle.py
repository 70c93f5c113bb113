"""The ``pod-lifecycle`` prober: a pod is created, scheduled, started, Ready, deleted and gone.

This is what every workload needs of a cluster, end to end: admission, the scheduler, a
kubelet pulling and starting a container, readiness, and graceful deletion. Each step is a
phase (``cleanup``, ``create``, ``schedule``, ``start``, ``ready``, ``delete``), exported as
``kubeprober_check_phase_duration_seconds{phase}``, and a failure says which step failed or
stalled and why: the scheduler's reason, the image pull error, the container's exit.

Pods carry the label ``kubeprober.io/lifecycle-of`` (a hash of the check's identity) and an
``activeDeadlineSeconds``; each run first deletes the pods earlier runs left (a run cut off by
its deadline, an agent that crashed), so nothing stays behind for longer than one interval.

``with:`` options:

- ``namespace``: where the pod runs (default: the Probe's namespace).
- ``image``: the container image (default ``registry.k8s.io/pause:3.10``, tiny and idle).
- ``command``: the container's command, for images without a long-running entrypoint.
- ``nodeSelector``: labels a node must have (to prove a node pool).
- ``readyWithin``: time from creation to Ready (default two thirds of the check's timeout);
  the rest of the timeout is for deletion.

ERROR: a step failed or stalled, or the API server (or an admission webhook) refused the pod.
UNKNOWN: the agent may not manage pods there (RBAC) or the API could not be reached.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubeprober.kube.resources import PODS
from kubeprober.probers.durations import format_duration
from kubeprober.probers.options import Duration, option
from kubeprober.probers.sdk import (
    JSON,
    CheckFailed,
    Context,
    KubeApiError,
    Outcome,
    WaitTimedOut,
    remove_leftovers,
)

DESCRIPTION = "Create a pod and see it scheduled, started and Ready, then deleted and gone."

PERMISSIONS = tuple(PODS.permission(verb) for verb in ("list", "watch", "create", "delete"))

LABEL = "kubeprober.io/lifecycle-of"
BROKEN_WAITING = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
}
"""Reasons a waiting container will not get past without someone's help."""


@dataclass(frozen=True)
class Spec:
    """Options of the ``pod-lifecycle`` prober."""

    namespace: str | None = option("namespace of the pod (default: the Probe's)", default=None)
    image: str = option("container image", default="registry.k8s.io/pause:3.10")
    command: tuple[str, ...] = option("container command (default: the image's)", default=())
    node_selector: dict[str, str] = option("labels the pod's node must have", default_factory=dict)
    ready_within: Duration | None = option(
        "time from creation to Ready (default: 2/3 of the timeout)", default=None, minimum=0.1
    )


# What Pod Security "restricted" asks of a pod and its containers (the service prober's too).
POD_SECURITY: JSON = {
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: JSON = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
}


def pod_body(spec: Spec, ctx: Context) -> JSON:
    """Return the pod to create: minimal, unprivileged (Pod Security "restricted")."""
    container: JSON = {
        "name": "probe",
        "image": spec.image,
        "resources": {"requests": {"cpu": "1m", "memory": "8Mi"}, "limits": {"memory": "32Mi"}},
        "securityContext": CONTAINER_SECURITY,
    }
    if spec.command:
        container["command"] = list(spec.command)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "kubeprober-lifecycle-",
            "labels": {LABEL: ctx.owner_id(), "app.kubernetes.io/managed-by": "kubeprober"},
            "annotations": {"kubeprober.io/check": f"{ctx.namespace}/{ctx.probe}/{ctx.check}"},
        },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "activeDeadlineSeconds": max(1, math.ceil(ctx.timeout)),
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "nodeSelector": dict(spec.node_selector),
            "securityContext": POD_SECURITY,
            "containers": [container],
        },
    }


def _condition(pod: JSON, kind: str) -> JSON:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def _containers(pod: JSON) -> list[JSON]:
    return list((pod.get("status") or {}).get("containerStatuses") or [])


def failure(pod: JSON) -> str | None:
    """Return why the pod will not become Ready by itself, or None while it still may."""
    for c in _containers(pod):
        state = c.get("state") or {}
        waiting, ended = state.get("waiting") or {}, state.get("terminated") or {}
        if waiting.get("reason") in BROKEN_WAITING:
            detail = f": {waiting['message']}" if waiting.get("message") else ""
            return f"container {c.get('name')}: {waiting['reason']}{detail}"
        if ended:
            reason = f" ({ended['reason']})" if ended.get("reason") else ""
            detail = f": {ended['message']}" if ended.get("message") else ""  # e.g. StartError's
            return f"container {c.get('name')} exited with {ended.get('exitCode')}{reason}{detail}"
    status = pod.get("status") or {}
    if status.get("phase") in ("Failed", "Succeeded"):
        why = status.get("reason") or status.get("phase")
        return f"pod {why}" + (f": {status['message']}" if status.get("message") else "")
    return None


def scheduled(pod: JSON) -> bool:
    """Tell whether the pod was bound to a node."""
    return bool((pod.get("spec") or {}).get("nodeName"))


def started(pod: JSON) -> bool:
    """Tell whether every container is running."""
    containers = _containers(pod)
    return bool(containers) and all("running" in (c.get("state") or {}) for c in containers)


def ready(pod: JSON) -> bool:
    """Tell whether the pod is Ready."""
    return _condition(pod, "Ready").get("status") == "True"


def stalled(step: str, pod: JSON | None) -> str:
    """Say what the pod was doing when ``step`` timed out."""
    if pod is None:
        return "the pod is gone"
    if step == "schedule":
        cond = _condition(pod, "PodScheduled")
        if cond.get("reason"):
            return f"{cond['reason']}: {cond.get('message', '')}".rstrip(": ")
        return "no scheduler bound it"
    waiting = [
        f"container {c.get('name')}: {(c.get('state') or {}).get('waiting', {}).get('reason')}"
        for c in _containers(pod)
        if "waiting" in (c.get("state") or {})
    ]
    if waiting:
        return ", ".join(waiting)
    if step == "ready":
        not_ready = [str(c.get("name")) for c in _containers(pod) if not c.get("ready")]
        return f"containers not ready: {', '.join(not_ready) or 'none reported'}"
    return f"phase {(pod.get('status') or {}).get('phase', 'unknown')}"


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Run a pod through its life and time each step."""
    begun = time.monotonic()
    namespace = spec.namespace or ctx.namespace
    ready_by = begun + (spec.ready_within or ctx.timeout * 2 / 3)
    label = ctx.owner_id()
    with ctx.phase("cleanup"):
        await remove_leftovers(ctx.kube, PODS, f"{LABEL}={label}", namespace=namespace)
    with ctx.phase("create"):
        try:
            created = await ctx.kube.create(PODS, pod_body(spec, ctx), namespace=namespace)
        except KubeApiError as exc:
            if exc.blames_cluster:
                raise CheckFailed(f"create failed: {exc}") from exc
            raise
    name = str(created["metadata"]["name"])
    where = f"pod {namespace}/{name}"
    took: dict[str, float] = {}
    deleted = False
    try:
        pod: JSON | None = created
        for step, reached in (("schedule", scheduled), ("start", started), ("ready", ready)):
            step_began = time.monotonic()
            with ctx.phase(step):
                pod = await _wait(
                    ctx, name, namespace, reached, step,
                    ready_by=ready_by, allowed=ready_by - begun, where=where,
                )  # fmt: skip
            took[step] = time.monotonic() - step_began
        node = str(((pod or {}).get("spec") or {}).get("nodeName", ""))
        step_began = time.monotonic()
        with ctx.phase("delete"):
            deleted = True
            await ctx.kube.delete(PODS, name, namespace=namespace)
            try:
                await ctx.kube.wait_for(PODS, name, lambda p: p is None, namespace=namespace)
            except WaitTimedOut as exc:
                waited = format_duration(round(time.monotonic() - step_began, 1))
                raise CheckFailed(
                    f"{where} deleted but still there after {waited}: {_why_kept(exc.last)}"
                ) from None
        took["delete"] = time.monotonic() - step_began
    finally:
        if not deleted:
            await _delete_quietly(ctx, name, namespace)
    steps = ", ".join(f"{s} {format_duration(round(t, 2))}" for s, t in took.items())
    return Outcome.passed(f"{where} on {node}: {steps}")


async def _wait(
    ctx: Context,
    name: str,
    namespace: str,
    reached: Callable[[JSON], bool],
    step: str,
    *,
    ready_by: float,
    allowed: float,
    where: str,
) -> JSON:
    """Wait until the pod reached ``step``; raise CheckFailed saying why it did not."""

    def decided(pod: JSON | None) -> bool:
        return pod is None or reached(pod) or failure(pod) is not None

    try:
        pod = await ctx.kube.wait_for(
            PODS, name, decided, namespace=namespace, within=max(0.0, ready_by - time.monotonic())
        )
    except WaitTimedOut as exc:
        raise CheckFailed(
            f"{where}: {step} stalled, not Ready within {format_duration(round(allowed, 1))}: "
            f"{stalled(step, exc.last)}"
        ) from None
    if pod is None:
        raise CheckFailed(f"{where}: deleted by someone else before the {step} step")
    if not reached(pod):
        raise CheckFailed(f"{where}: {step} failed: {failure(pod)}")
    return pod


def _why_kept(pod: JSON | None) -> str:
    if pod is None:
        return "gone at last"
    finalizers = (pod.get("metadata") or {}).get("finalizers") or []
    if finalizers:
        return f"finalizers {', '.join(finalizers)}"
    return "its kubelet has not confirmed the containers stopped"


async def _delete_quietly(ctx: Context, name: str, namespace: str) -> None:
    """Delete the pod after a failure; the next run removes it if this cannot."""
    try:
        await ctx.kube.delete(PODS, name, namespace=namespace)
    except (KubeApiError, TimeoutError, CheckFailed) as exc:
        ctx.log.info("pod %s/%s left for the next run to delete: %s", namespace, name, exc)
