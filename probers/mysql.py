"""The ``mysql`` prober: prove MySQL or MariaDB accepts a login, answers, and has room.

A database that listens may still refuse logins, have run out of connections, or have turned
read-only. This prober logs in, runs ``SELECT 1``, compares the connections in use with
``max_connections``, and optionally creates a scratch table, writes a row, reads it back and
drops the table. It uses PyMySQL (pure Python) in a worker thread, with the check's timeout as
its connect, read and write timeouts, so a hung server cannot hold the thread for longer.

``with:`` options:

- ``host`` (required) and ``port`` (default 3306); ``user`` (required) and ``password`` or
  ``passwordFile`` (a mounted Secret's key, first line); ``database`` to log in to.
- ``tls`` with ``caFile``: connect over TLS, verifying the server's certificate.
- ``write`` (default false; needs ``database`` and the CREATE, INSERT, SELECT and DROP
  privileges there): create ``kubeprober_probe_<random>``, insert, read back, drop.
- ``warnConnectionsPercent`` (default 80): WARN when this share of ``max_connections`` is in
  use, before clients start getting "Too many connections".

A refused connection or login, an unknown database, a failed write, a read-only server asked to
write and "Too many connections" are ERROR. A password file that cannot be read is UNKNOWN.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from dataclasses import dataclass
from typing import Any

import pymysql

from kubeprober.probers.options import SpecError, option, shown
from kubeprober.probers.sdk import CheckFailed, Context, Outcome, read_secret, trusting

DESCRIPTION = "Check MySQL/MariaDB: log in, SELECT 1, connections in use, a scratch table write."

# Server error codes that get a hint.
_ACCESS_DENIED = 1045
_TOO_MANY_CONNECTIONS = 1040


@dataclass(frozen=True)
class Spec:
    """Options of the ``mysql`` prober."""

    host: str = option("host name or IP address of the server")
    user: str = option("user to log in as")
    port: int = option("TCP port", default=3306, minimum=1, maximum=65535)
    password: str | None = option("password; prefer passwordFile", default=None)
    password_file: str | None = option(
        "file whose first line is the password (a mounted Secret)", default=None
    )
    database: str | None = option("database to log in to (needed by write)", default=None)
    tls: bool = option("connect over TLS, verifying the certificate", default=False)
    ca_file: str | None = option(
        "PEM file of CA certificates trusted besides the system's", default=None
    )
    write: bool = option("create a scratch table, insert, read back and drop it", default=False)
    warn_connections_percent: int = option(
        "WARN when this share of max_connections is in use", default=80, minimum=1, maximum=100
    )

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise SpecError("host", f"expected a host name or IP address, got {shown(self.host)}")
        if self.password is not None and self.password_file is not None:
            raise SpecError("passwordFile", "set password or passwordFile, not both")
        if self.ca_file and not self.tls:
            raise SpecError("caFile", "needs tls: true")
        if self.write and not self.database:
            raise SpecError("write", "needs database: the scratch table is created there")


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Log in and check in a worker thread; PyMySQL's own timeouts bound the thread."""
    password = spec.password
    if spec.password_file is not None:
        password = read_secret(spec.password_file, "passwordFile")
    where = f"mysql at {spec.host}:{spec.port}"
    try:
        tls = trusting(spec.ca_file) if spec.tls else None
        return await asyncio.to_thread(_check, spec, password or "", tls, ctx, where)
    except pymysql.err.MySQLError as exc:
        raise CheckFailed(f"{where}: {_said(exc, spec)}") from None


def _check(
    spec: Spec, password: str, tls: ssl.SSLContext | None, ctx: Context, where: str
) -> Outcome:
    with ctx.phase("connect"):
        conn = pymysql.connect(
            host=spec.host,
            port=spec.port,
            user=spec.user,
            password=password,
            database=spec.database,
            connect_timeout=ctx.timeout,
            read_timeout=ctx.timeout,
            write_timeout=ctx.timeout,
            ssl=tls,
            autocommit=True,
        )
    with conn, conn.cursor() as cur:
        with ctx.phase("query"):
            cur.execute("SELECT 1, VERSION(), @@max_connections, @@read_only")
            one, version, max_connections, read_only = cur.fetchone() or (0, "?", 0, 0)
            cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
            row = cur.fetchone()
        if one != 1:
            return Outcome.error(f"{where}: SELECT 1 returned {shown(one)}")
        product = "MariaDB" if "MariaDB" in str(version) else "MySQL"
        where = f"{product} {version} at {spec.host}:{spec.port}"
        used = int(row[1]) if row else 0
        share = 100 * used // max(int(max_connections), 1)
        connections = f"{used} of {max_connections} connections in use"
        done = ["SELECT 1", connections]
        if spec.write:
            if int(read_only):
                return Outcome.error(f"{where} is read-only (read_only=ON): writes fail")
            with ctx.phase("write"):
                done.append(_scratch_table(cur))
        if share >= spec.warn_connections_percent:
            return Outcome.warn(
                f"{where}: {connections} ({share}%, warnConnectionsPercent "
                f"{spec.warn_connections_percent}): raise max_connections or find the leak"
            )
        return Outcome.passed(f"{where}: {', '.join(done)}")


def _scratch_table(cur: Any) -> str:
    """Create a table of its own, write a row, read it back, drop the table; say what it did."""
    table = f"kubeprober_probe_{secrets.token_hex(4)}"
    token = secrets.token_hex(8)
    cur.execute(f"CREATE TABLE `{table}` (id INT PRIMARY KEY, token VARCHAR(32) NOT NULL)")
    try:
        cur.execute(f"INSERT INTO `{table}` VALUES (1, %s)", (token,))
        cur.execute(f"SELECT token FROM `{table}` WHERE id = 1")
        row = cur.fetchone()
    finally:
        cur.execute(f"DROP TABLE `{table}`")
    if not row or row[0] != token:
        raise CheckFailed(f"table {table}: read back {shown(row)} after writing {token}")
    return f"table {table} written, read and dropped"


def _said(exc: pymysql.err.MySQLError, spec: Spec) -> str:
    """Give the server's (or PyMySQL's) words, with a hint for the usual causes."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    hints = {
        _ACCESS_DENIED: f" (check user {spec.user}'s password and the host part of its grant)",
        _TOO_MANY_CONNECTIONS: " (raise max_connections or find the client that leaks them)",
    }
    return text + hints.get(code or 0, "")
