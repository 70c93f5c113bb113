"""The real control plane's lifecycle: unpacked once, and nothing left behind, even when killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.binaries import binary, unavailable
from tests.harness import realcluster
from tests.harness.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _pack(directory: Path, name: str, text: str) -> Path:
    plain = directory / name
    plain.write_text(text)
    subprocess.run([binary("xz"), "-z", str(plain)], check=True)
    return directory / f"{name}.xz"


def test_binaries_are_unpacked_once_by_digest(tmp_path: Path) -> None:
    packed = tmp_path / "packed"
    packed.mkdir()
    for name in realcluster.COMPONENTS:
        _pack(packed, name, f"#!/bin/sh\necho {name}\n")
    cache = tmp_path / "cache"
    paths = realcluster.unpack(packed, cache)
    for name, path in paths.items():
        assert path.parent.parent == cache and len(path.parent.name) == 64  # sha256 of the .xz
        assert subprocess.run([path], capture_output=True, text=True).stdout == f"{name}\n"
    stamps = {p: p.stat().st_mtime_ns for p in paths.values()}
    assert realcluster.unpack(packed, cache) == paths
    assert {p: p.stat().st_mtime_ns for p in paths.values()} == stamps
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == sorted(
        realcluster.COMPONENTS
    )  # no half-written file left beside them


def test_missing_binaries_are_named_with_the_folder(tmp_path: Path) -> None:
    _pack(tmp_path, "etcd", "#!/bin/sh\n")
    reason = realcluster.missing_binaries(tmp_path)
    assert reason is not None
    assert "kube-apiserver, kube-controller-manager" in reason and str(tmp_path) in reason
    assert "etcd" not in reason.split(" in ")[0]
    assert realcluster.BINARIES_ENV in reason


# Starts a control plane, prints its data directory and pids, then waits to be killed.
_HOLDER = """
import sys, time
from pathlib import Path
from tests.harness import realcluster
plane = realcluster.ControlPlane(realcluster.unpack(Path(sys.argv[1]))).start()
print(plane.workdir, *plane.pids, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    """Tell whether ``pid`` is dead: absent, or a zombie nobody reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _binaries() -> Path:
    """Return the binaries' folder; skip without it (fail in CI, which has them)."""
    directory = realcluster.binaries_dir()
    reason = realcluster.missing_binaries(directory)
    if reason:
        unavailable(f"real control plane: {reason}")
    return directory


@pytest.mark.slow
def test_a_killed_session_leaves_no_process_and_its_data_goes_next_time() -> None:
    directory = _binaries()
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(directory)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            workdir, *pids = holder.stdout.readline().split()
            assert len(pids) == 3 and Path(workdir).is_dir()
            holder.send_signal(signal.SIGKILL)  # no atexit, no signal handler: only the kernel
            holder.wait()
            wait_for(lambda: all(_gone(int(p)) for p in pids), timeout=10, what="PDEATHSIG")
            assert Path(workdir).is_dir()  # nobody was left to remove it...
            realcluster.remove_stale_workdirs()
            assert not Path(workdir).exists()  # ...until the next start looks
        finally:
            holder.kill()


# A session on the real control plane that prints its data directory and pids, then waits.
_SESSION = """
import time
from tests.harness.fixtures import PLANE

def test_hold(kube_cluster, pytestconfig):
    plane = pytestconfig.stash[PLANE]
    print("PLANE", plane.workdir, *plane.pids, flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_session_stops_its_control_plane(
    signum: signal.Signals, tmp_path: Path
) -> None:
    directory = _binaries()
    (tmp_path / "test_hold.py").write_text(_SESSION)
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "tests.harness.fixtures"]
    env = {**os.environ, "K8S_TEST_BACKEND": "real", realcluster.BINARIES_ENV: str(directory)}
    env.pop("K8S_TEST_KUBECONFIG", None)
    env["PYTHONPATH"] = str(ROOT)
    with subprocess.Popen(
        [*command, "--rootdir", str(tmp_path), "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as session:
        try:
            assert session.stdout is not None
            line = next(ln for ln in session.stdout if ln.startswith("PLANE "))
            workdir, *pids = line.split()[1:]
            session.send_signal(signum)
            assert session.wait(30) != 0
            assert all(_gone(int(p)) for p in pids)
            assert not Path(workdir).exists()
        finally:
            session.kill()
