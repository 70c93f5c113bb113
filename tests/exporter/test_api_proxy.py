"""The agent's `kube-api` target on its own: what it refuses, and how it bounds an answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from kubeprober.exporter.api_proxy import ApiProxy, ApiProxySettings
from kubeprober.kube.api import KubeApi
from kubeprober.kube.passthrough import Passthrough
from tests.aggregator.test_kube_proxy import VIEW
from tests.harness.fixtures import KubeCluster
from tests.harness.kubectl import Kubectl


async def _serve(cluster: KubeCluster, settings: ApiProxySettings) -> AsyncIterator[str]:
    api = KubeApi.from_kubeconfig(cluster.kubeconfig)
    proxy = ApiProxy(Passthrough(api.configuration, user=settings.user), "moon", settings)
    runner = web.AppRunner(proxy.app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
        await api.close()


@pytest.fixture
async def proxy_url(
    kube_cluster: KubeCluster, kubectl: Kubectl, kube_namespace: str
) -> AsyncIterator[str]:
    if kube_cluster.real:
        manifest = VIEW.format(namespace=kube_namespace)
        await asyncio.to_thread(kubectl, "apply", "-n", kube_namespace, "-f", "-", input=manifest)
    settings = ApiProxySettings(namespace=kube_namespace, max_seconds=1.0, max_bytes=40)
    async for url in _serve(kube_cluster, settings):
        yield url


async def test_answers_are_bounded_and_upgrades_refused(
    proxy_url: str, kube_namespace: str
) -> None:
    async with aiohttp.ClientSession() as http:
        # Size: the answer is cut after max_bytes.
        async with http.get(f"{proxy_url}/version") as answer:
            assert answer.status == 200
            assert len(await answer.read()) == 40
        # Time: a watch with nothing to say ends after max_seconds.
        started = time.monotonic()
        path = f"/api/v1/namespaces/{kube_namespace}/configmaps?watch=true"
        path += "&fieldSelector=metadata.name%3Dnothing-here"
        async with http.get(f"{proxy_url}{path}") as answer:
            assert answer.status == 200
            await answer.read()
        assert 0.9 < time.monotonic() - started < 10
        # exec, attach and port-forward need an upgrade; --as would need impersonation.
        for headers in (
            {"Connection": "Upgrade", "Upgrade": "websocket"},
            {"Impersonate-User": "admin"},
        ):
            async with http.get(f"{proxy_url}/api", headers=headers) as answer:
                assert answer.status == 403
                status = await answer.json()
                assert status["kind"] == "Status" and status["reason"] == "Forbidden"
