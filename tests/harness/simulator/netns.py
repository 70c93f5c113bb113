"""The simulated pods' network: one network namespace per simulator, joined to the host by a veth.

Pod IPs must not be loopback (a real kube-apiserver refuses them in EndpointSlices) and must
never leave the machine. So pods run in a network namespace the harness makes, with one /24 of
198.18.0.0/15 (RFC 2544, reserved for benchmarking): the host end of a veth pair holds the
/24's first address, the namespace end every other one, and the namespace has no route beyond
that /24. The host reaches pod IPs through the veth; pods reach the host only at its first
address. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN, /run).

Sessions on one machine run side by side, so each takes a slot: a /24, a veth ``kpsim<slot>``
and a namespace named after its process. A slot is owned by whoever holds the flock on its file
under :data:`STATE_DIR`, for as long as that process lives; the file names the namespace. A
slot whose lock can be taken belongs to no live session, so what its file names (left by a
killed run, with any pod processes still in it) is removed before anyone takes a new slot.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

POD_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
SLOTS = list(POD_RANGE.subnets(new_prefix=24))
STATE_DIR = Path("/run/kubeprober-sim")
CLONE_NEWNET = 0x40000000  # os.CLONE_NEWNET from Python 3.12


class NetnsUnavailable(Exception):
    """Network namespaces cannot be made here (not root, no CAP_NET_ADMIN, no free /24)."""


class PodNetwork:
    """One session's pod namespace and /24; :meth:`create` makes it, :meth:`close` removes it."""

    def __init__(self, *, ip: str, nsenter: str, slot: int, name: str, lock: int) -> None:
        self.ip = ip
        self.nsenter = nsenter
        self.name = name
        self.subnet = SLOTS[slot]
        hosts = [str(h) for h in self.subnet.hosts()]
        self.host_ip = hosts[0]
        self.pod_ips = hosts[1:]
        self.veth = _veth(slot)
        self._lock = lock

    @classmethod
    def create(cls, ip: str, nsenter: str) -> PodNetwork:
        """Claim a free slot (removing dead sessions' ones) and set up its namespace."""
        if os.geteuid() != 0:
            raise NetnsUnavailable("pods run in a network namespace, which needs root")
        try:
            STATE_DIR.mkdir(exist_ok=True)
            with open(STATE_DIR / "alloc.lock", "w") as guard:
                fcntl.flock(guard, fcntl.LOCK_EX)
                _remove_stale(ip)
                slot, lock = _claim(_routes(ip))
            name = f"kpsim-{os.getpid()}-{secrets.token_hex(3)}"
            os.ftruncate(lock, 0)
            os.pwrite(lock, name.encode(), 0)
        except OSError as exc:
            raise NetnsUnavailable(f"{STATE_DIR}: {exc.strerror}") from exc
        net = cls(ip=ip, nsenter=nsenter, slot=slot, name=name, lock=lock)
        try:
            net._set_up()
        except NetnsUnavailable as exc:
            net.close()
            raise NetnsUnavailable(
                f"cannot make the pods' network namespace (root with CAP_NET_ADMIN and "
                f"CAP_SYS_ADMIN can): {exc}"
            ) from exc
        except BaseException:
            net.close()
            raise
        return net

    def _set_up(self) -> None:
        plen = self.subnet.prefixlen
        _ip(
            self.ip,
            "-batch",
            "-",
            stdin=f"netns add {self.name}\n"
            f"link add {self.veth} type veth peer name eth0 netns {self.name}\n"
            f"addr add {self.host_ip}/{plen} dev {self.veth}\n"
            f"link set {self.veth} up\n",
        )
        inside = ["link set lo up", "link set eth0 up"]
        inside += [f"addr add {a}/{plen} dev eth0" for a in self.pod_ips]
        _ip(self.ip, "-n", self.name, "-batch", "-", stdin="\n".join(inside) + "\n")

    def command(self, argv: list[str]) -> list[str]:
        """Return argv wrapped to run inside the pod namespace."""
        return [self.nsenter, f"--net=/run/netns/{self.name}", "--", *argv]

    def listen(self, address: tuple[str, int]) -> socket.socket:
        """Return a TCP socket listening at address inside the pod namespace."""
        return self._inside(lambda: socket.create_server(address))

    def datagram(self, address: tuple[str, int]) -> socket.socket:
        """Return a UDP socket bound to address inside the pod namespace."""

        def bound() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind(address)
            except OSError:
                sock.close()
                raise
            return sock

        return self._inside(bound)

    def _inside(self, make: Callable[[], socket.socket]) -> socket.socket:
        """Return the socket ``make`` creates inside the pod namespace.

        A socket stays in the namespace it was made in, so a short-lived thread enters the
        namespace (only that thread moves) to make it; any thread may use it afterwards.
        """
        made: list[socket.socket | OSError] = []

        def inside() -> None:
            try:
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
                try:
                    if _LIBC.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns: {os.strerror(err)}")
                finally:
                    os.close(fd)
                made.append(make())
            except OSError as exc:
                made.append(exc)

        thread = threading.Thread(target=inside, name=f"sim-socket-{self.name}")
        thread.start()
        thread.join()
        if isinstance(made[0], OSError):
            raise made[0]
        return made[0]

    def close(self) -> None:
        """Kill what still runs in the namespace, remove it and release the slot."""
        if self._lock < 0:
            return
        _tear_down(self.ip, self.name, self.veth)
        os.ftruncate(self._lock, 0)
        os.close(self._lock)
        self._lock = -1


