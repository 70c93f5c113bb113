"""CRUD answers a real kube-apiserver gives: status codes, Status reasons, metadata rules."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes import client

from tests.harness.rawapi import call

CM = "/api/v1/namespaces/{ns}/configmaps"


def cm(name: str, **data: str) -> dict[str, Any]:
    """Return a ConfigMap body."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_version_and_discovery(kube_api: client.ApiClient) -> None:
    """/version, /api and /apis list what clients need."""
    v = call(kube_api, "GET", "/version")
    assert v.status == 200 and v.body["major"] == "1"
    api = call(kube_api, "GET", "/api/v1").body
    names = {r["name"] for r in api["resources"]}
    assert {"pods", "pods/status", "namespaces", "configmaps", "services"} <= names
    groups = {g["name"] for g in call(kube_api, "GET", "/apis").body["groups"]}
    assert {
        "apps",
        "batch",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "rbac.authorization.k8s.io",
        "apiextensions.k8s.io",
        "events.k8s.io",
    } <= groups


def test_create_get_conflicts(kube_api: client.ApiClient, kube_namespace: str) -> None:
    """Create answers 201, a duplicate 409 AlreadyExists, a missing name 404 NotFound."""
    path = CM.format(ns=kube_namespace)
    created = call(kube_api, "POST", path, cm("a", k="v"))
    assert created.status == 201
    meta = created.body["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    dup = call(kube_api, "POST", path, cm("a"))
    assert (dup.status, dup.reason) == (409, "AlreadyExists")
    assert (
        dup.body["details"] == {"name": "a", "kind": "configmaps"}
        or dup.body["details"]["name"] == "a"
    )
    missing = call(kube_api, "GET", f"{path}/nope")
    assert (missing.status, missing.reason) == (404, "NotFound")
    assert missing.body["kind"] == "Status" and missing.body["code"] == 404
    assert missing.body["message"] == 'configmaps "nope" not found'


def test_update_with_stale_resource_version_conflicts(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """An update carrying an old resourceVersion is 409 Conflict; a current one bumps it."""
    path = CM.format(ns=kube_namespace)
    first = call(kube_api, "POST", path, cm("b", k="1")).body
    body = {**first, "data": {"k": "2"}}
    second = call(kube_api, "PUT", f"{path}/b", body)
    assert second.status == 200
    assert int(second.body["metadata"]["resourceVersion"]) > int(
        first["metadata"]["resourceVersion"]
    )
    stale = call(kube_api, "PUT", f"{path}/b", {**first, "data": {"k": "3"}})
    assert (stale.status, stale.reason) == (409, "Conflict")
    assert "the object has been modified" in stale.body["message"]


def test_noop_update_keeps_resource_version(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """Writing an unchanged object does not create a new resourceVersion."""
    path = CM.format(ns=kube_namespace)
    first = call(kube_api, "POST", path, cm("c", k="1")).body
    again = call(kube_api, "PUT", f"{path}/c", first).body
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


def test_generate_name_and_invalid_name(kube_api: client.ApiClient, kube_namespace: str) -> None:
    """generateName appends a suffix; an invalid name is 422 Invalid with a cause."""
    path = CM.format(ns=kube_namespace)
    body = {"metadata": {"generateName": "gen-"}, "data": {}}
    made = call(kube_api, "POST", path, body).body
    assert made["metadata"]["name"].startswith("gen-") and len(made["metadata"]["name"]) == 9
    bad = call(kube_api, "POST", path, cm("Not_Valid"))
    assert (bad.status, bad.reason) == (422, "Invalid")
    assert bad.body["details"]["causes"][0]["field"] == "metadata.name"


def test_create_in_missing_namespace_is_not_found(kube_api: client.ApiClient) -> None:
    """Creating in a namespace that does not exist is 404 for the namespace."""
    ans = call(kube_api, "POST", CM.format(ns="kp-no-such-ns"), cm("x"))
    assert (ans.status, ans.reason) == (404, "NotFound")
    assert ans.body["details"]["kind"] == "namespaces"


@pytest.mark.parametrize(
    ("content_type", "patch", "expected"),
    [
        ("application/merge-patch+json", {"data": {"a": None, "b": "2"}}, {"b": "2"}),
        (
            "application/json-patch+json",
            [{"op": "replace", "path": "/data/a", "value": "9"}],
            {"a": "9"},
        ),
        ("application/strategic-merge-patch+json", {"data": {"c": "3"}}, {"a": "1", "c": "3"}),
    ],
)
def test_patch_types(
    kube_api: client.ApiClient,
    kube_namespace: str,
    content_type: str,
    patch: Any,
    expected: dict[str, str],
) -> None:
    """Merge, JSON and strategic merge patches apply to core kinds."""
    path = CM.format(ns=kube_namespace)
    call(kube_api, "POST", path, cm("p", a="1"))
    ans = call(kube_api, "PATCH", f"{path}/p", patch, content_type=content_type)
    assert ans.status == 200, ans.body
    assert ans.body["data"] == expected


def test_json_patch_test_failure_is_rejected(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """A failing JSON patch "test" operation changes nothing."""
    path = CM.format(ns=kube_namespace)
    call(kube_api, "POST", path, cm("t", a="1"))
    ans = call(
        kube_api,
        "PATCH",
        f"{path}/t",
        [
            {"op": "test", "path": "/data/a", "value": "2"},
            {"op": "replace", "path": "/data/a", "value": "3"},
        ],
        content_type="application/json-patch+json",
    )
    assert ans.status == 422
    assert call(kube_api, "GET", f"{path}/t").body["data"] == {"a": "1"}


def test_strategic_merge_keeps_containers_by_name(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """A strategic merge patch merges containers and env by name."""
    path = f"/apis/apps/v1/namespaces/{kube_namespace}/deployments"
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {
                    "containers": [
                        {"name": "a", "image": "img:1", "env": [{"name": "X", "value": "1"}]},
                        {"name": "b", "image": "img:1"},
                    ]
                },
            },
        },
    }
    assert call(kube_api, "POST", path, body).status == 201
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "a", "image": "img:2", "env": [{"name": "Y", "value": "2"}]}
                    ]
                }
            }
        }
    }
    ans = call(
        kube_api, "PATCH", f"{path}/d", patch, content_type="application/strategic-merge-patch+json"
    )
    assert ans.status == 200, ans.body
    containers = ans.body["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["a", "b"]
    assert containers[0]["image"] == "img:2"
    # Items only in the patch come before the live ones that follow them, as the apiserver orders.
    assert [e["name"] for e in containers[0]["env"]] == ["Y", "X"]
    assert ans.body["metadata"]["generation"] == 2


def test_label_and_field_selectors(kube_api: client.ApiClient, kube_namespace: str) -> None:
    """Lists filter by label and field selectors; unknown field labels are 400."""
    path = CM.format(ns=kube_namespace)
    for name, tier in (("s1", "web"), ("s2", "db"), ("s3", "web")):
        body = cm(name)
        body["metadata"]["labels"] = {"tier": tier, "app": "x"}
        call(kube_api, "POST", path, body)

    def names(**query: str) -> list[str]:
        ans = call(kube_api, "GET", path, query=query)
        assert ans.status == 200, ans.body
        return sorted(i["metadata"]["name"] for i in ans.body["items"])

    assert names(labelSelector="tier=web") == ["s1", "s3"]
    assert names(labelSelector="tier in (db),app") == ["s2"]
    assert names(labelSelector="tier!=web,app=x") == ["s2"]
    assert names(fieldSelector="metadata.name=s3") == ["s3"]
    assert names(fieldSelector="metadata.name!=s3", labelSelector="app") == ["s1", "s2"]
    bad = call(kube_api, "GET", path, query={"fieldSelector": "data.k=v"})
    assert (bad.status, bad.reason) == (400, "BadRequest")


def test_pagination(kube_api: client.ApiClient, kube_namespace: str) -> None:
    """limit and continue page through a list."""
    path = CM.format(ns=kube_namespace)
    for i in range(5):
        call(
            kube_api, "POST", path, {"metadata": {"name": f"page-{i}", "labels": {"paged": "yes"}}}
        )
    seen: list[str] = []
    token = ""
    while True:
        query = {"limit": "2", "labelSelector": "paged"}
        if token:
            query["continue"] = token
        body = call(kube_api, "GET", path, query=query).body
        seen += [i["metadata"]["name"] for i in body["items"]]
        token = body["metadata"].get("continue", "")
        if not token:
            break
    assert seen == [f"page-{i}" for i in range(5)]


def test_finalizers_hold_deletion(
    kube_api: client.ApiClient, kube_namespace: str, kube_held: list[str]
) -> None:
    """Delete with a finalizer sets deletionTimestamp; removing the finalizer deletes."""
    path = CM.format(ns=kube_namespace)
    body = cm("f")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    call(kube_api, "POST", path, body)
    kube_held.append(f"{path}/f")
    deleted = call(kube_api, "DELETE", f"{path}/f")
    assert deleted.status in (200, 202)
    held = call(kube_api, "GET", f"{path}/f").body
    assert held["metadata"]["deletionTimestamp"]
    add = call(
        kube_api,
        "PATCH",
        f"{path}/f",
        {"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}},
        content_type="application/merge-patch+json",
    )
    assert add.status == 422
    gone = call(
        kube_api,
        "PATCH",
        f"{path}/f",
        {"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )
    assert gone.status == 200
    assert call(kube_api, "GET", f"{path}/f").status == 404


def test_delete_preconditions(kube_api: client.ApiClient, kube_namespace: str) -> None:
    """A delete whose uid precondition does not match is 409 Conflict."""
    path = CM.format(ns=kube_namespace)
    call(kube_api, "POST", path, cm("pre"))
    ans = call(kube_api, "DELETE", f"{path}/pre", {"preconditions": {"uid": "wrong"}})
    assert (ans.status, ans.reason) == (409, "Conflict")
    assert call(kube_api, "DELETE", f"{path}/pre").status == 200
    assert call(kube_api, "GET", f"{path}/pre").status == 404


def test_dry_run_delete_deletes_nothing(kube_api: client.ApiClient, kube_namespace: str) -> None:
    """``dryRun: [All]`` answers as a delete would and keeps the object, whether it comes in the
    DeleteOptions body (as kubectl's ``--dry-run=server`` sends it) or in the query."""
    path = CM.format(ns=kube_namespace)
    for name in ("body", "query", "collection"):
        call(kube_api, "POST", path, cm(name))
    assert call(kube_api, "DELETE", f"{path}/body", {"dryRun": ["All"]}).status == 200
    assert call(kube_api, "DELETE", f"{path}/query?dryRun=All").status == 200
    assert call(kube_api, "DELETE", f"{path}?dryRun=All").status == 200
    for name in ("body", "query", "collection"):
        assert call(kube_api, "GET", f"{path}/{name}").status == 200, name
    assert call(kube_api, "DELETE", f"{path}/body", {"dryRun": []}).status == 200
    assert call(kube_api, "GET", f"{path}/body").status == 404


def test_unsupported_body_is_415(kube_api: client.ApiClient, kube_namespace: str) -> None:
    """A patch with an unknown content type is 415 UnsupportedMediaType."""
    path = CM.format(ns=kube_namespace)
    call(kube_api, "POST", path, cm("u"))
    ans = call(kube_api, "PATCH", f"{path}/u", {"data": {}}, content_type="text/plain")
    assert ans.status == 415


def test_status_subresource_split(kube_api: client.ApiClient, kube_namespace: str) -> None:
    """Main-resource writes ignore status; /status writes ignore spec; generation tracks spec."""
    path = f"/apis/apps/v1/namespaces/{kube_namespace}/deployments"
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "st"},
        "spec": {
            "replicas": 0,
            "paused": True,
            "selector": {"matchLabels": {"app": "st"}},
            "template": {
                "metadata": {"labels": {"app": "st"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
        "status": {"replicas": 7},
    }
    made = call(kube_api, "POST", path, body).body
    assert made["metadata"]["generation"] == 1
    assert made.get("status", {}).get("replicas") != 7
    spec_write = call(
        kube_api,
        "PATCH",
        f"{path}/st",
        {"status": {"replicas": 5}},
        content_type="application/merge-patch+json",
    ).body
    assert spec_write.get("status", {}).get("replicas") != 5
    assert spec_write["metadata"]["generation"] == 1
    status_write = call(
        kube_api,
        "PATCH",
        f"{path}/st/status",
        {"spec": {"replicas": 3}, "status": {"collisionCount": 4}},
        content_type="application/merge-patch+json",
    ).body
    assert status_write["status"]["collisionCount"] == 4
    assert status_write["spec"]["replicas"] == 0
    assert status_write["metadata"]["generation"] == 1
    bumped = call(
        kube_api,
        "PATCH",
        f"{path}/st",
        {"spec": {"replicas": 0, "paused": False}},
        content_type="application/merge-patch+json",
    ).body
    assert bumped["metadata"]["generation"] == 2


def test_unauthorized_without_token(kube_api: client.ApiClient) -> None:
    """A request without credentials is 401 (or 403 for anonymous on a real cluster)."""
    cfg = copy.copy(kube_api.configuration)
    cfg.api_key, cfg.api_key_prefix, cfg.cert_file, cfg.key_file = {}, {}, None, None
    cfg.refresh_api_key_hook = None
    plain = client.ApiClient(cfg)
    try:
        ans = call(plain, "GET", "/api/v1/namespaces")
    finally:
        plain.close()
    assert ans.status in (401, 403)


def test_events_are_served_by_both_event_apis(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """A core/v1 Event is readable as events.k8s.io/v1 (regarding, note), and back."""
    ns = kube_namespace
    core_body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "ev1"},
        "involvedObject": {"kind": "ConfigMap", "namespace": ns, "name": "x"},
        "reason": "Tested",
        "message": "hello",
        "type": "Normal",
        "source": {"component": "kubeprober-test"},
        "firstTimestamp": "2026-01-01T00:00:00Z",
        "lastTimestamp": "2026-01-01T00:00:00Z",
        "count": 1,
    }
    assert call(kube_api, "POST", f"/api/v1/namespaces/{ns}/events", core_body).status == 201
    new = call(kube_api, "GET", f"/apis/events.k8s.io/v1/namespaces/{ns}/events/ev1").body
    assert new["regarding"]["name"] == "x" and new["note"] == "hello"
    assert new["reason"] == "Tested"
    listed = call(
        kube_api,
        "GET",
        f"/api/v1/namespaces/{ns}/events",
        query={"fieldSelector": "involvedObject.name=x"},
    ).body["items"]
    assert [e["metadata"]["name"] for e in listed] == ["ev1"]


def test_binding_and_scale_subresources(kube_api: client.ApiClient, kube_namespace: str) -> None:
    """pods/binding assigns a node once (then 409); deployments/scale changes replicas."""
    ns = kube_namespace
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "b"},
        "spec": {"schedulerName": "kp-nobody", "containers": [{"name": "c", "image": "img:1"}]},
    }
    assert call(kube_api, "POST", f"/api/v1/namespaces/{ns}/pods", pod).status == 201
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "b"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "kp-no-such-node"},
    }
    path = f"/api/v1/namespaces/{ns}/pods/b/binding"
    assert call(kube_api, "POST", path, binding).status == 201
    got = call(kube_api, "GET", f"/api/v1/namespaces/{ns}/pods/b").body
    assert got["spec"]["nodeName"] == "kp-no-such-node"
    assert call(kube_api, "POST", path, binding).status == 409
    call(kube_api, "DELETE", f"/api/v1/namespaces/{ns}/pods/b", {"gracePeriodSeconds": 0})

    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "sc"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "sc"}},
            "template": {
                "metadata": {"labels": {"app": "sc"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }
    call(kube_api, "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deploy)
    scale_path = f"/apis/apps/v1/namespaces/{ns}/deployments/sc/scale"
    scale = call(kube_api, "GET", scale_path).body
    # replicas is omitempty in a Scale's spec: zero is left out.
    assert (scale["kind"], scale["spec"]) == ("Scale", {})
    for replicas, spec in ((2, {"replicas": 2}), (0, {})):
        patched = call(
            kube_api,
            "PATCH",
            scale_path,
            {"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )
        assert (patched.status, patched.body["spec"]) == (200, spec)
        got = call(kube_api, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/sc").body
        assert got["spec"]["replicas"] == replicas


def test_invalid_label_value_is_rejected(kube_api: client.ApiClient, kube_namespace: str) -> None:
    """A label value with spaces is 422 Invalid on create and on update."""
    path = CM.format(ns=kube_namespace)
    bad = cm("lbl")
    bad["metadata"]["labels"] = {"probe/p": "not valid!"}
    ans = call(kube_api, "POST", path, bad)
    assert (ans.status, ans.reason) == (422, "Invalid")
    assert ans.body["details"]["causes"][0]["field"] == "metadata.labels"
    call(kube_api, "POST", path, cm("lbl"))
    upd = call(
        kube_api,
        "PATCH",
        f"{path}/lbl",
        {"metadata": {"labels": {"-x": "y"}}},
        content_type="application/merge-patch+json",
    )
    assert upd.status == 422


def test_server_side_apply_creates_and_updates(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """An apply patch needs a fieldManager, creates the object, then updates it."""
    path = f"{CM.format(ns=kube_namespace)}/ssa"
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ssa"},
        "data": {"a": "1"},
    }
    ct = "application/apply-patch+yaml"
    assert call(kube_api, "PATCH", path, body, content_type=ct).status == 422
    made = call(kube_api, "PATCH", path, body, content_type=ct, query={"fieldManager": "t"})
    assert made.status == 201 and made.body["data"] == {"a": "1"}
    body["data"] = {"a": "2"}
    again = call(kube_api, "PATCH", path, body, content_type=ct, query={"fieldManager": "t"})
    assert again.status == 200 and again.body["data"] == {"a": "2"}


def test_lease_takeover_with_resource_version(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """Two writers of one Lease, each sending the resourceVersion it read: one wins, the other
    is 409 Conflict (leader election rests on this); a patch without it always applies."""
    path = f"/apis/coordination.k8s.io/v1/namespaces/{kube_namespace}/leases"
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 5},
    }
    made = call(kube_api, "POST", path, lease)
    assert made.status == 201, made.body
    assert made.body["spec"]["holderIdentity"] == "a"
    assert call(kube_api, "POST", path, lease).reason == "AlreadyExists"
    rv = made.body["metadata"]["resourceVersion"]
    merge = "application/merge-patch+json"
    takes = [
        call(
            kube_api,
            "PATCH",
            f"{path}/leader",
            {"metadata": {"resourceVersion": rv}, "spec": {"holderIdentity": who}},
            content_type=merge,
        )
        for who in ("b", "c")
    ]
    assert [t.status for t in takes] == [200, 409]
    assert takes[1].reason == "Conflict"
    assert int(takes[0].body["metadata"]["resourceVersion"]) > int(rv)
    now = call(kube_api, "GET", f"{path}/leader").body
    assert now["spec"]["holderIdentity"] == "b"
    free = call(
        kube_api, "PATCH", f"{path}/leader", {"spec": {"holderIdentity": "c"}}, content_type=merge
    )
    assert free.status == 200 and free.body["spec"]["holderIdentity"] == "c"


@pytest.mark.parametrize(
    ("plural", "api_version", "kind", "status", "reason"),
    [
        ("configmaps", "v1", "Secret", 400, "BadRequest"),
        ("configmaps", "v2", "ConfigMap", 400, "BadRequest"),
        ("probes", "kubeprober.io/v1", "Cluster", 422, "Invalid"),  # a custom resource's kind
        ("probes", "kubeprober.io/v2", "Probe", 400, "BadRequest"),
        ("probes", "v1", "Probe", 400, "BadRequest"),
    ],
)
def test_a_body_of_another_kind_or_version_is_refused(
    kube_api: client.ApiClient,
    kube_namespace: str,
    crds: None,
    plural: str,
    api_version: str,
    kind: str,
    status: int,
    reason: str,
) -> None:
    prefix = "/api/v1" if plural == "configmaps" else "/apis/kubeprober.io/v1"
    body = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "a"}, "spec": {}}
    ans = call(kube_api, "POST", f"{prefix}/namespaces/{kube_namespace}/{plural}", body)
    assert (ans.status, ans.reason) == (status, reason), ans.body
    assert kind in ans.body["message"] or api_version in ans.body["message"]
