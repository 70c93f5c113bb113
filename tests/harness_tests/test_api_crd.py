"""Custom resources: served on creation, pruned, validated, printed with printer columns."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.harness.rawapi import call

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


@pytest.fixture
def gizmo_crd(kube_api: client.ApiClient) -> Iterator[str]:
    """Create a CRD in a random group, wait until Established; return its API path prefix."""
    group = f"t{secrets.token_hex(3)}.kubeprober.test"
    assert call(kube_api, "POST", CRDS, crd_body(group)).status == 201
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        crd = call(kube_api, "GET", f"{CRDS}/gizmos.{group}").body
        conds = {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])}
        served = call(kube_api, "GET", f"/apis/{group}/v1").status == 200
        if conds.get("Established") == "True" and served:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("CRD never became Established")
    try:
        yield f"/apis/{group}/v1"
    finally:
        call(kube_api, "DELETE", f"{CRDS}/gizmos.{group}")


def gizmo(name: str, **spec: Any) -> dict[str, Any]:
    """Return a Gizmo body (apiVersion filled in by the caller's path)."""
    return {"kind": "Gizmo", "metadata": {"name": name}, "spec": spec}


def test_crd_is_served_in_discovery(kube_api: client.ApiClient, gizmo_crd: str) -> None:
    """A created CRD appears in its group version's resource list with status."""
    names = {r["name"] for r in call(kube_api, "GET", gizmo_crd).body["resources"]}
    assert {"gizmos", "gizmos/status"} <= names


def test_unknown_fields_pruned_unless_preserved(
    kube_api: client.ApiClient, gizmo_crd: str, kube_namespace: str
) -> None:
    """Undeclared fields are dropped; a preserve-unknown-fields map keeps everything."""
    path = f"{gizmo_crd}/namespaces/{kube_namespace}/gizmos"
    body = gizmo("p", color="red", bogus=1, **{"with": {"free": {"x": [1, 2]}}})
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
    ans = call(kube_api, "POST", path, gizmo("s", bogus=1), query={"fieldValidation": "Strict"})
    assert (ans.status, ans.reason) == (400, "BadRequest")
    assert 'unknown field "spec.bogus"' in ans.body["message"]


def test_schema_violations_are_invalid(
    kube_api: client.ApiClient, gizmo_crd: str, kube_namespace: str
) -> None:
    """Enum and minimum violations are 422 Invalid with one cause per field."""
    path = f"{gizmo_crd}/namespaces/{kube_namespace}/gizmos"
    ans = call(kube_api, "POST", path, gizmo("v", color="green", size=-1))
    assert (ans.status, ans.reason) == (422, "Invalid")
    fields = sorted(c["field"] for c in ans.body["details"]["causes"])
    assert fields == ["spec.color", "spec.size"]


def test_status_subresource_and_generation(
    kube_api: client.ApiClient, gizmo_crd: str, kube_namespace: str
) -> None:
    """Status is dropped on create, written only via /status; spec changes bump generation."""
    path = f"{gizmo_crd}/namespaces/{kube_namespace}/gizmos"
    body = gizmo("g", color="red")
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
    call(kube_api, "POST", path, gizmo("m", color="blue"))
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
    call(kube_api, "POST", path, gizmo("t", color="blue", size=3))
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
    call(kube_api, "POST", CRDS, crd_body(group))
    path = f"/apis/{group}/v1/namespaces/{kube_namespace}/gizmos"
    deadline = time.monotonic() + 30
    while call(kube_api, "POST", path, gizmo("d", color="red")).status != 201:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    call(kube_api, "DELETE", f"{CRDS}/gizmos.{group}")
    deadline = time.monotonic() + 30
    while call(kube_api, "GET", path).status != 404:
        assert time.monotonic() < deadline
        time.sleep(0.1)
