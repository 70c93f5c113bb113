"""Custom resources: served on creation, pruned, validated, printed with printer columns."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.harness.rawapi import call, watch
from tests.harness.waiting import wait_for

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def crd_body(group: str) -> dict[str, Any]:
    """Return a CRD with a status subresource, printer columns and a structural schema."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"gizmos.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "plural": "gizmos",
                "singular": "gizmo",
                "kind": "Gizmo",
                "shortNames": ["gz"],
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                        {"name": "State", "type": "string", "jsonPath": ".status.state"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "color": {"type": "string", "enum": ["red", "blue"]},
                                        "size": {"type": "integer", "minimum": 0},
                                        "with": {
                                            "type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True,
                                        },
                                    },
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"state": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


def _established(crd: dict[str, Any]) -> bool:
    """Tell whether a CRD's Established condition is True (status is null at first)."""
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


@contextlib.contextmanager
def gizmos_installed(api: client.ApiClient, group: str) -> Iterator[str]:
    """Create the Gizmo CRD in group, wait until it is served; delete it afterwards.

    The CRD is deleted even when waiting fails, so a failed set-up leaves nothing behind.
    """
    name = f"gizmos.{group}"
    made = call(api, "POST", CRDS, crd_body(group))
    assert made.status == 201, made.body
    try:
        query = {"fieldSelector": f"metadata.name={name}", "timeoutSeconds": 30}
        if not any(_established(ev["object"]) for ev in watch(api, CRDS, query=query)):
            raise AssertionError(f"CRD {name} never became Established")
        prefix = f"/apis/{group}/v1"
        wait_for(
            lambda: (
                call(api, "GET", prefix).status == 200
                and call(api, "GET", f"{prefix}/gizmos").status == 200
            ),
            what=f"{name} served",
        )
        yield prefix
    finally:
        call(api, "DELETE", f"{CRDS}/{name}")


@pytest.fixture
def gizmo_crd(kube_api: client.ApiClient) -> Iterator[str]:
    """Install the Gizmo CRD in a random group; return its API path prefix."""
    with gizmos_installed(kube_api, f"t{secrets.token_hex(3)}.kubeprober.test") as prefix:
        yield prefix


def gizmo(prefix: str, name: str, **spec: Any) -> dict[str, Any]:
    """Return a complete Gizmo body for the group version at prefix (/apis/GROUP/VERSION)."""
    return {
        "apiVersion": prefix.removeprefix("/apis/"),
        "kind": "Gizmo",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_crd_is_served_in_discovery(kube_api: client.ApiClient, gizmo_crd: str) -> None:
    """A created CRD appears in its group version's resource list with status."""
    names = {r["name"] for r in call(kube_api, "GET", gizmo_crd).body["resources"]}
    assert {"gizmos", "gizmos/status"} <= names


def test_unknown_fields_pruned_unless_preserved(
    kube_api: client.ApiClient, gizmo_crd: str, kube_namespace: str
) -> None:
    """Undeclared fields are dropped; a preserve-unknown-fields map keeps everything."""
    path = f"{gizmo_crd}/namespaces/{kube_namespace}/gizmos"
    body = gizmo(gizmo_crd, "p", color="red", bogus=1, **{"with": {"free": {"x": [1, 2]}}})
    body["extra"] = "top-level"
    made = call(kube_api, "POST", path, body)
    assert made.status == 201, made.body
    assert made.body["spec"] == {"color": "red", "with": {"free": {"x": [1, 2]}}}
    assert "extra" not in made.body
    assert 'unknown field \\"spec.bogus\\"' in made.headers.get("Warning", "")


def test_strict_field_validation_rejects_unknown(
    kube_api: client.ApiClient, gizmo_crd: str, kube_namespace: str
) -> None:
    """fieldValidation=Strict turns an unknown field into 400 BadRequest."""
    path = f"{gizmo_crd}/namespaces/{kube_namespace}/gizmos"
    ans = call(
        kube_api, "POST", path, gizmo(gizmo_crd, "s", bogus=1), query={"fieldValidation": "Strict"}
    )
    assert (ans.status, ans.reason) == (400, "BadRequest")
    assert 'unknown field "spec.bogus"' in ans.body["message"]


def test_schema_violations_are_invalid(
    kube_api: client.ApiClient, gizmo_crd: str, kube_namespace: str
) -> None:
    """Enum and minimum violations are 422 Invalid with one cause per field."""
    path = f"{gizmo_crd}/namespaces/{kube_namespace}/gizmos"
    ans = call(kube_api, "POST", path, gizmo(gizmo_crd, "v", color="green", size=-1))
    assert (ans.status, ans.reason) == (422, "Invalid")
    fields = sorted(c["field"] for c in ans.body["details"]["causes"])
    assert fields == ["spec.color", "spec.size"]


def test_status_subresource_and_generation(
    kube_api: client.ApiClient, gizmo_crd: str, kube_namespace: str
) -> None:
    """Status is dropped on create, written only via /status; spec changes bump generation."""
    path = f"{gizmo_crd}/namespaces/{kube_namespace}/gizmos"
    body = gizmo(gizmo_crd, "g", color="red")
    body["status"] = {"state": "ignored"}
    made = call(kube_api, "POST", path, body).body
    assert "status" not in made or "state" not in made["status"]
    assert made["metadata"]["generation"] == 1
    st = call(
        kube_api,
        "PATCH",
        f"{path}/g/status",
        {"status": {"state": "Ready"}},
        content_type="application/merge-patch+json",
    ).body
    assert st["status"] == {"state": "Ready"} and st["metadata"]["generation"] == 1
    sp = call(
        kube_api,
        "PATCH",
        f"{path}/g",
        {"spec": {"size": 2}, "status": {"state": "x"}},
        content_type="application/merge-patch+json",
    ).body
    assert sp["metadata"]["generation"] == 2 and sp["status"] == {"state": "Ready"}
    meta = call(
        kube_api,
        "PATCH",
        f"{path}/g",
        {"metadata": {"labels": {"a": "b"}}},
        content_type="application/merge-patch+json",
    ).body
    assert meta["metadata"]["generation"] == 2


def test_strategic_merge_on_custom_resource_is_415(
    kube_api: client.ApiClient, gizmo_crd: str, kube_namespace: str
) -> None:
    """Custom resources do not accept strategic merge patches."""
    path = f"{gizmo_crd}/namespaces/{kube_namespace}/gizmos"
    call(kube_api, "POST", path, gizmo(gizmo_crd, "m", color="blue"))
    ans = call(
        kube_api,
        "PATCH",
        f"{path}/m",
        {"spec": {"size": 1}},
        content_type="application/strategic-merge-patch+json",
    )
    assert (ans.status, ans.reason) == (415, "UnsupportedMediaType")


def test_printer_columns_table(
    kube_api: client.ApiClient, gizmo_crd: str, kube_namespace: str
) -> None:
    """A Table list uses the CRD's printer columns, with dates rendered as ages."""
    path = f"{gizmo_crd}/namespaces/{kube_namespace}/gizmos"
    call(kube_api, "POST", path, gizmo(gizmo_crd, "t", color="blue", size=3))
    call(
        kube_api,
        "PATCH",
        f"{path}/t/status",
        {"status": {"state": "Happy"}},
        content_type="application/merge-patch+json",
    )
    table = call(kube_api, "GET", path, accept=TABLE).body
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name",
        "Color",
        "Size",
        "State",
        "Age",
    ]
    (row,) = table["rows"]
    name, color, size, state, age = row["cells"]
    assert (name, color, size, state) == ("t", "blue", 3, "Happy")
    assert age.endswith("s")
    assert row["object"]["metadata"]["name"] == "t"


