"""``/version``, API discovery and the OpenAPI v3 documents kubectl reads before it writes.

kubectl decides from these whether a kind exists, whether it is namespaced, and whether the
server validates fields itself (``fieldValidation`` on PATCH in OpenAPI v3); without the latter
it would try client-side validation against ``/openapi/v2``, which is not served here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resources import Registry, ResourceType

VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-kubeprober-test",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def api_versions() -> dict[str, Any]:
    """Return the /api answer."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}
        ],
    }


def api_groups(reg: Registry) -> dict[str, Any]:
    """Return the /apis answer."""
    groups = []
    for group, versions in reg.group_versions().items():
        vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        groups.append({"name": group, "versions": vs, "preferredVersion": vs[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(reg: Registry, group: str) -> dict[str, Any] | None:
    """Return the /apis/<group> answer, or None when not served."""
    versions = reg.group_versions().get(group)
    if not versions:
        return None
    vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": vs,
        "preferredVersion": vs[0],
    }


def resource_list(reg: Registry, group: str, version: str) -> dict[str, Any] | None:
    """Return the APIResourceList of one group version, or None when not served."""
    rts = reg.in_group_version(group, version)
    if not rts:
        return None
    resources: list[dict[str, Any]] = []
    for rt in sorted(rts, key=lambda r: r.plural):
        entry = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": _VERBS,
            "storageVersionHash": _hash(rt),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        resources.append(entry)
        if rt.status_subresource:
            resources.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        for sub in rt.extra_subresources:
            kind = {"binding": "Binding", "eviction": "Eviction", "scale": "Scale"}.get(
                sub, rt.kind
            )
            group_ = "autoscaling" if sub == "scale" else None
            item = {
                "name": f"{rt.plural}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": kind,
                "verbs": ["create"]
                if sub in ("binding", "eviction")
                else ["get", "patch", "update"],
            }
            if group_:
                item.update(group=group_, version="v1")
            resources.append(item)
    gv = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }


def _hash(rt: ResourceType) -> str:
    return hashlib.sha256(f"{rt.group}/{rt.version}/{rt.plural}".encode()).hexdigest()[:11]


def openapi_root(reg: Registry) -> dict[str, Any]:
    """Return /openapi/v3: one entry per served group version."""
    paths: dict[str, Any] = {"api/v1": {}}
    for group, versions in reg.group_versions().items():
        for v in versions:
            paths[f"apis/{group}/{v}"] = {}
    for p in paths:
        digest = (
            hashlib.sha256(json.dumps(openapi_doc(reg, p) or {}, sort_keys=True).encode())
            .hexdigest()[:16]
            .upper()
        )
        paths[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash={digest}"}
    return {"paths": paths}


def openapi_doc(reg: Registry, path: str) -> dict[str, Any] | None:
    """Return the OpenAPI v3 document of one group version ("api/v1", "apis/g/v")."""
    parts = path.strip("/").split("/")
    if parts == ["api", "v1"]:
        group, version = "", "v1"
    elif len(parts) == 3 and parts[0] == "apis":
        group, version = parts[1], parts[2]
    else:
        return None
    rts = reg.in_group_version(group, version)
    if not rts:
        return None
    params = [
        {"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
        for n in ("dryRun", "fieldManager", "fieldValidation", "force")
    ]
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    prefix = f"/apis/{group}/{version}" if group else "/api/v1"
    for rt in rts:
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        name = _schema_name(rt)
        ref = {"$ref": f"#/components/schemas/{name}"}
        body = {"content": {"application/json": {"schema": ref}}}
        # Strategic merge is not advertised: kubectl then builds its patches from its
        # compiled-in types (which carry merge keys) instead of our schema-less documents.
        patch_types = [
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ]
        ns = "/namespaces/{namespace}" if rt.namespaced else ""
        op = {"x-kubernetes-group-version-kind": gvk}
        paths[f"{prefix}{ns}/{rt.plural}/{{name}}"] = {
            "get": {**op, "x-kubernetes-action": "get", "responses": {"200": body}},
            "put": {
                **op,
                "x-kubernetes-action": "put",
                "parameters": params,
                "requestBody": body,
                "responses": {"200": body},
            },
            "patch": {
                **op,
                "x-kubernetes-action": "patch",
                "parameters": params,
                "requestBody": {
                    "content": {t: {"schema": {"type": "object"}} for t in patch_types}
                },
                "responses": {"200": body},
            },
            "delete": {**op, "x-kubernetes-action": "delete", "responses": {"200": body}},
        }
        paths[f"{prefix}{ns}/{rt.plural}"] = {
            "post": {
                **op,
                "x-kubernetes-action": "post",
                "parameters": params,
                "requestBody": body,
                "responses": {"201": body},
            },
        }
        schema = dict(rt.schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
        schema["x-kubernetes-group-version-kind"] = [gvk]
        schemas[name] = schema
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _schema_name(rt: ResourceType) -> str:
    if rt.crd:
        rev = ".".join(reversed(rt.group.split(".")))
        return f"{rev}.{rt.version}.{rt.kind}"
    group = rt.group.split(".")[0] if rt.group else "core"
    return f"io.k8s.api.{group}.{rt.version}.{rt.kind}"
