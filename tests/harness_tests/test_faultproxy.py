"""The fault proxy: injected errors, latency, dropped watches, cut and refused connections."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import urllib3
from kubernetes import client, config

from tests.harness.faultproxy import FaultProxy
from tests.harness.rawapi import call, watch
from tests.harness.tcpproxy import TcpFaultProxy


@pytest.fixture
def proxied(kube_fault_proxy: FaultProxy) -> Iterator[client.ApiClient]:
    """Return an ApiClient that goes through the fault proxy, without client retries."""
    api = config.new_client_from_config(config_file=str(kube_fault_proxy.kubeconfig))
    api.configuration.retries = 0
    api.rest_client.pool_manager.connection_pool_kw["retries"] = False
    try:
        yield api
    finally:
        api.close()


def test_passes_requests_through(proxied: client.ApiClient, kube_namespace: str) -> None:
    """Without faults the proxy is transparent."""
    ans = call(proxied, "GET", f"/api/v1/namespaces/{kube_namespace}")
    assert ans.status == 200 and ans.body["metadata"]["name"] == kube_namespace


def test_injects_errors(
    kube_fault_proxy: FaultProxy, proxied: client.ApiClient, kube_namespace: str
) -> None:
    """fail() answers matching requests with the status, count times."""
    kube_fault_proxy.fail(500, count=2, path="/configmaps")
    path = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    assert call(proxied, "GET", path).status == 500
    assert call(proxied, "GET", f"/api/v1/namespaces/{kube_namespace}").status == 200
    ans = call(proxied, "GET", path)
    assert (ans.status, ans.reason) == (500, "InternalError")
    assert call(proxied, "GET", path).status == 200
    with pytest.raises(client.ApiException) as err:
        kube_fault_proxy.fail(503)
        client.CoreV1Api(proxied).list_namespaced_config_map(kube_namespace)
    assert err.value.status == 503
    kube_fault_proxy.clear()
    client.CoreV1Api(proxied).list_namespaced_config_map(kube_namespace)


def test_adds_latency(kube_fault_proxy: FaultProxy, proxied: client.ApiClient) -> None:
    """delay() slows every request."""
    kube_fault_proxy.delay(0.3)
    start = time.monotonic()
    assert call(proxied, "GET", "/version").status == 200
    assert time.monotonic() - start >= 0.3


def test_drops_watches(
    kube_fault_proxy: FaultProxy, proxied: client.ApiClient, kube_namespace: str
) -> None:
    """drop_watches() aborts open watch streams; the client sees the stream end early."""
    outcome: list[str] = []

    def run() -> None:
        try:
            for _ in watch(
                proxied,
                f"/api/v1/namespaces/{kube_namespace}/configmaps",
                query={"timeoutSeconds": "20"},
            ):
                pass
            outcome.append("ended")
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            outcome.append(type(exc).__name__)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 10
    dropped = 0
    while not dropped and time.monotonic() < deadline:
        time.sleep(0.1)
        dropped = kube_fault_proxy.drop_watches()
    t.join(10)
    assert dropped == 1 and outcome and not t.is_alive()


def test_cut_and_refuse(kube_fault_proxy: FaultProxy, proxied: client.ApiClient) -> None:
    """cut() aborts connections; refuse() makes new connections fail until cleared."""
    assert call(proxied, "GET", "/version").status == 200
    assert kube_fault_proxy.cut() >= 1
    kube_fault_proxy.refuse()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", kube_fault_proxy.port), timeout=2).close()
    kube_fault_proxy.clear()
    socket.create_connection(("127.0.0.1", kube_fault_proxy.port), timeout=2).close()
    assert call(proxied, "GET", "/version").status == 200


def test_tcp_pass_through_proxy(kube_tcp_fault_proxy: TcpFaultProxy, kube_namespace: str) -> None:
    """The pass-through proxy keeps end-to-end TLS and can drop, cut and refuse."""
    api = config.new_client_from_config(config_file=str(kube_tcp_fault_proxy.kubeconfig))
    api.rest_client.pool_manager.connection_pool_kw["retries"] = False
    try:
        assert call(api, "GET", f"/api/v1/namespaces/{kube_namespace}").status == 200
        outcome: list[str] = []

        def run() -> None:
            try:
                for _ in watch(
                    api,
                    f"/api/v1/namespaces/{kube_namespace}/configmaps",
                    query={"timeoutSeconds": "20"},
                ):
                    pass
                outcome.append("ended")
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                outcome.append(type(exc).__name__)

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.5)
        assert kube_tcp_fault_proxy.drop_watches(older_than=0.2) >= 1
        t.join(10)
        assert outcome and not t.is_alive()
        kube_tcp_fault_proxy.refuse()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", kube_tcp_fault_proxy.port), timeout=2).close()
        kube_tcp_fault_proxy.clear()
        kube_tcp_fault_proxy.cut()
        assert call(api, "GET", "/version").status == 200
    finally:
        api.close()
