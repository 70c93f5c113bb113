"""Real middleware for the prober tests: etcd, Redis and MariaDB on 127.0.0.1, data in temp dirs.

Each server is the Debian package's binary (tests/binaries.py), started with flags only (no
config file of the machine is read), listening on loopback alone, and stopped with its data
removed when the context exits. A server whose process exits while starting fails at once with
the end of its log. The fixtures in ``tests/probers/conftest.py`` start each once per session.
"""

from __future__ import annotations

import contextlib
import getpass
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.binaries import binary
from tests.harness.realcluster import die_with_parent
from tests.ports import free_ports

START_TIMEOUT = 30.0
"""Seconds a server may take to answer: MariaDB's first start creates its system tables."""


@dataclass(frozen=True)
class Etcd:
    """An etcd member serving TLS that requires client certificates."""

    endpoint: str
    ca_file: str
    cert_file: str
    key_file: str


@dataclass(frozen=True)
class Mariadb:
    """A MariaDB server with one user who owns database ``probe`` and may read ``readonly``."""

    port: int
    user: str
    password: str
    database: str
    max_connections: int
    ca_file: str
    """The CA that issued the server's certificate (TLS is offered, not required)."""
    socket: str
    """Unix socket where root logs in without a password, to change the server's settings."""


def _write_certs(directory: Path, ca: trustme.CA, *names: str) -> dict[str, str]:
    """Write ``ca``'s certificate and a leaf for each of ``names`` (and its key) as PEM files."""
    paths = {"ca": str(directory / "ca.pem")}
    ca.cert_pem.write_to_path(paths["ca"])
    for name in names:
        leaf = ca.issue_cert("127.0.0.1" if name == "server" else f"kubeprober-{name}")
        paths[name] = str(directory / f"{name}.pem")
        paths[f"{name}-key"] = str(directory / f"{name}-key.pem")
        leaf.cert_chain_pems[0].write_to_path(paths[name])
        leaf.private_key_pem.write_to_path(paths[f"{name}-key"])
    return paths


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # a killed test run leaves no server behind
        )


def _wait(proc: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool]) -> None:
    """Poll ``ready`` until it holds; fail with the log if the process exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(
                f"{log.stem} exited with {proc.returncode}: {log.read_text()[-800:]}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{log.stem} not ready in {START_TIMEOUT:g}s: {log.read_text()[-800:]}"
            )
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _accepts(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    return ready


@contextlib.contextmanager
def etcd(directory: Path, ca: trustme.CA) -> Iterator[Etcd]:
    """Run etcd with TLS on its client port, trusting client certificates issued by ``ca``."""
    client, peer = free_ports(2)
    paths = _write_certs(directory, ca, "server", "client")
    url = f"https://127.0.0.1:{client}"
    argv = [
        binary("etcd"),
        f"--data-dir={directory / 'data'}",
        f"--listen-client-urls={url}",
        f"--advertise-client-urls={url}",
        f"--listen-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-cluster=default=http://127.0.0.1:{peer}",
        f"--cert-file={paths['server']}",
        f"--key-file={paths['server-key']}",
        f"--trusted-ca-file={paths['ca']}",
        "--client-cert-auth",
        "--unsafe-no-fsync",
        "--logger=zap",
        "--log-level=warn",
    ]
    log = directory / "etcd.log"
    proc = _spawn(argv, log)
    try:
        _wait(proc, log, _accepts(client))
        yield Etcd(url, paths["ca"], paths["client"], paths["client-key"])
    finally:
        _stop(proc)


@contextlib.contextmanager
def redis(
    directory: Path,
    *,
    password: str = "",
    replica_of: int | None = None,
    tls: trustme.CA | None = None,
) -> Iterator[int]:
    """Run redis-server (a replica of 127.0.0.1:``replica_of`` if given); yield its port.

    With ``tls``, the port speaks TLS only, with a certificate for 127.0.0.1 from that CA.
    """
    (port,) = free_ports(1)
    argv = [
        binary("redis-server"),
        "--bind",
        "127.0.0.1",
        "--port",
        "0" if tls else str(port),
        "--dir",
        str(directory),
        "--save",
        "",
        "--appendonly",
        "no",
        "--repl-diskless-sync-delay",  # replicas sync at once, not 5 s later
        "0",
    ]
    if password:
        argv += ["--requirepass", password, "--masterauth", password]
    if replica_of is not None:
        argv += ["--replicaof", "127.0.0.1", str(replica_of)]
    if tls is not None:
        paths = _write_certs(directory, tls, "server")
        argv += ["--tls-port", str(port), "--tls-cert-file", paths["server"]]
        argv += ["--tls-key-file", paths["server-key"], "--tls-ca-cert-file", paths["ca"]]
        argv += ["--tls-auth-clients", "no"]
    log = directory / f"redis-{port}.log"
    proc = _spawn(argv, log)
    try:
        _wait(proc, log, _accepts(port))
        yield port
    finally:
        _stop(proc)


@contextlib.contextmanager
def mariadb(directory: Path, ca: trustme.CA) -> Iterator[Mariadb]:
    """Run mariadbd with a fresh data directory and a password user owning database ``probe``.

    It offers TLS with a certificate for 127.0.0.1 issued by ``ca``.
    """
    (port,) = free_ports(1)
    data = directory / "data"
    log = directory / "mariadb.log"
    with log.open("wb") as out:
        subprocess.run(
            [
                binary("mariadb-install-db"),
                "--no-defaults",
                f"--datadir={data}",
                # mariadbd refuses to run as root unless told to (CI runs as root)
                f"--user={getpass.getuser()}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                "--innodb-flush-method=nosync",  # the data dies with the session
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
        )
    paths = _write_certs(directory, ca, "server")
    sock = str(directory / "mysqld.sock")
    db = Mariadb(port, "probe", "probe-secret", "probe", 20, paths["ca"], sock)
    init = directory / "init.sql"
    init.write_text(
        f"CREATE DATABASE {db.database};\n"
        f"CREATE USER '{db.user}'@'127.0.0.1' IDENTIFIED BY '{db.password}';\n"
        f"GRANT ALL ON {db.database}.* TO '{db.user}'@'127.0.0.1';\n"
        # a database the user may read but not write: a write there is refused
        "CREATE DATABASE readonly;\n"
        f"GRANT SELECT ON readonly.* TO '{db.user}'@'127.0.0.1';\n"
    )
    argv = [
        binary("mariadbd"),
        "--no-defaults",
        f"--datadir={data}",
        f"--user={getpass.getuser()}",
        "--bind-address=127.0.0.1",
        f"--port={port}",
        f"--socket={sock}",
        f"--pid-file={directory / 'mysqld.pid'}",
        f"--init-file={init}",
        f"--max-connections={db.max_connections}",
        "--skip-name-resolve",
        "--innodb-flush-method=nosync",
        "--innodb-buffer-pool-size=16M",
        "--innodb-log-file-size=8M",
        "--skip-log-bin",
        f"--ssl-ca={paths['ca']}",
        f"--ssl-cert={paths['server']}",
        f"--ssl-key={paths['server-key']}",
    ]
    proc = _spawn(argv, directory / "mariadbd.log")
    try:
        _wait(proc, directory / "mariadbd.log", _accepts(port))
        yield db
    finally:
        _stop(proc)
