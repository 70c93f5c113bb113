"""A real DNS server for tests: dnsmasq on 127.0.0.1, serving only the records it is given.

dnsmasq is started with no upstream, no hosts file and no config file, so it answers from the
command line alone and never sends a packet off the machine. Names under ``test`` that it does
not know get NXDOMAIN (``--local=/test/``) rather than REFUSED.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query

from tests.binaries import binary
from tests.ports import free_port

_START_TIMEOUT = 5.0


@contextlib.contextmanager
def dnsmasq(records: Sequence[str], *, log_dir: Path) -> Iterator[int]:
    """Run dnsmasq with ``records`` (its ``--host-record=...`` style options); yield its port."""
    for _attempt in range(3):  # another process may take the port between probe and bind
        port = free_port(udp=True)
        log = log_dir / f"dnsmasq-{port}.log"
        argv = [
            binary("dnsmasq"),
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--log-facility=-",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            f"--port={port}",
            "--user=root",  # as root it would switch to nobody (not in every container)
            "--local=/test/",
            *records,
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            if _wait_ready(proc, port):
                yield port
                return
        finally:
            _stop(proc)
    raise RuntimeError(f"dnsmasq did not start; see {log}: {log.read_text()[-500:]}")


def _wait_ready(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Return True once dnsmasq answers a query, False if it exited."""
    query = dns.message.make_query("ready.test.", "A")
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            dns.query.udp(query, "127.0.0.1", port=port, timeout=0.1)
            return True
        except (dns.exception.Timeout, OSError):
            time.sleep(0.05)
    raise RuntimeError(f"dnsmasq on port {port} did not answer within {_START_TIMEOUT}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate dnsmasq and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
