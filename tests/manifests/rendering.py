"""The manifests as ``kubectl kustomize`` renders them (no cluster needed), for the tests."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.binaries import binary
from tests.conftest import MANIFESTS

OVERLAYS = (
    "crds",
    "central",
    "central/ingress",
    "managed",
    "managed/all-namespaces",
    "probes",
    "prometheus",
    "grafana",
)
"""What the install guide applies; every other kustomization here is a base of these."""

KUSTOMIZATIONS = tuple(
    sorted(str(p.parent.relative_to(MANIFESTS)) for p in MANIFESTS.rglob("kustomization.yaml"))
)
"""Every kustomization under manifests/, overlays and bases (components excluded below)."""


@functools.cache
def _rendered(path: str) -> str:
    return subprocess.run(
        [binary("kubectl"), "kustomize", str(MANIFESTS / path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def render(path: str) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize manifests/PATH`` prints, fresh copies each call."""
    return [d for d in yaml.safe_load_all(_rendered(path)) if d]


def is_component(path: str) -> bool:
    """A kustomize Component renders only inside a kustomization that names it."""
    kind: str = yaml.safe_load((MANIFESTS / path / "kustomization.yaml").read_text())["kind"]
    return kind == "Component"


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of that kind and name."""
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def local_command(container: dict[str, Any], *, env: dict[str, str], root: Path) -> list[str]:
    """The container's command line as its pod would run it, for a process on this machine:
    ``$(VAR)`` from ``env`` (the values its ConfigMap and Secret refs would give) and every
    volume mount path moved under ``root``."""
    mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
    line = []
    for arg in [*container["command"], *container.get("args", [])]:
        arg = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg)
        flag, eq, value = arg.partition("=")
        if eq and any(value == m or value.startswith(f"{m}/") for m in mounts):
            arg = f"{flag}={root}{value}"
        line.append(arg)
    return line
