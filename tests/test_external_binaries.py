"""Every external program the suite runs comes from a Debian package of ci/apt-packages.txt."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.binaries import BINARIES, IMAGE, find

ROOT = Path(__file__).resolve().parent.parent


def listed_packages() -> set[str]:
    """The package names in ci/apt-packages.txt."""
    lines = (ROOT / "ci" / "apt-packages.txt").read_text().splitlines()
    return {ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")}


@pytest.mark.parametrize("name", sorted(BINARIES))
def test_binary_package_is_listed(name: str) -> None:
    """The package named for each binary is one `make deps` installs."""
    package = BINARIES[name]
    if package == IMAGE:
        return
    assert package in listed_packages(), f"{name}: package {package} not in ci/apt-packages.txt"


@pytest.mark.parametrize("name", sorted(n for n, p in BINARIES.items() if p != IMAGE))
def test_binary_comes_from_its_package(name: str) -> None:
    """The binary found is the one its package ships (dpkg owns that path)."""
    path = find(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} missing in CI: `make deps` should install {BINARIES[name]}")
        pytest.skip(f"{name} not installed")
    owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True, check=False)
    assert owner.stdout.split(":")[0] == BINARIES[name], owner.stdout or owner.stderr


# Files that may look programs up: the table itself, and the simulated kubelet, which resolves a
# container's command in the container's own $PATH as a container runtime does.
MAY_LOOK_UP = {"binaries.py", "kubelet.py"}


def test_tests_get_binaries_only_through_the_table() -> None:
    """No test finds a program on its own, bypassing tests/binaries.py."""
    bypass = re.compile(r"shutil\.which\(|[\"']/usr/s?bin/")
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("*.py")
        if path.name not in MAY_LOOK_UP and bypass.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
