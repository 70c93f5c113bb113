"""``ctx.kube``: the probers' Kubernetes API, its errors, its deadline and its rate limit.

Against the harness's API server (both legs), through the public API only.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kubeprober.exporter.kube.access import AccessSettings, ProberAccess
from kubeprober.exporter.runner import run_check
from kubeprober.kube.api import KubeApi
from kubeprober.kube.resources import NAMESPACES, Resource
from kubeprober.probers.registry import Prober
from kubeprober.probers.sdk import (
    NEEDS_KUBE,
    CheckFailed,
    Context,
    KubeApiError,
    Outcome,
    WaitTimedOut,
)
from kubeprober.probers.status import Status
from tests.conftest import FAST_API
from tests.exporter.fakes import check, make_probe
from tests.harness.faultproxy import FaultProxy

CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")


def configmap(name: str, **data: str) -> dict[str, object]:
    return {"metadata": {"name": name}, "data": data}


async def test_read_and_write_objects(prober_access: ProberAccess, kube_namespace: str) -> None:
    kube = prober_access.for_check(10)
    ns = kube_namespace
    created = await kube.create(CONFIGMAPS, configmap("a", x="1"), namespace=ns)
    assert created["metadata"]["uid"]
    patched = await kube.patch(CONFIGMAPS, "a", {"data": {"x": "2"}}, namespace=ns)
    assert patched["data"] == {"x": "2"}
    assert (await kube.get(CONFIGMAPS, "a", namespace=ns))["data"] == {"x": "2"}
    listed = await kube.list(CONFIGMAPS, namespace=ns, field_selector="metadata.name=a")
    assert [o["metadata"]["name"] for o in listed["items"]] == ["a"]
    assert listed["metadata"]["resourceVersion"]
    # Cluster-scoped: no namespace.
    assert (await kube.get(NAMESPACES, ns))["metadata"]["name"] == ns
    assert (await kube.version())["gitVersion"].startswith("v1.")
    await kube.delete(CONFIGMAPS, "a", namespace=ns)
    with pytest.raises(KubeApiError) as caught:
        await kube.get(CONFIGMAPS, "a", namespace=ns)
    assert (caught.value.code, caught.value.reason) == (404, "NotFound")
    assert caught.value.status is Status.UNKNOWN
    assert f"get configmaps {ns}/a: HTTP 404 NotFound" in str(caught.value)


async def test_watch_yields_changes(prober_access: ProberAccess, kube_namespace: str) -> None:
    kube = prober_access.for_check(10)
    ns = kube_namespace
    listed = await kube.list(CONFIGMAPS, namespace=ns)
    rv = listed["metadata"]["resourceVersion"]
    async with kube.watch(
        CONFIGMAPS, namespace=ns, field_selector="metadata.name=w", resource_version=rv
    ) as events:
        await kube.create(CONFIGMAPS, configmap("w"), namespace=ns)
        await kube.delete(CONFIGMAPS, "w", namespace=ns)
        seen = []
        async for kind, obj in events:
            seen.append((kind, obj["metadata"]["name"]))
            if kind == "DELETED":
                break
    assert seen[0] == ("ADDED", "w") and seen[-1] == ("DELETED", "w")


async def test_wait_for_a_change_and_for_absence(
    prober_access: ProberAccess, kube_namespace: str
) -> None:
    kube = prober_access.for_check(10)
    ns = kube_namespace
    await kube.create(CONFIGMAPS, configmap("c", x="1"), namespace=ns)

    def is_two(obj: dict[str, object] | None) -> bool:
        return obj is not None and obj.get("data") == {"x": "2"}

    waiting = asyncio.create_task(kube.wait_for(CONFIGMAPS, "c", is_two, namespace=ns))
    await kube.patch(CONFIGMAPS, "c", {"data": {"x": "2"}}, namespace=ns)
    found = await asyncio.wait_for(waiting, 10)
    assert found is not None and found["data"] == {"x": "2"}

    gone = asyncio.create_task(kube.wait_for(CONFIGMAPS, "c", lambda o: o is None, namespace=ns))
    await kube.delete(CONFIGMAPS, "c", namespace=ns)
    assert await asyncio.wait_for(gone, 10) is None


async def test_wait_for_gives_up_with_the_last_state(
    prober_access: ProberAccess, kube_namespace: str
) -> None:
    kube = prober_access.for_check(10)
    await kube.create(CONFIGMAPS, configmap("s", x="1"), namespace=kube_namespace)
    start = time.monotonic()
    with pytest.raises(WaitTimedOut) as caught:
        await kube.wait_for(CONFIGMAPS, "s", lambda o: False, namespace=kube_namespace, within=0.3)
    assert 0.3 <= time.monotonic() - start < 3
    assert caught.value.last is not None and caught.value.last["data"] == {"x": "1"}
    assert f"configmaps {kube_namespace}/s: condition not met within" in str(caught.value)


async def test_calls_end_at_the_checks_deadline(
    kube_fault_proxy: FaultProxy, kube_namespace: str
) -> None:
    api = KubeApi.from_kubeconfig(kube_fault_proxy.kubeconfig, settings=FAST_API)
    try:
        kube = ProberAccess(api).for_check(0.3)
        kube_fault_proxy.delay(3)
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="get configmaps x: no answer within the check"):
            await kube.get(CONFIGMAPS, "x", namespace=kube_namespace)
        assert time.monotonic() - start < 1.5
    finally:
        kube_fault_proxy.clear()
        await api.close()


async def test_the_rate_limit_is_shared_and_is_the_probes_fault(kube_config_path: Path) -> None:
    api = KubeApi.from_kubeconfig(kube_config_path, settings=FAST_API)
    try:
        access = ProberAccess(api, settings=AccessSettings(rate=0.5, burst=1))
        await access.for_check(5).get(NAMESPACES, "default")
        with pytest.raises(CheckFailed) as caught:
            await access.for_check(0.2).get(NAMESPACES, "default")
        assert caught.value.status is Status.UNKNOWN
        assert "rate limit (0.5/s)" in str(caught.value)
        assert api.requests == 1
    finally:
        await api.close()


async def needs_kube(spec: object, ctx: Context) -> Outcome:
    found = await ctx.kube.get(NAMESPACES, "default")
    return Outcome.passed(f"read {found['metadata']['name']}")


KUBE_PROBER = Prober("needs-kube", "reads a namespace", object, needs_kube, "test")


async def test_the_runner_hands_checks_the_api(prober_access: ProberAccess) -> None:
    c = check(prober="needs-kube")
    result = await run_check(make_probe(checks=(c,)), c, KUBE_PROBER, kube=prober_access)
    assert (result.status, result.message) == (Status.PASS, "read default")


async def test_without_an_api_the_check_is_unknown() -> None:
    c = check(prober="needs-kube")
    result = await run_check(make_probe(checks=(c,)), c, KUBE_PROBER)
    assert (result.status, result.message) == (Status.UNKNOWN, NEEDS_KUBE)
