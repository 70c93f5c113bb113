"""The async facade: CRUD and lists as JSON, errors translated, no thread left hanging."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from kubeprober.kube.api import ApiSettings, KubeApi
from kubeprober.kube.errors import AlreadyExists, KubeError, NotFound, Unavailable
from kubeprober.kube.resources import PROBES, Permission
from tests.exporter.kube.conftest import eventually, probe_body, tcp_check
from tests.harness.faultproxy import FaultProxy


async def test_crud_and_permissions_used(kube: KubeApi, kube_namespace: str) -> None:
    body = probe_body("p", [tcp_check("a", 1)])
    created = await kube.create(PROBES, body, namespace=kube_namespace)
    assert created["metadata"]["uid"]
    with pytest.raises(AlreadyExists, match=f"create probes {kube_namespace}/p: HTTP 409"):
        await kube.create(PROBES, body, namespace=kube_namespace)
    patched = await kube.patch(
        PROBES, "p", {"metadata": {"labels": {"team": "a"}}}, namespace=kube_namespace
    )
    assert patched["metadata"]["labels"] == {"team": "a"}
    got = await kube.get(PROBES, "p", namespace=kube_namespace)
    assert got["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
    await kube.delete(PROBES, "p", namespace=kube_namespace)
    with pytest.raises(NotFound):
        await kube.get(PROBES, "p", namespace=kube_namespace)
    assert {p.verb for p in kube.used if p.resource == "probes"} == {
        "create",
        "patch",
        "get",
        "delete",
    }
    assert Permission("kubeprober.io", "probes", "get") in kube.used


async def test_list_follows_pages(kube_config_path: Path, crds: None, kube_namespace: str) -> None:
    api = KubeApi.from_kubeconfig(kube_config_path, settings=ApiSettings(list_page_size=2))
    try:
        for i in range(5):
            body = probe_body(f"p{i}", [tcp_check("a", 1)])
            await api.create(PROBES, body, namespace=kube_namespace)
        listing = await api.list(PROBES, namespace=kube_namespace)
        names = sorted(o["metadata"]["name"] for o in listing["items"])
        assert names == ["p0", "p1", "p2", "p3", "p4"]
        assert listing["metadata"]["resourceVersion"]
        assert api.requests >= 5 + 3
    finally:
        await api.close()


async def test_server_errors_and_refusals_are_unavailable(
    kube_fault_proxy: FaultProxy, crds: None, kube_namespace: str
) -> None:
    api = KubeApi.from_kubeconfig(kube_fault_proxy.kubeconfig, settings=ApiSettings())
    try:
        kube_fault_proxy.fail(500, count=1)
        with pytest.raises(Unavailable, match="HTTP 500 InternalError: fault injected"):
            await api.list(PROBES, namespace=kube_namespace)
        kube_fault_proxy.refuse()
        kube_fault_proxy.cut()
        with pytest.raises(Unavailable, match="refused"):
            await api.list(PROBES, namespace=kube_namespace)
        kube_fault_proxy.clear()
        await api.list(PROBES, namespace=kube_namespace)
    finally:
        await api.close()


async def test_cancelled_call_leaves_no_thread_behind(
    kube_fault_proxy: FaultProxy, crds: None, kube_namespace: str
) -> None:
    settings = ApiSettings(request_timeout=0.5)
    api = KubeApi.from_kubeconfig(kube_fault_proxy.kubeconfig, settings=settings)
    try:
        kube_fault_proxy.delay(2.0)  # the server answers after the read timeout
        task = asyncio.create_task(api.list(PROBES, namespace=kube_namespace))
        await eventually(lambda: _api_threads() > 0, what="a request thread")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The thread is not stuck waiting for the server: its read timeout ends it.
        with pytest.raises(Unavailable, match="timed out"):
            await api.list(PROBES, namespace=kube_namespace)
    finally:
        kube_fault_proxy.clear()
        await api.close()


def _api_threads() -> int:
    return sum(t.name.startswith("kube-api") for t in threading.enumerate())


def test_kubeconfig_errors_are_kube_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(KubeError, match=f"kubeconfig {missing}"):
        KubeApi.from_kubeconfig(missing)


async def test_default_namespace_comes_from_the_context(kube: KubeApi) -> None:
    assert kube.namespace  # the kubeconfig's context namespace, "default" when it has none


async def test_close_waits_until_no_watch_reader_runs(kube: KubeApi, kube_namespace: str) -> None:
    """Once close() returns, no reader thread of ours is still opening or reading a watch."""
    streams = [kube.watch(PROBES, namespace=kube_namespace) for _ in range(3)]
    for stream in streams:
        await stream.__aenter__()  # readers started, as a watching task's ``async with`` does
    await kube.close()
    assert [s.running for s in streams] == [False, False, False]
