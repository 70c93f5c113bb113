"""Loopback ports for tests: the one way a test picks a port that nothing listens on.

A port is free the moment it is returned (bound, then released); another process may take it
before the test binds it, so a caller that must be sure retries or binds the socket itself.
"""

from __future__ import annotations

import socket


def free_ports(count: int, *, udp: bool = False) -> list[int]:
    """Return ``count`` distinct 127.0.0.1 TCP ports free right now; with ``udp``, free for UDP too.

    The sockets stay bound until all are found, so the ports differ.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            tcp = socket.socket()
            held.append(tcp)
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            if udp:
                datagram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(datagram)
                try:
                    datagram.bind(("127.0.0.1", port))
                except OSError:  # taken for UDP: the held TCP socket makes the next one differ
                    continue
            ports.append(port)
        return ports
    finally:
        for sock in held:
            sock.close()


def free_port(*, udp: bool = False) -> int:
    """Return a 127.0.0.1 port nothing listens on (connecting to it is refused)."""
    return free_ports(1, udp=udp)[0]
