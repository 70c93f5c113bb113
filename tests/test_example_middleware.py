"""examples/middleware.yaml passes against the servers its comment says how to start.

The test runs the very commands of the comment (examples/middleware-servers.sh start, kubeprober
check, stop), so the example and its instructions cannot drift apart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.binaries import binary

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "middleware.yaml"
SCRIPT = ROOT / "examples" / "middleware-servers.sh"
KUBEPROBER = str(Path(sys.executable).with_name("kubeprober"))
# The example's file paths name this directory.
STATE = Path("/tmp/kubeprober-middleware")
PROGRAMS = ("etcd", "redis-server", "dnsmasq", "mariadbd", "mariadb-install-db", "openssl")


@pytest.fixture
def servers() -> Iterator[None]:
    """Start the servers as the example's comment says; stop them and remove their data after."""
    assert f"sh examples/middleware-servers.sh start {STATE}" in EXAMPLE.read_text()
    found = {str(Path(binary(name)).parent) for name in PROGRAMS}
    env = {
        **os.environ,
        "PATH": os.pathsep.join([*sorted(found), os.environ.get("PATH", "")]),
        "PYTHON": sys.executable,
    }
    shutil.rmtree(STATE, ignore_errors=True)
    start = [*("sh", str(SCRIPT)), "start", str(STATE)]
    try:
        subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
        yield
    finally:
        subprocess.run(["sh", str(SCRIPT), "stop", str(STATE)], env=env, timeout=60)
        shutil.rmtree(STATE, ignore_errors=True)


def test_every_check_of_the_example_passes(servers: None) -> None:
    result = subprocess.run(
        [KUBEPROBER, "check", str(EXAMPLE), "-o", "json"],
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