def test_core_kinds_have_default_table_columns(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """Core kinds print sensible columns (ConfigMap: Name, Data, Age)."""
    path = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    call(kube_api, "POST", path, {"metadata": {"name": "tbl"}, "data": {"a": "1", "b": "2"}})
    table = call(kube_api, "GET", f"{path}/tbl", accept=TABLE).body
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert table["rows"][0]["cells"][:2] == ["tbl", 2]


def test_deleting_the_crd_removes_its_objects(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """Once a CRD is deleted its resources are no longer served."""
    group = f"t{secrets.token_hex(3)}.kubeprober.test"
    with gizmos_installed(kube_api, group) as prefix:
        path = f"{prefix}/namespaces/{kube_namespace}/gizmos"
        made = call(kube_api, "POST", path, gizmo(prefix, "d", color="red"))
        assert made.status == 201, made.body
        call(kube_api, "DELETE", f"{CRDS}/gizmos.{group}")
        wait_for(lambda: call(kube_api, "GET", path).status == 404, what="gizmos no longer served")


def test_custom_resource_must_name_its_version_and_kind(
    kube_api: client.ApiClient, gizmo_crd: str, kube_namespace: str
) -> None:
    """A custom resource body without apiVersion or kind is 400 (built-in kinds default both)."""
    path = f"{gizmo_crd}/namespaces/{kube_namespace}/gizmos"
    body = gizmo(gizmo_crd, "n", color="red")
    del body["apiVersion"]
    ans = call(kube_api, "POST", path, body)
    assert (ans.status, ans.reason) == (400, "BadRequest")
    expected = gizmo_crd.removeprefix("/apis/")
    assert ans.body["message"] == (
        f"the API version in the data () does not match the expected API version ({expected})"
    )
    del body["kind"]
    ans = call(kube_api, "POST", path, body)
    assert (ans.status, ans.reason) == (400, "BadRequest")
    assert "Object 'Kind' is missing" in ans.body["message"]
    made = call(kube_api, "POST", path, gizmo(gizmo_crd, "n", color="red"))
    assert made.status == 201, made.body
    body = made.body
    del body["apiVersion"]
    ans = call(kube_api, "PUT", f"{path}/n", body)
    assert (ans.status, ans.reason) == (400, "BadRequest")
