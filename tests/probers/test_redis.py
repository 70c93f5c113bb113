"""The ``redis`` prober against real redis-server primaries and replicas on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from kubeprober.probers import redis as redis_prober
from kubeprober.probers.options import SpecError, parse_options
from kubeprober.probers.sdk import Outcome
from kubeprober.probers.status import Status
from tests.ports import free_port
from tests.probers import _servers
from tests.probers._probe import probe

PASSWORD = "probe-secret"


@pytest.fixture(scope="module")
def replica_port(redis_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A replica of the session's primary, once the primary lists it online."""
    directory = tmp_path_factory.mktemp("replica")
    with _servers.redis(directory, password=PASSWORD, replica_of=redis_port) as port:
        with redis.Redis(port=redis_port, password=PASSWORD) as primary:
            deadline = time.monotonic() + _servers.START_TIMEOUT
            while "online" not in str(primary.info("replication").get("slave0")):
                assert time.monotonic() < deadline, "the replica did not come online"
                time.sleep(0.05)
        yield port


@pytest.fixture(scope="module")
def orphan_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A replica whose primary is nowhere: its link stays down."""
    with _servers.redis(tmp_path_factory.mktemp("orphan"), replica_of=free_port()) as port:
        yield port


async def test_primary_logs_in_and_takes_a_write(redis_port: int) -> None:
    outcome, ctx = await probe(
        redis_prober, {"host": "127.0.0.1", "port": redis_port, "password": PASSWORD}
    )
    assert outcome.status is Status.PASS, outcome.message
    assert f" master at 127.0.0.1:{redis_port}: PONG, " in outcome.message
    assert outcome.message.endswith("a key set, read and deleted")
    assert {"connect", "write", "read"} <= ctx.phases.keys()
    with redis.Redis(port=redis_port, password=PASSWORD) as client:
        assert client.keys("kubeprober:*") == []  # the scratch key is gone


async def test_password_from_a_file(redis_port: int, tmp_path: Path) -> None:
    (tmp_path / "password").write_text(PASSWORD + "\n")
    opts = {"host": "127.0.0.1", "port": redis_port, "passwordFile": str(tmp_path / "password")}
    outcome, _ = await probe(redis_prober, opts)
    assert outcome.status is Status.PASS, outcome.message


async def test_replica_in_sync_and_primary_with_enough_replicas(
    redis_port: int, replica_port: int
) -> None:
    login = {"host": "127.0.0.1", "password": PASSWORD}
    outcome, ctx = await probe(redis_prober, {**login, "port": replica_port, "role": "replica"})
    assert outcome.status is Status.PASS, outcome.message
    assert f"replicating 127.0.0.1:{redis_port}" in outcome.message
    assert "write" not in ctx.phases  # a replica is read-only
    outcome, _ = await probe(redis_prober, {**login, "port": redis_port, "minReplicas": 1})
    assert outcome.status is Status.PASS, outcome.message
    assert "1 replicas online" in outcome.message


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"password": "wrong"}, "login as default refused"),
        ({}, "requires a login and none is configured: set passwordFile"),
        ({"password": PASSWORD, "minReplicas": 3}, "replicas online ("),
        ({"password": PASSWORD, "role": "replica"}, "expected a replica"),
    ],
    ids=["wrong password", "no password", "too few replicas", "wrong role"],
)
async def test_primary_failures(redis_port: int, extra: dict[str, Any], words: str) -> None:
    outcome, _ = await probe(redis_prober, {"host": "127.0.0.1", "port": redis_port, **extra})
    assert outcome.status is Status.ERROR
    assert words in outcome.message


async def test_replica_without_its_primary_is_an_error(orphan_port: int) -> None:
    outcome, _ = await probe(redis_prober, {"host": "127.0.0.1", "port": orphan_port})
    assert outcome.status is Status.ERROR
    assert "link to its primary 127.0.0.1:" in outcome.message
    assert "is down" in outcome.message


async def test_nothing_listening_is_an_error() -> None:
    port = free_port()
    outcome, _ = await probe(redis_prober, {"host": "127.0.0.1", "port": port})
    assert outcome == Outcome(
        Status.ERROR, f"redis at 127.0.0.1:{port}: cannot connect: Connection refused"
    )


async def test_unreadable_password_file_is_unknown(redis_port: int) -> None:
    outcome, _ = await probe(
        redis_prober, {"host": "127.0.0.1", "port": redis_port, "passwordFile": "/nope"}
    )
    assert outcome == Outcome(Status.UNKNOWN, "passwordFile /nope: no such file or directory")


@pytest.mark.parametrize(
    ("opts", "error"),
    [
        ({"host": " "}, 'with.host: expected a host name or IP address, got " "'),
        ({"host": "h", "password": "a", "passwordFile": "f"}, "with.passwordFile: set password"),
        ({"host": "h", "caFile": "ca.pem"}, "with.caFile: needs tls: true"),
        ({"host": "h", "role": "leader"}, "with.role: expected one of any, master, replica"),
    ],
)
def test_bad_options_fail_at_load(opts: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_options(redis_prober.Spec, opts, "with")
    assert str(caught.value).startswith(error)


async def test_tls_with_a_trusted_ca(redis_tls: tuple[int, str]) -> None:
    port, ca_file = redis_tls
    outcome, _ = await probe(
        redis_prober, {"host": "127.0.0.1", "port": port, "tls": True, "caFile": ca_file}
    )
    assert outcome.status is Status.PASS, outcome.message
    outcome, _ = await probe(redis_prober, {"host": "127.0.0.1", "port": port, "tls": True})
    assert outcome.status is Status.ERROR
    assert outcome.message.endswith("cannot connect: self-signed certificate in certificate chain")


async def test_refused_write_is_an_error(redis_port: int) -> None:
    """A primary that wants more replicas than it has refuses writes, as Redis does."""
    with redis.Redis(port=redis_port, password=PASSWORD) as admin:
        admin.config_set("min-replicas-to-write", 5)
        try:
            outcome, _ = await probe(
                redis_prober, {"host": "127.0.0.1", "port": redis_port, "password": PASSWORD}
            )
        finally:
            admin.config_set("min-replicas-to-write", 0)
    assert outcome.status is Status.ERROR
    assert ": the write was refused: NOREPLICAS " in outcome.message
