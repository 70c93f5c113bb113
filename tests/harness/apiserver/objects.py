"""What writes mean: metadata bookkeeping, status subresource split, generation, finalizers.

Both the HTTP handlers and the controllers write through :class:`Objects`, so a controller's
deletion follows the same finalizer rules as a client's.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
import uuid
from typing import Any

from . import defaults, events, patching, schema
from .errors import ApiError, already_exists, conflict, invalid, not_found
from .resources import Registry, ResourceType
from .store import Store
from .timeutil import now

_GEN_CHARS = "bcdfghjklmnpqrstvwxz2456789"
NS_KEY = ("", "namespaces")
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NO_NEW_FINALIZERS = "no new finalizers can be added if the object is being deleted"
POD_UPDATE_FORBIDDEN = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
    "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
    "set to 1 if it was previously negative)"
)


def random_suffix(n: int = 5) -> str:
    """Return the random name suffix the apiserver uses for generateName."""
    return "".join(random.choice(_GEN_CHARS) for _ in range(n))


class Objects:
    """Create, update, patch and delete with apiserver semantics; runs on the server loop."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self.alloc = defaults.Allocator()

    def view(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """Return a copy of obj as seen through rt's version."""
        out = copy.deepcopy(obj)
        if rt.group == "events.k8s.io":
            out = events.to_events_v1(out)
        out["apiVersion"] = rt.api_version
        out["kind"] = rt.kind
        return out

    def current(self, rt: ResourceType, ns: str, name: str) -> dict[str, Any]:
        """Return the stored object or raise 404."""
        obj = self.store.get(rt.key, ns if rt.namespaced else "", name)
        if obj is None:
            raise not_found(rt.group, rt.plural, name)
        return obj

    # -- create ---------------------------------------------------------------------------

    def create(
        self,
        rt: ResourceType,
        ns: str,
        body: Any,
        *,
        dry_run: bool = False,
        validation: str = "Warn",
        warnings: list[str] | None = None,
    ) -> dict[str, Any]:
        """Create an object; return what was stored."""
        obj = self._check_body(rt, body)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            if meta.get("namespace") and ns and meta["namespace"] != ns:
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request",
                )
            meta["namespace"] = ns
            self._check_namespace(ns)
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(
                    rt.kind,
                    rt.group,
                    "",
                    [
                        (
                            "metadata.name",
                            "FieldValueRequired",
                            "Required value: name or generateName is required",
                        )
                    ],
                )
            meta["name"] = meta["generateName"] + random_suffix()
        defaults.check_name(rt, meta["name"])
        defaults.check_labels(rt, obj)
        if self.store.get(rt.key, meta.get("namespace", ""), meta["name"]) is not None:
            raise already_exists(rt.group, rt.plural, meta["name"])
        for k in (
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "selfLink",
            "managedFields",
        ):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        if rt.generation:
            meta["generation"] = 1
        if rt.status_subresource and rt.crd:
            obj.pop("status", None)
        self._schema(rt, obj, validation, warnings)
        defaults.on_create(rt, obj, self.alloc)
        if dry_run:
            return obj
        stored = self.store.write(rt, obj, created=True)
        if rt.key == CRD_KEY:
            self.registry.register_crd(stored)
        return stored

    def _check_body(self, rt: ResourceType, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request is not a JSON object")
        kind, api_version = body.get("kind"), body.get("apiVersion")
        # Built-in kinds take both from the path when absent; custom resources must name them.
        if rt.crd and not kind:
            raise ApiError(
                400,
                f"the object provided is unrecognized (must be of type {rt.kind}): "
                f"Object 'Kind' is missing in '{json.dumps(body)}'",
            )
        versions = {
            f"{rt.group}/{v}" if rt.group else v for v in (rt.all_versions or (rt.version,))
        }
        if (api_version or rt.crd) and api_version not in versions:
            if rt.crd:
                raise ApiError(
                    400,
                    f"the API version in the data ({api_version or ''}) does not match "
                    f"the expected API version ({rt.api_version})",
                )
            raise ApiError(
                400,
                f'{kind or rt.kind} in version "{api_version}" cannot be handled as a {rt.kind}: '
                f'no kind "{kind or rt.kind}" is registered for version "{api_version}"',
            )
        if kind and kind != rt.kind:
            if rt.crd:  # the apiextensions server validates the kind field: a 422
                name = str((body.get("metadata") or {}).get("name", ""))
                why = f'Invalid value: "{kind}": must be {rt.kind}'
                raise invalid(kind, rt.group, name, [("kind", "FieldValueInvalid", why)])
            raise ApiError(
                400,
                f'{kind} in version "{rt.api_version}" cannot be handled as a {rt.kind}: '
                f"converting to {rt.kind}: unknown conversion",
            )
        obj = copy.deepcopy(body)
        if rt.group == "events.k8s.io":
            obj = events.to_core(obj)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        return obj

    def _check_namespace(self, ns: str) -> None:
        nso = self.store.get(NS_KEY, "", ns)
        if nso is None:
            raise not_found("", "namespaces", ns)
        if nso["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                f"unable to create new content in namespace {ns} because it is being terminated",
                reason="Forbidden",
                details={
                    "name": ns,
                    "kind": "namespaces",
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "message": f"namespace {ns} is being terminated",
                            "field": "metadata.namespace",
                        }
                    ],
                },
            )

    def _schema(
        self, rt: ResourceType, obj: dict[str, Any], validation: str, warnings: list[str] | None
    ) -> None:
        if not rt.schema:
            return
        dropped = schema.prune(obj, rt.schema)
        if dropped and validation == "Strict":
            fields = ", ".join(f'unknown field "{d}"' for d in dropped)
            raise ApiError(400, f"strict decoding error: {fields}")
        if dropped and validation == "Warn" and warnings is not None:
            warnings.extend(f'unknown field "{d}"' for d in dropped)
        errors = schema.validate(obj, rt.schema)
        if errors:
            raise invalid(rt.kind, rt.group, obj["metadata"].get("name", ""), errors)

    # -- update ---------------------------------------------------------------------------

    def update(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        validation: str = "Warn",
        warnings: list[str] | None = None,
    ) -> dict[str, Any]:
        """Replace an object (or its status); return what was stored."""
        old = self.current(rt, ns, name)
        new = self._check_body(rt, body)
        meta = new.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise ApiError(
                400,
                f"the name of the object ({meta.get('name')}) does not match "
                f"the name on the URL ({name})",
            )
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt.group, rt.plural, name)
        if subresource == "status" or (subresource is None and rt.status_subresource):
            new = self._split_status(rt, old, new, subresource)
            meta = new["metadata"]
        old_meta = old["metadata"]
        for k in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
            "generation",
        ):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        if old_meta.get("deletionTimestamp"):
            added = [
                f
                for f in meta.get("finalizers") or []
                if f not in (old_meta.get("finalizers") or [])
            ]
            if added:
                raise invalid(
                    rt.kind,
                    rt.group,
                    name,
                    [
                        (
                            "metadata.finalizers",
                            "FieldValueForbidden",
                            f"Forbidden: {NO_NEW_FINALIZERS}, found new finalizers {added}",
                        )
                    ],
                )
        if subresource != "status":
            defaults.check_labels(rt, new)
            self._schema(rt, new, validation, warnings)
            defaults.on_write(rt, new)
        self._immutable(rt, old, new)
        if rt.generation and _spec_part(rt, old) != _spec_part(rt, new):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        if new == old or dry_run:
            return old if new == old else new
        if self.finalized(rt, new):
            return self._remove(rt, new)
        if rt.key == CRD_KEY and subresource != "status":
            new["status"] = defaults.crd_status(new)
        stored = self.store.write(rt, new, created=False)
        if rt.key == CRD_KEY:
            self.registry.register_crd(stored)
        return stored

    def _split_status(
        self, rt: ResourceType, old: dict[str, Any], new: dict[str, Any], subresource: str | None
    ) -> dict[str, Any]:
        if subresource == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
            return result
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        else:
            new.pop("status", None)
        return new

    def _immutable(self, rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> None:
        if rt.key == ("", "services"):
            # ClusterIPs are allocated once and kept when an update leaves them out.
            for k in ("clusterIP", "clusterIPs"):
                if k in old.get("spec", {}) and k not in new.get("spec", {}):
                    new.setdefault("spec", {})[k] = old["spec"][k]
        if rt.key == ("", "pods"):
            old_spec, new_spec = old.get("spec", {}), new.get("spec", {})
            a = {
                k: v
                for k, v in old_spec.items()
                if k not in ("containers", "initContainers", "activeDeadlineSeconds", "tolerations")
            }
            b = {
                k: v
                for k, v in new_spec.items()
                if k not in ("containers", "initContainers", "activeDeadlineSeconds", "tolerations")
            }
            if a != b:
                raise invalid(
                    "Pod",
                    "",
                    old["metadata"]["name"],
                    [
                        (
                            "spec",
                            "FieldValueForbidden",
                            POD_UPDATE_FORBIDDEN,
                        )
                    ],
                )

    def finalized(self, rt: ResourceType, obj: dict[str, Any]) -> bool:
        """Tell whether an object marked for deletion has nothing left holding it."""
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp") or meta.get("finalizers"):
            return False
        if rt.key == NS_KEY:
            return not (obj.get("spec") or {}).get("finalizers")
        return not meta.get("deletionGracePeriodSeconds")

    # -- patch ----------------------------------------------------------------------------

    def patch(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        content_type: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        validation: str = "Warn",
        warnings: list[str] | None = None,
    ) -> dict[str, Any]:
        """Patch an object with a merge, JSON or strategic merge patch."""
        ct = content_type.split(";")[0].strip()
        if ct == "application/apply-patch+yaml":
            return self._apply(
                rt,
                ns,
                name,
                body,
                subresource=subresource,
                dry_run=dry_run,
                validation=validation,
                warnings=warnings,
            )
        old = self.view(rt, self.current(rt, ns, name))
        if ct == "application/merge-patch+json":
            new = patching.merge_patch(old, body)
        elif ct == "application/json-patch+json":
            new = patching.json_patch(old, body)
        elif ct == "application/strategic-merge-patch+json" and not rt.crd:
            new = patching.strategic_merge(old, body)
        else:
            accepted = (
                "application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml"
            )
            if not rt.crd:
                accepted += ", application/strategic-merge-patch+json"
            raise ApiError(
                415,
                f"the body of the request was in an unknown format - accepted "
                f"media types include: {accepted}",
            )
        if not isinstance(new, dict):
            raise ApiError(422, "patched object is not an object")
        patch_rv = isinstance(body, dict) and (body.get("metadata") or {}).get("resourceVersion")
        if not patch_rv:
            new.setdefault("metadata", {})["resourceVersion"] = old["metadata"]["resourceVersion"]
        return self.update(
            rt,
            ns,
            name,
            new,
            subresource=subresource,
            dry_run=dry_run,
            validation=validation,
            warnings=warnings,
        )

    def _apply(self, rt: ResourceType, ns: str, name: str, body: Any, **kw: Any) -> dict[str, Any]:
        """Approximate server-side apply: create, or strategic/merge-patch the applied fields."""
        if not isinstance(body, dict):
            raise ApiError(400, "apply patch must be an object")
        body = copy.deepcopy(body)
        body.setdefault("metadata", {})["name"] = name
        existing = self.store.get(rt.key, ns if rt.namespaced else "", name)
        if existing is None:
            if kw.get("subresource"):
                raise not_found(rt.group, rt.plural, name)
            return self.create(
                rt,
                ns,
                body,
                dry_run=kw["dry_run"],
                validation=kw["validation"],
                warnings=kw["warnings"],
            )
        body["metadata"].pop("resourceVersion", None)
        merge = patching.merge_patch if rt.crd else patching.strategic_merge
        new = merge(self.view(rt, existing), body)
        return self.update(rt, ns, name, new, **kw)

    # -- delete ---------------------------------------------------------------------------

    def delete(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        dry_run: bool = False,
    ) -> tuple[int, dict[str, Any]]:
        """Delete (or mark for deletion); return (HTTP code, object or Status)."""
        options = options or {}
        obj = copy.deepcopy(self.current(rt, ns, name))
        meta = obj["metadata"]
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise ApiError(
                409,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID "
                f"in object meta: {meta['uid']}",
                reason="Conflict",
                details={"name": name, "group": rt.group, "kind": rt.plural},
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise ApiError(
                409,
                "Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                f"{meta['resourceVersion']}",
                reason="Conflict",
                details={"name": name, "group": rt.group, "kind": rt.plural},
            )
        if dry_run:
            return 200, self.view(rt, obj)
        if rt.key == NS_KEY:
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = now()
                meta["deletionGracePeriodSeconds"] = 0
                obj["status"] = {**obj.get("status", {}), "phase": "Terminating"}
                obj = self.store.write(rt, obj, created=False)
            return 200, self.view(rt, obj)
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        policy = policy or rt.default_propagation
        finalizers = list(meta.get("finalizers") or [])
        if (
            policy == "Foreground"
            and "foregroundDeletion" not in finalizers
            and not meta.get("deletionTimestamp")
        ):
            finalizers.append("foregroundDeletion")
        if policy == "Orphan" and "orphan" not in finalizers and not meta.get("deletionTimestamp"):
            finalizers.append("orphan")
        grace = self._grace(rt, obj, options)
        if finalizers or grace:
            if (
                meta.get("deletionTimestamp")
                and grace >= int(meta.get("deletionGracePeriodSeconds") or 0)
                and finalizers == (meta.get("finalizers") or [])
            ):
                return 202 if finalizers else 200, self.view(rt, obj)
            if finalizers:
                meta["finalizers"] = finalizers
            when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=grace)
            meta["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            meta["deletionGracePeriodSeconds"] = grace
            if self.finalized(rt, obj):
                return 200, self._deleted_answer(rt, self._remove(rt, obj))
            obj = self.store.write(rt, obj, created=False)
            return 202 if finalizers else 200, self.view(rt, obj)
        return 200, self._deleted_answer(rt, self._remove(rt, obj))

    def _grace(self, rt: ResourceType, obj: dict[str, Any], options: dict[str, Any]) -> int:
        """Return the grace period: only pods bound to a node wait for their kubelet."""
        if rt.key != ("", "pods") or not obj.get("spec", {}).get("nodeName"):
            return 0
        if obj.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return 0
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = obj["spec"].get("terminationGracePeriodSeconds", 30)
        return max(int(grace), 0)

    def _deleted_answer(self, rt: ResourceType, gone: dict[str, Any]) -> dict[str, Any]:
        if rt.crd or rt.key == ("", "pods"):
            return self.view(rt, gone)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": gone["metadata"]["name"],
                "group": rt.group,
                "kind": rt.plural,
                "uid": gone["metadata"]["uid"],
            },
        }

    def _remove(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        if (
            self.store.get(rt.key, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            is None
        ):
            return obj
        gone = self.store.remove(rt, obj)
        if rt.key == ("", "services"):
            self.alloc.release(gone.get("spec", {}).get("clusterIP"))
        if rt.key == CRD_KEY:
            for crt in self.registry.crd_types.get(gone["metadata"]["name"], [])[:1]:
                self.store.drop_resource(crt)
            self.registry.unregister_crd(gone["metadata"]["name"])
        return gone

    def remove_now(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        """Delete for good, bypassing finalizers (namespace controller's last step)."""
        self._remove(rt, obj)


def _spec_part(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """Return what counts toward metadata.generation: all but metadata (and split status)."""
    skip = {"metadata", "apiVersion", "kind"}
    if rt.status_subresource:
        skip.add("status")
    return {k: v for k, v in obj.items() if k not in skip}
