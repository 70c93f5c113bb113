"""The ``mysql`` prober against a real MariaDB server on loopback."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pymysql
import pytest

from kubeprober.probers import mysql
from kubeprober.probers.options import SpecError, parse_options
from kubeprober.probers.sdk import Outcome
from kubeprober.probers.status import Status
from tests.ports import free_port
from tests.probers._probe import probe
from tests.probers._servers import Mariadb


def login(db: Mariadb, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": db.port, "user": db.user, "password": db.password, **extra}


async def test_login_and_select(mariadb_server: Mariadb) -> None:
    outcome, ctx = await probe(mysql, login(mariadb_server))
    assert outcome.status is Status.PASS, outcome.message
    assert re.fullmatch(
        rf"MariaDB \S+ at 127\.0\.0\.1:{mariadb_server.port}: SELECT 1, "
        rf"\d+ of {mariadb_server.max_connections} connections in use",
        outcome.message,
    )
    assert {"connect", "query"} <= ctx.phases.keys()


async def test_write_leaves_no_table(mariadb_server: Mariadb, tmp_path: Path) -> None:
    (tmp_path / "password").write_text(mariadb_server.password + "\n")
    opts = login(mariadb_server, database="probe", write=True)
    del opts["password"]
    opts["passwordFile"] = str(tmp_path / "password")
    outcome, ctx = await probe(mysql, opts)
    assert outcome.status is Status.PASS, outcome.message
    assert re.search(
        r"table kubeprober_probe_[0-9a-f]{8} written, read and dropped", outcome.message
    )
    assert "write" in ctx.phases
    with (
        pymysql.connect(
            host="127.0.0.1",
            port=mariadb_server.port,
            user=mariadb_server.user,
            password=mariadb_server.password,
            database="probe",
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SHOW TABLES")
        assert cur.fetchall() == ()


async def test_connections_near_the_limit_warn(mariadb_server: Mariadb) -> None:
    outcome, _ = await probe(mysql, login(mariadb_server, warnConnectionsPercent=1))
    assert outcome.status is Status.WARN
    assert f"of {mariadb_server.max_connections} connections in use (" in outcome.message
    assert "raise max_connections or find the leak" in outcome.message


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (
            {"password": "wrong"},
            "Access denied for user 'probe'@'127.0.0.1' (using password: YES) "
            "(check user probe's password and the host part of its grant)",
        ),
        ({"database": "nosuch"}, "Access denied for user 'probe'@'127.0.0.1' to database 'nosuch'"),
        ({"database": "readonly", "write": True}, "CREATE command denied to user 'probe'"),
    ],
    ids=["wrong password", "database not granted", "write refused"],
)
async def test_refusals_are_errors(
    mariadb_server: Mariadb, extra: dict[str, Any], words: str
) -> None:
    outcome, _ = await probe(mysql, login(mariadb_server, **extra))
    assert outcome.status is Status.ERROR
    assert outcome.message.startswith(f"mysql at 127.0.0.1:{mariadb_server.port}: ")
    assert words in outcome.message


async def test_nothing_listening_is_an_error() -> None:
    port = free_port()
    outcome, _ = await probe(mysql, {"host": "127.0.0.1", "port": port, "user": "u"})
    assert outcome.status is Status.ERROR
    assert f"mysql at 127.0.0.1:{port}: Can't connect to MySQL server" in outcome.message
    assert "Connection refused" in outcome.message


async def test_unreadable_password_file_is_unknown() -> None:
    outcome, _ = await probe(mysql, {"host": "h", "user": "u", "passwordFile": "/nope"})
    assert outcome == Outcome(Status.UNKNOWN, "passwordFile /nope: no such file or directory")


@pytest.mark.parametrize(
    ("opts", "error"),
    [
        ({"host": "h"}, "with.user: required"),
        ({"host": "h", "user": "u", "write": True}, "with.write: needs database"),
        ({"host": "h", "user": "u", "caFile": "ca.pem"}, "with.caFile: needs tls: true"),
        ({"host": "h", "user": "u", "warnConnectionsPercent": 0}, "with.warnConnectionsPercent"),
    ],
)
def test_bad_options_fail_at_load(opts: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_options(mysql.Spec, opts, "with")
    assert str(caught.value).startswith(error)


async def test_tls_with_a_trusted_ca(mariadb_server: Mariadb) -> None:
    outcome, _ = await probe(mysql, login(mariadb_server, tls=True, caFile=mariadb_server.ca_file))
    assert outcome.status is Status.PASS, outcome.message
    outcome, _ = await probe(mysql, login(mariadb_server, tls=True))
    assert outcome.status is Status.ERROR
    assert "certificate verify failed" in outcome.message


async def test_write_to_a_read_only_server_is_an_error(mariadb_server: Mariadb) -> None:
    with pymysql.connect(unix_socket=mariadb_server.socket, user="root") as root:
        with root.cursor() as cur:
            cur.execute("SET GLOBAL read_only = ON")
        try:
            outcome, _ = await probe(mysql, login(mariadb_server, database="probe", write=True))
        finally:
            with root.cursor() as cur:
                cur.execute("SET GLOBAL read_only = OFF")
    assert outcome.status is Status.ERROR
    assert outcome.message.endswith(" is read-only (read_only=ON): writes fail")
