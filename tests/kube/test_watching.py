"""ListWatch: what it says while the API server fails, and when it works again."""

from __future__ import annotations

import logging

import pytest

from kubeprober import outage
from kubeprober.kube import watching
from kubeprober.kube.api import KubeApi
from kubeprober.kube.resources import SECRETS
from kubeprober.kube.watching import ListWatch, Mirror, Selection
from kubeprober.pacing import BackoffSettings
from kubeprober.tasks import spawn, stop
from tests.conftest import FAST_API
from tests.exporter.kube.conftest import eventually
from tests.harness.faultproxy import FaultProxy
from tests.harness.fixtures import KubeCluster

QUICK = BackoffSettings(initial=0.01, maximum=0.02)


def said(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """Messages the list-watch logged at ``level``."""
    return [
        r.getMessage() for r in caplog.records if r.name == watching.__name__ and r.levelno == level
    ]


async def list_through(proxy: FaultProxy, namespace: str) -> None:
    """Follow the namespace's Secrets through the proxy until they are listed, then stop."""
    api = KubeApi.from_kubeconfig(proxy.kubeconfig, settings=FAST_API)
    lw = ListWatch(
        api,
        Selection(SECRETS, namespace, backoff=QUICK),
        on_list=lambda items: None,
        on_event=lambda event: None,
    )
    task = spawn(lw.run(), "test-list-watch")
    try:
        await eventually(lw.synced.is_set, what="the listing after the outage")
    finally:
        await stop([task])
        await api.close()


async def test_an_outage_is_warned_once_and_its_end_is_said(
    kube_fault_proxy: FaultProxy, kube_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=watching.__name__)
    kube_fault_proxy.fail(503, count=5, path="/secrets")
    await list_through(kube_fault_proxy, kube_namespace)
    warned = said(caplog, logging.WARNING)
    assert len(warned) == 1 and "failed" in warned[0] and "503" in warned[0], warned
    assert len(said(caplog, logging.DEBUG)) == 4  # the four retries that failed the same way
    assert any("works again after 5 failed attempts" in m for m in said(caplog, logging.INFO))


async def test_a_new_error_is_warned_and_a_long_outage_is_recalled(
    kube_fault_proxy: FaultProxy,
    kube_namespace: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG, logger=watching.__name__)
    monkeypatch.setattr(outage, "REMIND_EVERY", 0.0)  # every retry is "long after" the last
    kube_fault_proxy.fail(503, count=2, path="/secrets")
    kube_fault_proxy.fail(500, count=1, path="/secrets")
    await list_through(kube_fault_proxy, kube_namespace)
    warned = said(caplog, logging.WARNING)
    assert len(warned) == 3, warned
    assert "503" in warned[0] and "still failing after 2 attempts" in warned[1]
    assert "500" in warned[2] and "still" not in warned[2]


async def test_a_mirror_keeps_no_managed_fields(
    kube: KubeApi, kube_namespace: str, kube_cluster: KubeCluster
) -> None:
    listed = await kube.create(
        SECRETS, {"metadata": {"name": "listed"}, "data": {}}, namespace=kube_namespace
    )
    if kube_cluster.real:  # the test server keeps none: there, this only checks nothing breaks
        assert listed["metadata"].get("managedFields")
    mirror = Mirror(kube, Selection(SECRETS, kube_namespace, backoff=QUICK))
    task = spawn(mirror.watch.run(), "test-mirror")
    try:
        await eventually(mirror.watch.synced.is_set, what="the listing")
        patch = {"metadata": {"labels": {"changed": "yes"}}}
        await kube.patch(SECRETS, "listed", patch, namespace=kube_namespace)
        await kube.create(SECRETS, {"metadata": {"name": "watched"}}, namespace=kube_namespace)

        def both_seen() -> bool:
            got = mirror.objects.get((kube_namespace, "listed"), {})
            return (kube_namespace, "watched") in mirror.objects and bool(
                got.get("metadata", {}).get("labels")
            )

        await eventually(both_seen, what="the patch and the new Secret through the watch")
        for obj in mirror.objects.values():
            assert "managedFields" not in obj["metadata"], obj["metadata"]
            assert obj["metadata"]["resourceVersion"]
    finally:
        await stop([task])


async def test_a_mirror_calls_back_only_for_what_matters(
    kube: KubeApi, kube_namespace: str
) -> None:
    await kube.create(SECRETS, {"metadata": {"name": "a"}, "data": {}}, namespace=kube_namespace)
    calls: list[int] = []
    mirror = Mirror(
        kube,
        Selection(SECRETS, kube_namespace, backoff=QUICK),
        on_change=lambda: calls.append(len(mirror.objects)),
        matters=lambda obj: obj.get("data"),
    )
    task = spawn(mirror.watch.run(), "test-mirror")
    try:
        await eventually(mirror.watch.synced.is_set, what="the listing")
        assert calls == [1]
        # A label alone does not matter; new data does, and so does a new object. The watch
        # delivers them in order, so once the new Secret is seen every call has been made.
        labelled = {"metadata": {"labels": {"changed": "yes"}}}
        await kube.patch(SECRETS, "a", labelled, namespace=kube_namespace)
        await kube.patch(SECRETS, "a", {"data": {"k": "dg=="}}, namespace=kube_namespace)
        await kube.create(SECRETS, {"metadata": {"name": "b"}}, namespace=kube_namespace)
        await eventually(
            lambda: (kube_namespace, "b") in mirror.objects, what="the new Secret in the mirror"
        )
        assert calls == [1, 1, 2]
        assert mirror.objects[(kube_namespace, "a")]["metadata"]["labels"] == {"changed": "yes"}
    finally:
        await stop([task])


async def test_a_mirror_index_follows_every_change(kube: KubeApi, kube_namespace: str) -> None:
    def labelled(name: str, team: str) -> dict[str, object]:
        return {"metadata": {"name": name, "labels": {"team": team}}}

    for name, team in (("a", "red"), ("b", "red")):
        await kube.create(SECRETS, labelled(name, team), namespace=kube_namespace)
    mirror = Mirror(kube, Selection(SECRETS, kube_namespace, backoff=QUICK))
    mirror.index_by(lambda obj: str(obj["metadata"].get("labels", {}).get("team", "")))
    task = spawn(mirror.watch.run(), "test-mirror")

    def teams() -> dict[str, set[str]]:
        return {team: {name for _, name in keys} for team, keys in mirror.indexed.items()}

    try:
        await eventually(mirror.watch.synced.is_set, what="the listing")
        assert teams() == {"red": {"a", "b"}}
        # A changed label moves a key, a deletion drops it, an empty entry goes.
        await kube.patch(SECRETS, "a", labelled("a", "blue"), namespace=kube_namespace)
        await kube.delete(SECRETS, "b", namespace=kube_namespace)
        await kube.create(SECRETS, labelled("c", "blue"), namespace=kube_namespace)
        await eventually(lambda: teams() == {"blue": {"a", "c"}}, what="the index moved")
        # A new listing (as after a watch expired) builds it again from what is listed.
        await stop([task])
        await kube.delete(SECRETS, "c", namespace=kube_namespace)
        mirror.watch.resource_version = None
        task = spawn(mirror.watch.run(), "test-mirror")
        await eventually(lambda: mirror.watch.lists == 2, what="the second listing")
        assert teams() == {"blue": {"a"}}
    finally:
        await stop([task])
