"""The simulator's pod network: a namespace and /24 per session, removed even after a kill."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.binaries import binary, unavailable
from tests.harness.simulator.netns import NetnsUnavailable, PodNetwork
from tests.harness.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]

# A session that sets up its network, starts a pod process in it, and is then killed.
KILLED_SESSION = """
import subprocess, sys
from tests.harness.simulator.netns import PodNetwork
net = PodNetwork.create(sys.argv[1], sys.argv[2])
pod = subprocess.Popen(
    net.command([sys.executable, "-c", "import signal; print(flush=True); signal.pause()"]),
    stdout=subprocess.PIPE,
    start_new_session=True,
)
pod.stdout.readline()  # the pod runs in the namespace
print(net.name, pod.pid, flush=True)
sys.stdin.read()
"""

UNPRIVILEGED = """
import sys
from tests.harness.simulator.netns import NetnsUnavailable, PodNetwork
try:
    PodNetwork.create(sys.argv[1], sys.argv[2])
except NetnsUnavailable as exc:
    print(exc)
"""


def _create() -> PodNetwork:
    try:
        return PodNetwork.create(binary("ip"), binary("nsenter"))
    except NetnsUnavailable as exc:
        unavailable(f"pod network: {exc}")


def _namespaces() -> set[str]:
    out = subprocess.run(
        [binary("ip"), "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _dead(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_sessions_get_their_own_namespace_and_subnet() -> None:
    """Two networks side by side share nothing, route only their /24 and leave no trace."""
    a = _create()
    try:
        b = _create()
        try:
            assert a.name != b.name and a.veth != b.veth
            assert not a.subnet.overlaps(b.subnet)
            for net in (a, b):
                assert {net.host_ip, *net.pod_ips} == {str(h) for h in net.subnet.hosts()}
                routes = subprocess.run(
                    net.command([binary("ip"), "-4", "route"]),
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.splitlines()
                assert [r.split()[0] for r in routes] == [str(net.subnet)]
        finally:
            b.close()
    finally:
        a.close()
    assert not {a.name, b.name} & _namespaces()


def test_a_killed_session_s_namespace_is_removed_by_the_next() -> None:
    """A session killed outright leaves its namespace and pods; the next session removes them."""
    ip, nsenter = binary("ip"), binary("nsenter")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SESSION, ip, nsenter],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    proc.kill()
    proc.communicate()
    if not line:
        unavailable("pod network: the session could not set up its namespace")
    name, pod = line[0], int(line[1])
    assert name in _namespaces() and not _dead(pod)
    net = _create()
    try:
        assert name not in _namespaces()
        wait_for(lambda: _dead(pod), timeout=10, what="the dead session's pod killed")
    finally:
        net.close()


def test_without_privileges_the_reason_is_given() -> None:
    """Where namespaces cannot be made, set-up says why in one line and leaves nothing."""
    if os.geteuid() != 0:
        unavailable("pod network: dropping privileges needs root to start with")
    proc = subprocess.Popen(
        [
            binary("setpriv"),
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--",
            sys.executable,
            "-c",
            UNPRIVILEGED,
            binary("ip"),
            binary("nsenter"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    out = proc.communicate(timeout=60)[0]
    assert out.startswith("cannot make the pods' network namespace"), out
    assert "Operation not permitted" in out
    assert len(out.splitlines()) == 1
    # setpriv execs the interpreter: its pid names the namespace it tried to make
    assert not [n for n in _namespaces() if n.startswith(f"kpsim-{proc.pid}-")]
