"""The controller-manager work tests rely on: garbage collection and namespace finalization.

A real kube-controller-manager acts a little after each change; so does this one (``delay``),
so tests that pass here do not depend on effects being synchronous with the write. Each pass
re-reads everything and writes only differences, so passes converge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from .errors import ApiError
from .objects import NS_KEY, Objects
from .resources import ResourceType
from .store import Event

log = logging.getLogger(__name__)

Reconciler = Callable[[Objects], None]


class ControllerManager:
    """Runs reconcilers on the server loop shortly after any change (and once a second)."""

    def __init__(
        self, api: Objects, reconcilers: list[Reconciler], *, delay: float, ca_pem: bytes
    ) -> None:
        self.api = api
        self.reconcilers = [gc, self.namespaces, *reconcilers]
        self.delay = delay
        self.ca_pem = ca_pem
        # Set by the store's listener (same loop), cleared by the run loop before a pass.
        self.dirty = asyncio.Event()
        api.store.listeners.append(self._changed)

    def _changed(self, event: Event) -> None:
        self.dirty.set()

    async def run(self) -> None:
        """Reconcile after each burst of changes until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dirty.wait(), 1.0)
            await asyncio.sleep(self.delay)
            self.dirty.clear()
            for rec in self.reconcilers:
                try:
                    rec(self.api)
                except Exception:
                    log.exception("controller %s failed", getattr(rec, "__name__", rec))

    def namespaces(self, api: Objects) -> None:
        """Seed new namespaces; empty terminating ones, then delete them."""
        ns_rt = rt_of(api, NS_KEY)
        for ns in list(api.store.items(NS_KEY)):
            name = ns["metadata"]["name"]
            if not ns["metadata"].get("deletionTimestamp"):
                self._seed(api, name)
                continue
            remaining = 0
            content: Counter[str] = Counter()
            finalizers: Counter[str] = Counter()
            for key in list(api.store.objects):
                rt = rt_of(api, key)
                if rt is None or not rt.namespaced:
                    continue
                for obj in list(api.store.items(key, name)):
                    remaining += 1
                    content[rt.key[1] if not rt.key[0] else f"{rt.key[1]}.{rt.key[0]}"] += 1
                    finalizers.update(obj["metadata"].get("finalizers") or [])
                    if not obj["metadata"].get("deletionTimestamp"):
                        delete_obj(api, rt, obj, "Background")
                    elif key == ("", "pods") and not _node_exists(api, obj):
                        # No kubelet will ever confirm this pod's end (pod GC would remove it).
                        api.remove_now(rt, obj)
            if remaining and ns_rt is not None:
                _report_remaining(api, ns_rt, ns, content, finalizers)
            if remaining == 0 and ns_rt is not None:
                obj = api.view(ns_rt, ns)
                obj["spec"]["finalizers"] = []
                if not obj["metadata"].get("finalizers"):
                    api.remove_now(ns_rt, obj)

    def _seed(self, api: Objects, ns: str) -> None:
        """Create the default ServiceAccount and kube-root-ca.crt, as controllers do."""
        if api.store.get(("", "serviceaccounts"), ns, "default") is None:
            create_obj(api, ("", "serviceaccounts"), ns, {"metadata": {"name": "default"}})
        if api.store.get(("", "configmaps"), ns, "kube-root-ca.crt") is None:
            create_obj(
                api,
                ("", "configmaps"),
                ns,
                {
                    "metadata": {
                        "name": "kube-root-ca.crt",
                        "annotations": {
                            "kubernetes.io/description": "Contains a CA bundle that can be used to "
                            "verify the kube-apiserver when using internal endpoints such as the "
                            "internal service IP or kubernetes.default.svc."
                        },
                    },
                    "data": {"ca.crt": self.ca_pem.decode()},
                },
            )


