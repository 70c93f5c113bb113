"""The ``namespace`` prober: a namespace is created and deleted, and gone within the deadline.

Namespaces are how teams and pipelines get a place to work, and they break quietly: an
admission webhook that is down refuses every new one, an aggregated API that does not answer
or a finalizer nobody removes leaves deleted ones Terminating forever. This prober creates a
namespace of its own, deletes it and waits until it is gone; phases ``cleanup``, ``create`` and
``delete``. A namespace that stays Terminating is reported with the namespace controller's own
conditions (which content, which finalizers).

Namespaces are labelled ``kubeprober.io/namespace-of`` (a hash of the check's identity); each
run first deletes those earlier runs left behind.

``with:`` options:

- ``prefix``: the start of the generated names (default ``kubeprober-ns-``).
- ``labels``: more labels for the namespace (e.g. the ones admission policies look at).

ERROR: the namespace was refused by the API server or an admission webhook, or is still there
at the deadline. UNKNOWN: the agent may not manage namespaces (RBAC) or the API was away.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from kubeprober.kube.resources import NAMESPACES
from kubeprober.probers.durations import format_duration
from kubeprober.probers.options import SpecError, option, shown
from kubeprober.probers.sdk import (
    JSON,
    CheckFailed,
    Context,
    KubeApiError,
    Outcome,
    WaitTimedOut,
    remove_leftovers,
)

DESCRIPTION = "Create a namespace and delete it: admission works and deletion completes in time."

PERMISSIONS = tuple(NAMESPACES.permission(verb) for verb in ("list", "watch", "create", "delete"))

LABEL = "kubeprober.io/namespace-of"
_PREFIX = re.compile(r"[a-z][a-z0-9-]{0,49}")
STUCK = (
    "NamespaceDeletionDiscoveryFailure",
    "NamespaceDeletionGroupVersionParsingFailure",
    "NamespaceDeletionContentFailure",
    "NamespaceContentRemaining",
    "NamespaceFinalizersRemaining",
)
"""The namespace controller's conditions that say why a deletion does not finish."""


@dataclass(frozen=True)
class Spec:
    """Options of the ``namespace`` prober."""

    prefix: str = option("start of the generated namespace names", default="kubeprober-ns-")
    labels: dict[str, str] = option("more labels for the namespace", default_factory=dict)

    def __post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise SpecError(
                "prefix",
                f"expected up to 50 lower-case letters, digits and '-', starting with a "
                f"letter, got {shown(self.prefix)}",
            )


def why_stuck(namespace: JSON | None) -> str:
    """Say why a deleted namespace is still there, from its controller's conditions."""
    if namespace is None:
        return "gone at last"
    conditions = (namespace.get("status") or {}).get("conditions") or []
    reasons = [
        f"{c['type']}: {c.get('message', '')}"
        for c in conditions
        if c.get("type") in STUCK and c.get("status") == "True"
    ]
    return "; ".join(reasons) or "the namespace controller has not said why yet"


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Create, delete and wait."""
    label = ctx.owner_id()
    with ctx.phase("cleanup"):
        await remove_leftovers(ctx.kube, NAMESPACES, f"{LABEL}={label}")
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "generateName": spec.prefix,
            "labels": {**spec.labels, LABEL: label, "app.kubernetes.io/managed-by": "kubeprober"},
        },
    }
    began = time.monotonic()
    with ctx.phase("create"):
        try:
            created = await ctx.kube.create(NAMESPACES, body)
        except KubeApiError as exc:
            if exc.blames_cluster:
                raise CheckFailed(f"namespace creation refused: {exc}") from exc
            raise
    name = str(created["metadata"]["name"])
    created_in = time.monotonic() - began
    began = time.monotonic()
    with ctx.phase("delete"):
        try:
            await ctx.kube.delete(NAMESPACES, name)
        except KubeApiError as exc:
            if exc.blames_cluster:
                raise CheckFailed(f"namespace {name}: deletion refused: {exc}") from exc
            raise
        try:
            await ctx.kube.wait_for(NAMESPACES, name, lambda ns: ns is None)
        except WaitTimedOut as exc:
            waited = format_duration(round(time.monotonic() - began, 1))
            raise CheckFailed(
                f"namespace {name} still Terminating {waited} after its deletion: "
                f"{why_stuck(exc.last)}"
            ) from None
    deleted_in = time.monotonic() - began
    return Outcome.passed(
        f"namespace {name} created in {format_duration(round(created_in, 2))}, "
        f"gone {format_duration(round(deleted_in, 2))} after its deletion"
    )
