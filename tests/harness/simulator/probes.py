"""Readiness probes of local containers, run against the pod IP like a kubelet would.

Socket and HTTP probes come from the host, as a kubelet's do; exec probes run in the pod
network namespace, as they would in the container.
"""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from typing import Any

from .netns import PodNetwork


def probe(probe: dict[str, Any], ip: str, network: PodNetwork) -> bool:
    """Run one readiness probe against a pod IP."""
    try:
        if "tcpSocket" in probe:
            with socket.create_connection((ip, int(probe["tcpSocket"]["port"])), timeout=1):
                return True
        if "httpGet" in probe:
            g = probe["httpGet"]
            url = f"http://{ip}:{int(g['port'])}{g.get('path', '/')}"
            with urllib.request.urlopen(url, timeout=1) as resp:
                return 200 <= resp.status < 400
        if "exec" in probe:
            return (
                subprocess.run(
                    network.command(probe["exec"]["command"]),
                    timeout=5,
                    check=False,
                    capture_output=True,
                ).returncode
                == 0
            )
    except (OSError, subprocess.SubprocessError):
        return False
    return True
