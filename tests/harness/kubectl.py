"""Run the real kubectl against the cluster under test, with an isolated discovery cache.

The cache directory is per session: kubectl caches discovery for hours per host:port, and a
stale cache would hide CRDs a test just created.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


class Kubectl:
    """A kubectl bound to one kubeconfig."""

    def __init__(self, path: str, kubeconfig: Path, cache_dir: Path) -> None:
        self.path = path
        self.kubeconfig = kubeconfig
        self.cache_dir = cache_dir

    def argv(self, *args: str) -> list[str]:
        """Return the full command line for args."""
        return [
            self.path,
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.cache_dir}",
            *args,
        ]

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl and return its result; raise with its output when check fails."""
        proc = subprocess.run(
            self.argv(*args),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start a long-running kubectl (e.g. ``get -w``); the caller must stop it."""
        return subprocess.Popen(
            self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
