"""Session-scoped real servers for the middleware probers: each starts once, on first use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trustme

from tests.probers import _servers


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
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_servers.Mariadb]:
    with _servers.mariadb(tmp_path_factory.mktemp("mariadb")) as server:
        yield server
