"""Watch behaviour of a real kube-apiserver: replay, 410 Expired, bookmarks, filtering, opaque
resourceVersions."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.harness.fixtures import KubeCluster
from tests.harness.rawapi import call, watch

CM = "/api/v1/namespaces/{ns}/configmaps"


def _events(api: client.ApiClient, path: str, **query: Any) -> list[tuple[str, Any]]:
    return [(e["type"], e["object"]) for e in watch(api, path, query=query)]


def test_watch_replays_from_resource_version(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """A watch from a list's resourceVersion replays later changes in order."""
    path = CM.format(ns=kube_namespace)
    rv = call(kube_api, "GET", path).body["metadata"]["resourceVersion"]
    call(kube_api, "POST", path, {"metadata": {"name": "w"}, "data": {"a": "1"}})
    call(
        kube_api,
        "PATCH",
        f"{path}/w",
        {"data": {"a": "2"}},
        content_type="application/merge-patch+json",
    )
    call(kube_api, "DELETE", f"{path}/w")
    events = _events(
        kube_api, path, resourceVersion=rv, timeoutSeconds=1, fieldSelector="metadata.name=w"
    )
    assert [t for t, _ in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert events[1][1]["data"] == {"a": "2"}
    rvs = [int(o["metadata"]["resourceVersion"]) for _, o in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)


def test_watch_from_too_old_resource_version_is_expired(
    kube_api: client.ApiClient, kube_namespace: str, crds: None
) -> None:
    """A watch from before what the server keeps gets one ERROR event: 410 Expired.

    Probes, not ConfigMaps: a freshly started kube-apiserver (v1.32) was seen replaying a
    ConfigMap watch from version 1, its watch cache having begun before anything was too old.
    A custom resource's watch cache begins when its CRD is established, well past version 1.
    """
    path = f"/apis/kubeprober.io/v1/namespaces/{kube_namespace}/probes"
    events = _events(kube_api, path, resourceVersion="1", timeoutSeconds=2)
    assert len(events) == 1
    typ, status = events[0]
    assert typ == "ERROR"
    assert (status["code"], status["reason"]) == (410, "Expired")


def test_watch_without_resource_version_starts_with_current_state(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """A watch without resourceVersion first sends ADDED for existing objects."""
    path = CM.format(ns=kube_namespace)
    call(kube_api, "POST", path, {"metadata": {"name": "pre", "labels": {"w": "x"}}})
    events = _events(kube_api, path, timeoutSeconds=1, labelSelector="w=x")
    assert [(t, o["metadata"]["name"]) for t, o in events] == [("ADDED", "pre")]


def test_watch_timeout_ends_the_stream(kube_api: client.ApiClient, kube_namespace: str) -> None:
    """timeoutSeconds closes an idle watch cleanly."""
    rv = call(kube_api, "GET", CM.format(ns=kube_namespace)).body["metadata"]["resourceVersion"]
    assert (
        _events(
            kube_api,
            CM.format(ns=kube_namespace),
            resourceVersion=rv,
            timeoutSeconds=1,
            labelSelector="none=here",
        )
        == []
    )


def test_initial_events_end_with_a_bookmark(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """sendInitialEvents streams the state, then a BOOKMARK marked initial-events-end."""
    path = CM.format(ns=kube_namespace)
    call(kube_api, "POST", path, {"metadata": {"name": "b1", "labels": {"bm": "y"}}})
    events = _events(
        kube_api,
        path,
        sendInitialEvents="true",
        allowWatchBookmarks="true",
        resourceVersionMatch="NotOlderThan",
        timeoutSeconds=1,
        labelSelector="bm=y",
    )
    types = [t for t, _ in events]
    assert types[:2] == ["ADDED", "BOOKMARK"]
    bookmark = events[1][1]
    assert bookmark["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"
    assert int(bookmark["metadata"]["resourceVersion"]) >= int(
        events[0][1]["metadata"]["resourceVersion"]
    )


def test_label_change_out_of_selector_is_deleted(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """An object leaving a watch's label selector is reported as DELETED to that watch."""
    path = CM.format(ns=kube_namespace)
    rv = call(kube_api, "GET", path).body["metadata"]["resourceVersion"]
    call(kube_api, "POST", path, {"metadata": {"name": "m", "labels": {"sel": "in"}}})
    moved = call(
        kube_api,
        "PATCH",
        f"{path}/m",
        {"metadata": {"labels": {"sel": "out"}}},
        content_type="application/merge-patch+json",
    ).body
    events = _events(kube_api, path, resourceVersion=rv, timeoutSeconds=1, labelSelector="sel=in")
    assert [t for t, _ in events] == ["ADDED", "DELETED"]
    # The last state that matched, at the resourceVersion of the change that moved it out.
    gone = events[1][1]["metadata"]
    assert gone["labels"] == {"sel": "in"}
    assert gone["resourceVersion"] == moved["metadata"]["resourceVersion"]


def test_watch_through_the_generated_client(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    """kubernetes.watch.Watch sees a change made after it starts."""
    from kubernetes import watch as kwatch

    core = client.CoreV1Api(kube_api)
    rv = core.list_namespaced_config_map(kube_namespace).metadata.resource_version
    core.create_namespaced_config_map(kube_namespace, {"metadata": {"name": "gen"}})
    w = kwatch.Watch()
    seen = []
    for ev in w.stream(
        core.list_namespaced_config_map, kube_namespace, resource_version=rv, timeout_seconds=2
    ):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["object"].metadata.name == "gen":
            w.stop()
    assert ("ADDED", "gen") in seen


@pytest.mark.usefixtures("opaque_resource_versions")
def test_opaque_resource_versions_resume_watches_and_guard_writes(
    kube_api: client.ApiClient, kube_namespace: str, kube_cluster: KubeCluster
) -> None:
    """Taken as opaque strings, resourceVersions resume a watch and make a write conditional
    (the API test server's are then not numbers at all)."""
    path = CM.format(ns=kube_namespace)
    rv = call(kube_api, "GET", path).body["metadata"]["resourceVersion"]
    made = call(kube_api, "POST", path, {"metadata": {"name": "opaque"}, "data": {"a": "1"}})
    version = made.body["metadata"]["resourceVersion"]
    if not kube_cluster.real:
        assert not rv.isdigit() and not version.isdigit()
    events = _events(
        kube_api, path, resourceVersion=rv, timeoutSeconds=1, fieldSelector="metadata.name=opaque"
    )
    assert [(t, o["metadata"]["resourceVersion"]) for t, o in events] == [("ADDED", version)]
    body = {"metadata": {"name": "opaque", "resourceVersion": version}, "data": {"a": "2"}}
    assert call(kube_api, "PUT", f"{path}/opaque", body).status == 200
    stale = call(kube_api, "PUT", f"{path}/opaque", body)  # at the version it replaced
    assert (stale.status, stale.reason) == (409, "Conflict")
