"""The probers' Kubernetes API, and real servers for the middleware probers (each started once
per session, on first use)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trustme

from kubeprober.exporter.kube.access import CheckApi, ProberAccess
from tests.probers import _servers


@pytest.fixture
def prober_kube(prober_access: ProberAccess) -> CheckApi:
    """``ctx.kube`` for one check of up to 10 s, as the agent gives a prober."""
    return prober_access.for_check(10)


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_servers.Etcd]:
    with _servers.etcd(tmp_path_factory.mktemp("etcd"), trustme.CA()) as server:
        yield server


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A Redis primary asking for password ``probe-secret``."""
    with _servers.redis(tmp_path_factory.mktemp("redis"), password="probe-secret") as port:
        yield port


@pytest.fixture(scope="session")
def redis_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """A Redis speaking TLS only; its port and the CA file that trusts it."""
    directory = tmp_path_factory.mktemp("redis-tls")
    with _servers.redis(directory, tls=trustme.CA()) as port:
        yield port, str(directory / "ca.pem")


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_servers.Mariadb]:
    with _servers.mariadb(tmp_path_factory.mktemp("mariadb"), trustme.CA()) as server:
        yield server