_LIBC = ctypes.CDLL(None, use_errno=True)


def _veth(slot: int) -> str:
    return f"kpsim{slot}"


def _ip(ip: str, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [ip, *args], input=stdin, capture_output=True, text=True, check=False, timeout=30
    )
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[0]
        raise NetnsUnavailable(f"ip {' '.join(args)}: {detail}")
    return proc.stdout


def _tear_down(ip: str, name: str, veth: str) -> None:
    with contextlib.suppress(NetnsUnavailable):
        for pid in _ip(ip, "netns", "pids", name).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    # Deleting the host end removes the pair and the /24's route at once; the namespace
    # itself goes when its mount does and nothing runs in it.
    with contextlib.suppress(NetnsUnavailable):
        _ip(ip, "link", "del", veth)
    with contextlib.suppress(NetnsUnavailable):
        _ip(ip, "netns", "del", name)


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _remove_stale(ip: str) -> None:
    """Remove the namespaces of slots whose session is gone."""
    for path in STATE_DIR.glob("slot-*"):
        fd = _try_lock(path)
        if fd is None:
            continue
        try:
            name = os.pread(fd, 256, 0).decode(errors="replace").strip()
            if name:
                _tear_down(ip, name, _veth(int(path.name.removeprefix("slot-"))))
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)


def _routes(ip: str) -> list[ipaddress.IPv4Network]:
    """Return what the host already routes (another tool may use part of 198.18.0.0/15)."""
    out = []
    for route in json.loads(_ip(ip, "-j", "-4", "route", "show", "table", "all") or "[]"):
        with contextlib.suppress(ValueError):  # "default"
            out.append(ipaddress.IPv4Network(route.get("dst", ""), strict=False))
    return out


def _claim(routes: list[ipaddress.IPv4Network]) -> tuple[int, int]:
    """Lock the first slot whose /24 nothing on the host routes; return it and its lock."""
    for slot, subnet in enumerate(SLOTS):
        if any(subnet.overlaps(r) for r in routes):
            continue
        fd = _try_lock(STATE_DIR / f"slot-{slot}")
        if fd is not None:
            return slot, fd
    raise NetnsUnavailable(f"no free /24 left in {POD_RANGE}")
