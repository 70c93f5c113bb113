"""A real control plane for a test session: etcd, kube-apiserver, kube-controller-manager.

The binaries come xz-compressed (``K8S_TEST_BINARIES``, by default ``../shared/k8s`` beside the
repository); each is unpacked once into a cache keyed by the sha256 of its ``.xz``, so later
runs start in seconds. The three processes listen on free loopback ports with their data in a
temporary directory, and :meth:`ControlPlane.stop` leaves nothing behind: each runs in its own
process group, dies with the test process (``PR_SET_PDEATHSIG``) if that is killed, and a
later start removes data directories whose test process is gone.

Every flag the control plane runs with is in the three ``*_args`` functions below, and nowhere
else. It must not grow behaviour of its own: the tests see only a kubeconfig, as with any
cluster.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.binaries import binary
from tests.harness.apiserver.server import write_kubeconfig
from tests.ports import free_ports

BINARIES_ENV = "K8S_TEST_BINARIES"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
# ClusterIPs the simulator's kube-proxy stand-in can bind on loopback, as the test server's.
SERVICE_CLUSTER_IP_RANGE = "127.0.101.0/24"
ROOT = Path(__file__).resolve().parents[2]
# Seconds the control plane may take to serve.
START_TIMEOUT = 90.0
_WORKDIR_PREFIX = "kubeprober-cp-"
_PR_SET_PDEATHSIG = 1
# Looked up here, not in the forked child, where another thread may have held the loader lock.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def binaries_dir() -> Path:
    """Return where the binaries are looked for: K8S_TEST_BINARIES, else ../shared/k8s."""
    return Path(os.environ.get(BINARIES_ENV) or ROOT.parent / "shared" / "k8s")


def missing_binaries(directory: Path) -> str | None:
    """Say why ``directory`` cannot give the three binaries, or None when it can."""
    absent = [
        name
        for name in COMPONENTS
        if not (directory / f"{name}.xz").is_file() and not os.access(directory / name, os.X_OK)
    ]
    if not absent:
        return None
    return f"no {', '.join(absent)} (.xz or executable) in {directory} (set {BINARIES_ENV})"


def cache_dir() -> Path:
    """Return the cache the binaries are unpacked into, outside any repository."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kubeprober" / "k8s"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def unpack(directory: Path, cache: Path | None = None) -> dict[str, Path]:
    """Return the path of each binary, unpacking ``NAME.xz`` into the cache the first time.

    A directory of plain executables is used as it is. Concurrent runs each unpack into a
    private file and rename it into place, so a reader never sees half a binary.
    """
    cache = cache or cache_dir()
    paths: dict[str, Path] = {}
    for name in COMPONENTS:
        packed = directory / f"{name}.xz"
        if not packed.is_file():
            paths[name] = directory / name
            continue
        target = cache / _sha256(packed) / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(f".{name}.{os.getpid()}.{secrets.token_hex(4)}")
            try:
                with part.open("wb") as out:
                    subprocess.run(
                        [binary("xz"), "-dc", "-T0", str(packed)], stdout=out, check=True
                    )
                part.chmod(0o755)
                part.replace(target)
            finally:
                part.unlink(missing_ok=True)
        paths[name] = target
    return paths


