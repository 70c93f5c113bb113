"""examples/middleware.yaml passes against the servers its comment says how to start.

The test runs the commands of the comment (examples/middleware-servers.sh start, kubeprober check,
stop), so the example and its instructions cannot drift apart. Only the ports and the directory
differ, free ones of this run's own, so that runs side by side (or a user's servers on the
documented ports) do not meet: the script takes them from the environment, and the example is
checked with its addresses and paths rewritten to match.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.binaries import binary
from tests.ports import free_port, free_ports

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "middleware.yaml"
SCRIPT = ROOT / "examples" / "middleware-servers.sh"
KUBEPROBER = str(Path(sys.executable).with_name("kubeprober"))
STATE = "/tmp/kubeprober-middleware"
"""The directory the example's comment starts the servers in, and its file paths name."""
PORTS = {"ETCD_PORT": 23790, "ETCD_PEER_PORT": 23800, "MYSQL_PORT": 33060, "REDIS_PORT": 63790}
PORTS |= {"SHOP_PORT": 18443, "DNS_PORT": 53530}
PROGRAMS = ("etcd", "redis-server", "dnsmasq", "mariadbd", "mariadb-install-db", "openssl")


@pytest.fixture
def example(tmp_path: Path) -> Iterator[Path]:
    """Start the servers as the example's comment says; yield the example rewritten for them."""
    text = EXAMPLE.read_text()
    assert f"sh examples/middleware-servers.sh start {STATE}" in text
    ports = dict(zip(PORTS, [*free_ports(len(PORTS) - 1), free_port(udp=True)], strict=True))
    state = tmp_path / "state"
    for name, documented in PORTS.items():
        text = re.sub(rf"\b{documented}\b", str(ports[name]), text)
    rewritten = tmp_path / "middleware.yaml"
    rewritten.write_text(text.replace(STATE, str(state)))
    found = {str(Path(binary(name)).parent) for name in PROGRAMS}
    env = {
        **os.environ,
        **{name: str(port) for name, port in ports.items()},
        "PATH": os.pathsep.join([*sorted(found), os.environ.get("PATH", "")]),
        "PYTHON": sys.executable,
    }
    start = subprocess.run(
        ["sh", str(SCRIPT), "start", str(state)], env=env, capture_output=True, timeout=120
    )
    try:
        assert start.returncode == 0, start.stderr.decode()
        yield rewritten
    finally:
        subprocess.run(["sh", str(SCRIPT), "stop", str(state)], env=env, timeout=60)


def test_every_check_of_the_example_passes(example: Path) -> None:
    result = subprocess.run(
        [KUBEPROBER, "check", str(example), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    doc = json.loads(result.stdout)
    (probe,) = doc["clusters"][0]["probes"]
    statuses = {c["name"]: (c["status"], c["message"]) for c in probe["checks"]}
    assert {name: status for name, (status, _) in statuses.items()} == {
        "etcd": "PASS",
        "mysql": "PASS",
        "redis": "PASS",
        "dns": "PASS",
        "shop-login-then-orders": "PASS",
        "shop-certificate": "PASS",
    }, statuses
    assert result.returncode == 0
