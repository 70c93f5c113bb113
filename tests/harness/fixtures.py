"""The pytest plugin that gives tests a Kubernetes cluster: the test server or a real one.

``K8S_TEST_KUBECONFIG`` unset: the project's API test server runs for the session. Set: that
real cluster is used (a kube-apiserver with a controller-manager, no nodes needed: the
simulator registers its own). Tests see only a kubeconfig and API clients, so they cannot tell
which one they got. Register with ``pytest_plugins = ["tests.harness.fixtures"]``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.binaries import binary, unavailable
from tests.harness.apiserver.server import ApiServer
from tests.harness.faultproxy import FaultProxy
from tests.harness.kubectl import Kubectl
from tests.harness.rawapi import call
from tests.harness.simulator import NetnsUnavailable, Simulator
from tests.harness.tcpproxy import TcpFaultProxy

ENV = "K8S_TEST_KUBECONFIG"
# Seconds a test namespace may take to disappear (pods wait for the simulator's kubelet).
NAMESPACE_DELETE_TIMEOUT = 60.0
MERGE = "application/merge-patch+json"


@dataclass
class KubeCluster:
    """The cluster under test: a kubeconfig, and the test server when it is ours."""

    kubeconfig: Path
    server: ApiServer | None

    @property
    def real(self) -> bool:
        """Tell whether this is a real kube-apiserver."""
        return self.server is None


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """Start the API test server, or use the real cluster named by K8S_TEST_KUBECONFIG."""
    real = os.environ.get(ENV)
    if real:
        yield KubeCluster(Path(real), None)
        return
    server = ApiServer(tmp_path_factory.mktemp("kube-apiserver")).start()
    try:
        yield KubeCluster(server.kubeconfig, server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kube_config_path(kube_cluster: KubeCluster) -> Path:
    """Return the kubeconfig file a CLI or an agent can be given."""
    return kube_cluster.kubeconfig


@pytest.fixture(scope="session")
def kube_api(kube_config_path: Path) -> Iterator[client.ApiClient]:
    """Return a kubernetes.client.ApiClient for the cluster under test."""
    api = config.new_client_from_config(config_file=str(kube_config_path))
    try:
        yield api
    finally:
        api.close()


def create_namespace(api: client.ApiClient, prefix: str = "kp-test-") -> str:
    """Create a fresh namespace and wait for its default ServiceAccount (pods need it)."""
    core = client.CoreV1Api(api)
    name = prefix + secrets.token_hex(4)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException as exc:
            if exc.status != 404:
                raise
            time.sleep(0.05)
    return name


def delete_namespace(
    api: client.ApiClient, name: str, timeout: float = NAMESPACE_DELETE_TIMEOUT
) -> None:
    """Delete a namespace and wait until it is gone."""
    core = client.CoreV1Api(api)
    with contextlib.suppress(ApiException):
        core.delete_namespace(name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.1)
    raise AssertionError(f"namespace {name} still present {timeout:.0f}s after deletion")


@pytest.fixture
def kube_namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """Return a fresh namespace for this test; it is deleted (and awaited) afterwards."""
    name = create_namespace(kube_api)
    try:
        yield name
    finally:
        delete_namespace(kube_api, name)


@pytest.fixture
def kube_held(kube_api: client.ApiClient, kube_namespace: str) -> Iterator[list[str]]:
    """Return a list for the API paths of objects this test holds with finalizers.

    Their finalizers are cleared at teardown, before the test namespace is deleted, so a failed
    test never leaves its namespace stuck in Terminating on a real cluster.
    """
    paths: list[str] = []
    try:
        yield paths
    finally:
        for path in paths:
            call(kube_api, "PATCH", path, {"metadata": {"finalizers": None}}, content_type=MERGE)


@pytest.fixture(scope="session")
def kube_simulator(kube_config_path: Path) -> Iterator[Simulator]:
    """Run the cluster simulator (nodes, kubelet, kube-proxy stand-in) for the session."""
    try:
        sim = Simulator(kube_config_path, ip=binary("ip"), nsenter=binary("nsenter"))
    except NetnsUnavailable as exc:
        reason = str(exc)
    else:
        reason = ""
    if reason:  # outside the handler: the reason alone, no chained traceback
        unavailable(f"cluster simulator: {reason}")
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="session")
def kubectl(kube_config_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    """Return the real kubectl bound to the cluster under test (skips or fails when absent)."""
    return Kubectl(binary("kubectl"), kube_config_path, tmp_path_factory.mktemp("kubectl-cache"))


@pytest.fixture
def kube_fault_proxy(kube_config_path: Path, tmp_path: Path) -> Iterator[FaultProxy]:
    """Return a fault proxy in front of the cluster; use its ``kubeconfig`` to go through it."""
    proxy = FaultProxy(kube_config_path, tmp_path)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def kube_tcp_fault_proxy(kube_config_path: Path, tmp_path: Path) -> Iterator[TcpFaultProxy]:
    """Return a TLS pass-through proxy in front of the cluster (connection-level faults)."""
    proxy = TcpFaultProxy(kube_config_path, tmp_path)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
