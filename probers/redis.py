"""The ``redis`` prober: prove Redis answers, takes a write and replicates.

A Redis that accepts connections may still refuse writes (out of memory, a failed snapshot
with ``stop-writes-on-bgsave-error``, a replica promoted by nobody) or have lost its primary.
This prober logs in, sends PING, sets, reads back and deletes a scratch key (which expires by
itself should the probe die in between), and reads the replication section of INFO: a primary
must have at least ``minReplicas`` replicas online, a replica must have its link to the primary
up. It uses redis-py's asyncio client, with retries off: a flaky server must show.

``with:`` options:

- ``host`` (required) and ``port`` (default 6379); ``db`` (default 0).
- ``username`` (Redis 6 ACL user) and ``password`` or ``passwordFile`` (a mounted Secret's key,
  first line): the login.
- ``tls`` and ``caFile``: connect over TLS, verifying the certificate against ``host``.
- ``write`` (default true): SET, GET and DEL a scratch key; skipped on a replica, which is
  read-only.
- ``role`` (``any``, ``master`` or ``replica``; default any): the role the server must have.
- ``minReplicas`` (default 0): replicas a primary must have online.

A refused connection or login, a refused write, a wrong role, too few replicas or a replica
whose link is down are ERROR. A password file that cannot be read is UNKNOWN.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from kubeprober.probers.options import SpecError, option, shown
from kubeprober.probers.sdk import CheckFailed, Context, Outcome, read_secret, reason

DESCRIPTION = "Check Redis: log in, PING, a key set, read and deleted, role and replication."

# Seconds the scratch key lives if the probe dies before deleting it.
_SCRATCH_TTL_MS = 60_000


@dataclass(frozen=True)
class Spec:
    """Options of the ``redis`` prober."""

    host: str = option("host name or IP address of the Redis server")
    port: int = option("TCP port", default=6379, minimum=1, maximum=65535)
    db: int = option("database number", default=0, minimum=0)
    username: str | None = option("ACL user name (Redis 6 and later)", default=None)
    password: str | None = option("password; prefer passwordFile", default=None)
    password_file: str | None = option(
        "file whose first line is the password (a mounted Secret)", default=None
    )
    tls: bool = option("connect over TLS", default=False)
    ca_file: str | None = option(
        "PEM file of CA certificates trusted besides the system's", default=None
    )
    write: bool = option("SET, GET and DEL a scratch key (not on a replica)", default=True)
    role: Literal["any", "master", "replica"] = option("role the server must have", default="any")
    min_replicas: int = option("replicas a primary must have online", default=0, minimum=0)

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise SpecError("host", f"expected a host name or IP address, got {shown(self.host)}")
        if self.password is not None and self.password_file is not None:
            raise SpecError("passwordFile", "set password or passwordFile, not both")
        if self.ca_file and not self.tls:
            raise SpecError("caFile", "needs tls: true")


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Log in, PING, write and read back a scratch key, then judge role and replication."""
    where = f"redis at {spec.host}:{spec.port}"
    password = spec.password
    if spec.password_file is not None:
        password = read_secret(spec.password_file, "passwordFile")
    tls: dict[str, Any] = {}
    if spec.tls:
        tls = {"ssl": True, "ssl_ca_certs": spec.ca_file, "ssl_check_hostname": True}
    client = redis.asyncio.Redis(
        host=spec.host,
        port=spec.port,
        db=spec.db,
        username=spec.username,
        password=password,
        socket_timeout=ctx.timeout,
        socket_connect_timeout=ctx.timeout,
        retry=Retry(NoBackoff(), 0),
        single_connection_client=True,
        **tls,
    )
    try:
        async with asyncio.timeout(ctx.timeout):
            return await _check(client, spec, ctx, where)
    except TimeoutError:
        raise CheckFailed(f"{where}: timed out after {ctx.timeout:g}s") from None
    except redis.exceptions.AuthenticationError as exc:
        if password is None:
            raise CheckFailed(
                f"{where} requires a login and none is configured: set passwordFile"
            ) from None
        user = spec.username or "default"
        raise CheckFailed(f"{where}: login as {user} refused: {exc}") from None
    except redis.exceptions.ConnectionError as exc:
        cause = exc.__cause__ or exc.__context__
        raise CheckFailed(f"{where}: cannot connect: {reason(cause or exc)}") from None
    except redis.exceptions.RedisError as exc:
        raise CheckFailed(f"{where}: {type(exc).__name__}: {exc}") from None
    finally:
        await client.aclose()


async def _check(client: redis.asyncio.Redis, spec: Spec, ctx: Context, where: str) -> Outcome:
    with ctx.phase("connect"):
        await client.ping()
    info = await client.info("replication")
    server = await client.info("server")
    role = "replica" if info.get("role") == "slave" else "master"
    where = f"redis {server.get('redis_version', '?')} {role} at {spec.host}:{spec.port}"
    if spec.role != "any" and role != spec.role:
        return Outcome.error(f"{where}: expected a {spec.role}")
    done = ["PONG"]
    if role == "replica":
        primary = f"{info.get('master_host', '?')}:{info.get('master_port', '?')}"
        if info.get("master_link_status") != "up":
            down = info.get("master_link_down_since_seconds", "?")
            return Outcome.error(
                f"{where}: link to its primary {primary} is down (for {down}s); "
                "it serves stale data"
            )
        done.append(f"replicating {primary}")
    else:
        online = [
            f"{v.get('ip')}:{v.get('port')}"
            for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        ]
        if len(online) < spec.min_replicas:
            return Outcome.error(
                f"{where}: {len(online)} replicas online ({', '.join(online) or 'none'}), "
                f"minReplicas {spec.min_replicas}"
            )
        done.append(f"{len(online)} replicas online")
    if spec.write and role == "master":
        key = f"kubeprober:probe:{secrets.token_hex(8)}"
        value = secrets.token_hex(8)
        with ctx.phase("write"):
            try:
                await client.set(key, value, px=_SCRATCH_TTL_MS)
            except redis.exceptions.ResponseError as exc:  # OOM, MISCONF, NOREPLICAS ...
                return Outcome.error(f"{where}: the write was refused: {exc}")
        try:
            with ctx.phase("read"):
                got = await client.get(key)
        finally:
            await client.delete(key)
        if got != value.encode():
            return Outcome.error(f"{where}: {key} read back {shown(got)} after writing {value}")
        done.append("a key set, read and deleted")
    return Outcome.passed(f"{where}: {', '.join(done)}")