def etcd_args(data: Path, *, client: int, peer: int) -> list[str]:
    """Flags of the single-member etcd (no fsync: the data dies with the session)."""
    peer_url = f"http://127.0.0.1:{peer}"
    return [
        f"--data-dir={data}",
        f"--listen-client-urls=http://127.0.0.1:{client}",
        f"--advertise-client-urls=http://127.0.0.1:{client}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=default={peer_url}",
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_args(workdir: Path, *, etcd: int, port: int) -> list[str]:
    """Flags of kube-apiserver: RBAC, token auth, loopback ClusterIPs."""
    return [
        f"--etcd-servers=http://127.0.0.1:{etcd}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={workdir / 'certs'}",
        f"--token-auth-file={workdir / 'tokens.csv'}",
        "--authorization-mode=RBAC",
        f"--service-account-issuer=https://127.0.0.1:{port}",
        f"--service-account-key-file={workdir / 'sa.key'}",
        f"--service-account-signing-key-file={workdir / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        # Pods name no token volume: the simulator runs them, no kubelet mounts anything.
        "--disable-admission-plugins=ServiceAccount",
        "--allow-privileged=true",
    ]


def controller_manager_args(workdir: Path, kubeconfig: Path) -> list[str]:
    """Flags of kube-controller-manager: every controller, no leader election, no port."""
    return [
        f"--kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--secure-port=0",
        f"--service-account-private-key-file={workdir / 'sa.key'}",
        "--controllers=*",
    ]


def die_with_parent() -> None:
    """Run in the child before exec: SIGKILL it when the test process dies, however."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_workdirs() -> None:
    """Remove data directories left by test processes that were killed outright."""
    for path in Path(tempfile.gettempdir()).glob(f"{_WORKDIR_PREFIX}*"):
        pid = path.name.removeprefix(_WORKDIR_PREFIX).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


class ControlPlane:
    """etcd, kube-apiserver and kube-controller-manager on loopback, with an admin kubeconfig."""

    def __init__(self, binaries: dict[str, Path]) -> None:
        self.binaries = binaries
        remove_stale_workdirs()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{_WORKDIR_PREFIX}{os.getpid()}-"))
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.server = ""
        # Seconds from the first process started to a controller-manager at work.
        self.startup_seconds = 0.0
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self) -> ControlPlane:
        """Start the three processes and wait until the API serves and controllers run."""
        atexit.register(self.stop)
        began = time.monotonic()
        try:
            self._start(began + START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    @property
    def pids(self) -> list[int]:
        """Return the process ids of etcd, kube-apiserver and kube-controller-manager."""
        return [proc.pid for _, proc in self._procs]

    def _start(self, deadline: float) -> None:
        etcd, peer, port = free_ports(3)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.workdir / "sa.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        token = secrets.token_hex(16)
        (self.workdir / "tokens.csv").write_text(f"{token},admin,admin,system:masters\n")
        self._spawn("etcd", etcd_args(self.workdir / "etcd", client=etcd, peer=peer))
        self._spawn("kube-apiserver", apiserver_args(self.workdir, etcd=etcd, port=port))
        self.server = f"https://127.0.0.1:{port}"
        ca = self.workdir / "certs" / "apiserver.crt"
        self._wait(deadline, "/readyz", token, ca)
        write_kubeconfig(self.kubeconfig, server=self.server, ca_pem=ca.read_bytes(), token=token)
        self._spawn(
            "kube-controller-manager", controller_manager_args(self.workdir, self.kubeconfig)
        )
        # The service account controller at work means the controllers have started.
        self._wait(deadline, "/api/v1/namespaces/default/serviceaccounts/default", token, ca)

    def _spawn(self, name: str, args: list[str]) -> None:
        with (self.workdir / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [str(self.binaries[name]), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self._procs.append((name, proc))

    def _wait(self, deadline: float, path: str, token: str, ca: Path) -> None:
        """Poll ``path`` until it answers 200, failing early if a process exits."""
        while True:
            for name, proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            if ca.exists():
                request = urllib.request.Request(
                    self.server + path, headers={"Authorization": f"Bearer {token}"}
                )
                context = ssl.create_default_context(cafile=str(ca))
                try:
                    with urllib.request.urlopen(request, context=context, timeout=5):
                        return  # any answer but 2xx raises
                except urllib.error.HTTPError as exc:
                    exc.close()  # it holds the connection
                except OSError:
                    pass
            if time.monotonic() > deadline:
                logs = "\n".join(self.log(name) for name, _ in self._procs)
                raise RuntimeError(f"control plane: no {path} after {START_TIMEOUT:.0f}s\n{logs}")
            time.sleep(0.2)

    def log(self, name: str, lines: int = 20) -> str:
        """Return the last lines ``name`` wrote, for failure messages."""
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return f"--- {name}\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Kill the processes and remove the data directory (nothing in it outlives the run)."""
        atexit.unregister(self.stop)
        for _, proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self._procs.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)
