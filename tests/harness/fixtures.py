"""The pytest plugin that gives tests a Kubernetes cluster: the test server or a real one.

By default the project's API test server runs for the session. ``K8S_TEST_BACKEND=real``
starts a real control plane instead (:mod:`tests.harness.realcluster`), and
``K8S_TEST_KUBECONFIG`` names a real cluster someone already runs (a kube-apiserver with a
controller-manager, no nodes needed: the simulator registers its own). Tests see only a
kubeconfig and API clients, so they cannot tell which one they got. Every test that takes the
cluster is marked ``kube``: ``-m kube`` selects them for a second leg. Register with
``pytest_plugins = ["tests.harness.fixtures"]``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.binaries import binary, unavailable
from tests.harness import realcluster
from tests.harness.apiserver.server import ApiServer
from tests.harness.faultproxy import FaultProxy
from tests.harness.kubectl import Kubectl
from tests.harness.rawapi import call
from tests.harness.simulator import ClusterDns, NetnsUnavailable, Simulator
from tests.harness.tcpproxy import TcpFaultProxy

ENV = "K8S_TEST_KUBECONFIG"
BACKEND_ENV = "K8S_TEST_BACKEND"
BACKENDS = ("testserver", "real")
# The control plane this session started, and when the session began: for the summary line.
PLANE = pytest.StashKey[realcluster.ControlPlane]()
BEGAN = pytest.StashKey[float]()
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


def backend() -> str:
    """Return the backend K8S_TEST_BACKEND asks for (``testserver`` when unset)."""
    return os.environ.get(BACKEND_ENV) or BACKENDS[0]


def pytest_configure(config: pytest.Config) -> None:
    """Check the backend; without binaries, skip the real leg (or fail it in CI)."""
    config.addinivalue_line("markers", "kube: takes the Kubernetes cluster from the harness")
    if backend() not in BACKENDS:
        raise pytest.UsageError(f"{BACKEND_ENV}={backend()}: expected one of {BACKENDS}")
    if backend() == "real" and not os.environ.get(ENV):
        reason = realcluster.missing_binaries(realcluster.binaries_dir())
        if reason is None:
            return
        if os.environ.get("CI") == "true":
            pytest.exit(f"real control plane leg failed: {reason}", returncode=1)
        pytest.exit(f"real control plane leg skipped: {reason}", returncode=0)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Note when the session began, for the real leg's wall time."""
    session.config.stash[BEGAN] = time.monotonic()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Print the real leg's wall time and the control plane's start-up time."""
    plane = config.stash.get(PLANE, None)
    if plane is not None:
        wall = time.monotonic() - config.stash[BEGAN]
        terminalreporter.write_line(
            f"real control plane leg: {wall:.0f} s wall time "
            f"(control plane up in {plane.startup_seconds:.1f} s)"
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that takes the cluster ``kube``."""
    for item in items:
        if "kube_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kube)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, so teardown runs as on Ctrl-C."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@pytest.fixture(scope="session")
def kube_cluster(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[KubeCluster]:
    """Start the API test server, a real control plane, or use K8S_TEST_KUBECONFIG's cluster."""
    real = os.environ.get(ENV)
    if real:
        yield KubeCluster(Path(real), None)
        return
    if backend() == "real":
        with _interruptible():
            plane = realcluster.ControlPlane(realcluster.unpack(realcluster.binaries_dir()))
            pytestconfig.stash[PLANE] = plane.start()
            try:
                yield KubeCluster(plane.kubeconfig, None)
            finally:
                plane.stop()
        return
    server = ApiServer(tmp_path_factory.mktemp("kube-apiserver")).start()
    try:
        yield KubeCluster(server.kubeconfig, server)
    finally:
        server.stop()


@pytest.fixture
def opaque_resource_versions(kube_cluster: KubeCluster) -> Iterator[None]:
    """While the test runs, the API test server writes resourceVersions that are not numbers.

    A real server's are etcd revisions, but Kubernetes tells clients to take them as opaque
    strings: code that parses or orders them fails on the API test server leg with this. On a
    real control plane there is nothing to change.
    """
    server = kube_cluster.server
    if server is None:
        yield
        return
    store = server.store
    assert store is not None
    server.call(lambda: setattr(store, "opaque", True))
    try:
        yield
    finally:
        server.call(lambda: setattr(store, "opaque", False))


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
    deletions = Deletions(api)
    deletions.add(name, timeout)
    deletions.check(wait=True)


class Deletions:
    """Namespaces being deleted, each with a deadline to be gone by.

    A real namespace controller waits 5 s before it empties a deleted namespace, so on a real
    cluster tests do not wait for their namespace: the next test checks that none is late.
    """

    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)
        self._deadlines: dict[str, float] = {}

    def add(self, name: str, timeout: float = NAMESPACE_DELETE_TIMEOUT) -> None:
        """Delete namespace ``name``; it must be gone within ``timeout`` seconds."""
        with contextlib.suppress(ApiException):
            self._core.delete_namespace(name)
        self._deadlines[name] = time.monotonic() + timeout

    def check(self, *, wait: bool = False) -> None:
        """Forget the namespaces that are gone and fail on a late one; ``wait`` for all."""
        while self._deadlines:
            present = {ns.metadata.name for ns in self._core.list_namespace().items}
            for name in set(self._deadlines) - present:
                del self._deadlines[name]
            late = sorted(n for n, t in self._deadlines.items() if time.monotonic() > t)
            if late:
                for name in late:
                    del self._deadlines[name]
                raise AssertionError(f"namespaces {late} still present past their deletion timeout")
            if not wait:
                return
            time.sleep(0.1)


@pytest.fixture(scope="session")
def kube_deletions(kube_api: client.ApiClient) -> Deletions:
    """Return the session's namespace deletions; ``check(wait=True)`` before looking across
    namespaces on a real cluster, where test namespaces go a few seconds after their test."""
    return Deletions(kube_api)


@pytest.fixture
def kube_namespace(
    kube_cluster: KubeCluster, kube_api: client.ApiClient, kube_deletions: Deletions
) -> Iterator[str]:
    """Return a fresh namespace for this test; it is deleted afterwards (and awaited, except
    on a real cluster, where the next test checks that it went)."""
    kube_deletions.check()
    name = create_namespace(kube_api)
    try:
        yield name
    finally:
        kube_deletions.add(name)
        if not kube_cluster.real:
            kube_deletions.check(wait=True)


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
def kube_cluster_dns(kube_simulator: Simulator) -> ClusterDns:
    """Return the simulator's cluster DNS, deployed and answering (``kube-system/kube-dns``)."""
    return kube_simulator.start_dns()


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
