"""External programs the suite runs, and the Debian package each comes from.

Tests get a binary only through :func:`binary`, so ``test_external_binaries`` can hold this
table against ``ci/apt-packages.txt``. Outside CI a missing binary skips the test (with the
package to install); with ``CI=true`` it fails, so CI never hides a missing install step.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

# The machine image ships these (not a Debian package of ours): kubectl from the Cloud SDK.
IMAGE = "(machine image)"

# binary name -> Debian package that ships it, or IMAGE
BINARIES: dict[str, str] = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "dnsmasq": "dnsmasq-base",
    "go": "golang-go",
    "kubectl": IMAGE,
    "chromium": "chromium",
    "ip": "iproute2",
    "nsenter": "util-linux",
    "setpriv": "util-linux",
    # unpacks the real control plane's binaries (tests/harness/realcluster.py)
    "xz": "xz-utils",
    # the middleware probers' real servers (tests/probers/_servers.py)
    "etcd": "etcd-server",
    "redis-server": "redis-server",
    "mariadbd": "mariadb-server-core",
    "mariadb-install-db": "mariadb-server-core",
    # the middleware example's certificates (examples/middleware-servers.sh)
    "openssl": "openssl",
    # the script container probe example (examples/custom-probe/shop-health.sh)
    "curl": "curl",
}

# Where Debian puts binaries that are not on PATH by default.
EXTRA_PATHS: dict[str, tuple[str, ...]] = {
    "dnsmasq": ("/usr/sbin/dnsmasq",),
    "mariadbd": ("/usr/sbin/mariadbd",),
    # dpkg knows iproute2's ip by its pre-merge path; /usr/sbin/ip is the same file.
    "ip": ("/sbin/ip",),
    # The image's kubectl 1.33 is the real CLI client; plain `kubectl` otherwise.
    "kubectl": ("/usr/lib/google-cloud-sdk/bin/kubectl.1.33",),
}


def find(name: str) -> str | None:
    """Return the path of ``name``: the preferred path first, else PATH; None if absent."""
    preferred = next((p for p in EXTRA_PATHS.get(name, ()) if os.access(p, os.X_OK)), None)
    return preferred or shutil.which(name)


def binary(name: str) -> str:
    """Return the path of external program ``name``; skip (or fail in CI) when missing."""
    if name not in BINARIES:
        raise KeyError(f"{name} is not in tests/binaries.py BINARIES: add it with its package")
    path = find(name)
    if path is None:
        unavailable(f"{name} not installed (Debian package {BINARIES[name]}; run `make deps`)")
    return path


def unavailable(reason: str) -> NoReturn:
    """Skip the test for reason, or fail it with CI=true, where nothing may be missing."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
