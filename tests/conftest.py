"""Suite-wide fixtures: every async test must leave no task of its own running."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubeprober.exporter.kube.access import ProberAccess
from kubeprober.kube.api import ApiSettings, KubeApi
from tests.harness.kubectl import Kubectl
from tests.harness.rawapi import call

if TYPE_CHECKING:  # the plugin is imported as a plugin, below
    from tests.harness.fixtures import Deletions, KubeCluster

# The Kubernetes test harness (API test server or K8S_TEST_KUBECONFIG, simulator, fault
# proxies): see tests/harness/README.md.
pytest_plugins = ["tests.harness.fixtures"]


@pytest_asyncio.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail the test if tasks it started are still running after its fixtures closed."""
    async for _ in check_no_leaked_tasks():
        yield


async def check_no_leaked_tasks() -> AsyncIterator[None]:
    """The body of ``no_leaked_tasks``, for modules whose tests run in a wider event loop."""
    before = asyncio.all_tasks()
    yield
    me = asyncio.current_task()
    leaked: list[asyncio.Task[object]] = []
    for _ in range(50):  # cancelled tasks need a few loop turns to unwind
        leaked = [t for t in asyncio.all_tasks() - before if t is not me and not t.done()]
        if not leaked:
            return
        await asyncio.sleep(0.02)
    names = ", ".join(sorted(t.get_name() for t in leaked))
    for task in leaked:
        task.cancel()
    pytest.fail(f"test left {len(leaked)} task(s) running: {names}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every coroutine test the leak check (declared first, so it is torn down last)."""
    for item in items:
        func = getattr(item, "function", None)
        if func is not None and inspect.iscoroutinefunction(func):
            fixturenames = getattr(item, "fixturenames", None)
            if fixturenames is not None and "no_leaked_tasks" not in fixturenames:
                fixturenames.insert(0, "no_leaked_tasks")


MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
CRD_DIR = MANIFESTS / "crds"
RBAC_NAMESPACE = "kubeprober"
"""Where manifests/managed/ puts the agent (its ServiceAccount, RoleBindings, Deployment)."""
CENTRAL_NAMESPACE = "kubeprober-central"
"""Where manifests/central/ puts the aggregator."""
_CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


@pytest.fixture(scope="session")
def crds(kube_api: client.ApiClient) -> None:
    """Install (or update) the project's CRDs from manifests/crds and wait until served."""
    install_crds(kube_api)


def install_crds(kube_api: client.ApiClient) -> None:
    """Install (or update) the project's CRDs and wait until they are served."""
    plurals = []
    for name in yaml.safe_load((CRD_DIR / "kustomization.yaml").read_text())["resources"]:
        body = yaml.safe_load((CRD_DIR / name).read_text())
        name = body["metadata"]["name"]
        plurals.append(body["spec"]["names"]["plural"])
        have = call(kube_api, "GET", f"{_CRDS}/{name}")
        if have.status == 404:
            answer = call(kube_api, "POST", _CRDS, body)
        else:
            body["metadata"]["resourceVersion"] = have.body["metadata"]["resourceVersion"]
            answer = call(kube_api, "PUT", f"{_CRDS}/{name}", body)
        assert answer.status in (200, 201), answer.body
    deadline = time.monotonic() + 30
    for plural in plurals:
        while call(kube_api, "GET", f"/apis/kubeprober.io/v1/{plural}").status != 200:
            assert time.monotonic() < deadline, f"CRD {plural} never served"
            time.sleep(0.1)


@pytest.fixture
def rbac(
    kube_cluster: KubeCluster,
    kube_api: client.ApiClient,
    kube_deletions: Deletions,
    kubectl: Kubectl,
    crds: None,
) -> Iterator[Callable[..., None]]:
    """Return ``apply(*paths)`` for paths under manifests/ (folders are kustomizations), into
    the manifests' namespaces ``kubeprober`` and ``kubeprober-central``, created for the test;
    all go afterwards.

    Skips on the API test server, which enforces no RBAC (the real leg runs these tests), and
    on a cluster that has those namespaces already: its kubeprober is not ours to touch.
    """
    if not kube_cluster.real:
        pytest.skip("the API test server enforces no RBAC: the real control plane leg runs this")
    made = []
    try:
        for name in (RBAC_NAMESPACE, CENTRAL_NAMESPACE):
            body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
            try:
                client.CoreV1Api(kube_api).create_namespace(body)
            except ApiException as exc:
                if exc.status == 409:
                    pytest.skip(f"namespace {name} exists in this cluster: left alone")
                raise
            made.append(name)
    except BaseException:
        for name in made:
            kube_deletions.add(name)
        raise
    applied: list[list[str]] = []

    def apply(*paths: str) -> None:
        args = []
        for path in paths:
            args += ["-k" if (MANIFESTS / path).is_dir() else "-f", str(MANIFESTS / path)]
        kubectl("apply", *args)
        applied.append(args)

    try:
        yield apply
    finally:
        for args in reversed(applied):
            kubectl("delete", "--ignore-not-found", "--wait=false", *args)
        # The next test creates them again: wait until they are gone.
        for name in made:
            kube_deletions.add(name)
        kube_deletions.check(wait=True)


FAST_API = ApiSettings(connect_timeout=2.0, request_timeout=5.0, watch_timeout=60)
"""Timeouts for tests: the API server is on loopback, and outages are simulated for seconds."""


@pytest_asyncio.fixture
async def kube(kube_config_path: Path, crds: None) -> AsyncIterator[KubeApi]:
    """Return the shared API layer's facade for the cluster under test, CRDs installed."""
    api = KubeApi.from_kubeconfig(kube_config_path, settings=FAST_API)
    try:
        yield api
    finally:
        await api.close()


@pytest_asyncio.fixture
async def prober_access(kube_config_path: Path) -> AsyncIterator[ProberAccess]:
    """The probers' API (``ctx.kube``'s source) for the cluster under test, admin credentials."""
    api = KubeApi.from_kubeconfig(kube_config_path, settings=FAST_API)
    try:
        yield ProberAccess(api)
    finally:
        await api.close()