def gc(api: Objects) -> None:
    """Delete dependents whose owners are gone; honour foreground and orphan finalizers.

    As the real garbage collector: a foreground deletion deletes every dependent (foreground
    only for those that have dependents of their own) but waits only for the ones whose owner
    reference says ``blockOwnerDeletion: true``.
    """
    dependents: dict[str, list[tuple[ResourceType, dict[str, Any]]]] = {}
    for key in list(api.store.objects):
        rt = rt_of(api, key)
        if rt is None:
            continue
        for obj in list(api.store.items(key)):
            refs = obj["metadata"].get("ownerReferences") or []
            for ref in refs:
                dependents.setdefault(ref.get("uid", ""), []).append((rt, obj))
            if (
                refs
                and not obj["metadata"].get("deletionTimestamp")
                and not any(api.store.exists_uid(r.get("uid", "")) for r in refs)
            ):
                delete_obj(api, rt, obj, "Background")
    for key in list(api.store.objects):
        rt = rt_of(api, key)
        if rt is None:
            continue
        for obj in list(api.store.items(key)):
            meta = obj["metadata"]
            fins = meta.get("finalizers") or []
            if not meta.get("deletionTimestamp"):
                continue
            deps = [
                (drt, d)
                for drt, d in dependents.get(meta["uid"], [])
                if api.store.get(drt.key, d["metadata"].get("namespace", ""), d["metadata"]["name"])
                is not None
            ]
            if "orphan" in fins:
                for drt, d in deps:
                    dv = api.view(drt, d)
                    dv["metadata"]["ownerReferences"] = [
                        r
                        for r in dv["metadata"].get("ownerReferences") or []
                        if r.get("uid") != meta["uid"]
                    ]
                    update_obj(api, drt, dv)
                _drop_finalizer(api, rt, obj, "orphan")
            elif "foregroundDeletion" in fins:
                for drt, d in deps:
                    if not d["metadata"].get("deletionTimestamp"):
                        policy = (
                            "Foreground" if dependents.get(d["metadata"]["uid"]) else "Background"
                        )
                        delete_obj(api, drt, d, policy)
                # The owner waits only for dependents that block its deletion.
                if not any(_blocks(d, meta["uid"]) for _, d in deps):
                    _drop_finalizer(api, rt, obj, "foregroundDeletion")


def _report_remaining(
    api: Objects,
    rt: ResourceType,
    ns: dict[str, Any],
    content: Counter[str],
    finalizers: Counter[str],
) -> None:
    """Set the conditions a real namespace controller sets while content remains."""
    now = ns["metadata"]["deletionTimestamp"]
    resources = ", ".join(f"{r} has {n} resource instances" for r, n in sorted(content.items()))
    held = ", ".join(f"{f} in {n} resource instances" for f, n in sorted(finalizers.items()))
    conditions = [
        {
            "type": "NamespaceContentRemaining",
            "status": "True",
            "reason": "SomeResourcesRemain",
            "message": f"Some resources are remaining: {resources}",
            "lastTransitionTime": now,
        }
    ]
    if finalizers:
        conditions.append(
            {
                "type": "NamespaceFinalizersRemaining",
                "status": "True",
                "reason": "SomeFinalizersRemain",
                "message": f"Some content in the namespace has finalizers remaining: {held}",
                "lastTransitionTime": now,
            }
        )
    status = {**(ns.get("status") or {}), "phase": "Terminating", "conditions": conditions}
    if ns.get("status") != status:
        view = api.view(rt, ns)
        view["status"] = status
        update_obj(api, rt, view, status=True)


def _blocks(dependent: dict[str, Any], owner_uid: str) -> bool:
    """Tell whether dependent's reference to the owner has blockOwnerDeletion set."""
    refs = dependent["metadata"].get("ownerReferences") or []
    return any(r.get("uid") == owner_uid and r.get("blockOwnerDeletion") for r in refs)


def _drop_finalizer(api: Objects, rt: ResourceType, obj: dict[str, Any], name: str) -> None:
    cur = api.store.get(rt.key, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
    if cur is None:
        return
    view = api.view(rt, cur)
    view["metadata"]["finalizers"] = [
        f for f in view["metadata"].get("finalizers") or [] if f != name
    ]
    update_obj(api, rt, view)


def rt_of(api: Objects, key: tuple[str, str]) -> ResourceType | None:
    return api.registry.by_key(key)


def _node_exists(api: Objects, pod: dict[str, Any]) -> bool:
    node = pod.get("spec", {}).get("nodeName")
    return bool(node) and api.store.get(("", "nodes"), "", node) is not None


def delete_obj(api: Objects, rt: ResourceType, obj: dict[str, Any], policy: str) -> None:
    try:
        api.delete(
            rt,
            obj["metadata"].get("namespace", ""),
            obj["metadata"]["name"],
            {"propagationPolicy": policy},
        )
    except ApiError as err:
        if err.code != 404:
            log.warning("delete %s: %s", obj["metadata"]["name"], err.message)


def update_obj(
    api: Objects, rt: ResourceType, obj: dict[str, Any], *, status: bool = False
) -> None:
    try:
        api.update(
            rt,
            obj["metadata"].get("namespace", ""),
            obj["metadata"]["name"],
            obj,
            subresource="status" if status else None,
        )
    except ApiError as err:
        if err.code not in (404, 409):
            log.warning("update %s: %s", obj["metadata"]["name"], err.message)


def create_obj(
    api: Objects, key: tuple[str, str], ns: str, obj: dict[str, Any]
) -> dict[str, Any] | None:
    rt = rt_of(api, key)
    assert rt is not None
    try:
        return api.create(rt, ns, obj)
    except ApiError as err:
        if err.code not in (403, 404, 409):
            log.warning("create in %s: %s", ns, err.message)
        return None
