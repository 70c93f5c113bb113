"""The wheel installs one import package, ``kubeprober``: no generic top-level names.

The four product folders stay at the top of the repository; ``kubeprober/`` links them in, so
the wheel, the editable install, mypy and pytest all see ``kubeprober.probers`` and friends.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _copy_tracked(dest: Path) -> None:
    """Copy the files git tracks (links kept as links) into ``dest``, nothing else."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        target = dest / name.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(source.readlink())
        elif source.exists():  # a tracked file deleted in the working tree is not shipped
            shutil.copy2(source, target)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """Build the wheel from a clean copy of the tracked files, without network access."""
    src = tmp_path_factory.mktemp("src")
    _copy_tracked(src)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("kubeprober-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_installs_only_kubeprober(wheel: zipfile.ZipFile) -> None:
    """Every file outside the dist-info lives under kubeprober/."""
    tops = {name.split("/", 1)[0] for name in wheel.namelist()}
    tops = {top for top in tops if not top.endswith(".dist-info")}
    assert tops == {"kubeprober"}
    (top_level,) = [n for n in wheel.namelist() if n.endswith(".dist-info/top_level.txt")]
    assert wheel.read(top_level).decode().split() == ["kubeprober"]


@pytest.mark.parametrize(
    "path",
    [
        "kubeprober/cli.py",
        "kubeprober/probers/registry.py",
        "kubeprober/exporter/agent.py",
        "kubeprober/aggregator/state.py",
        "kubeprober/aggregator/board/index.html",
        "kubeprober/tunnel/session.py",
        "kubeprober/tunnel/http/serve.py",
    ],
)
def test_wheel_carries_every_package(wheel: zipfile.ZipFile, path: str) -> None:
    """The linked folders and the board's static files are in the wheel as real files."""
    assert wheel.getinfo(path).file_size > 0


def test_entry_point_names_the_installed_module(wheel: zipfile.ZipFile) -> None:
    """The console script imports kubeprober.cli, which exists in the wheel."""
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "kubeprober = kubeprober.cli:main" in wheel.read(entry_points).decode()
