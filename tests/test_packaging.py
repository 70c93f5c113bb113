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
import yaml

from kubeprober import __version__

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


def test_the_image_runs_the_wheel_as_the_manifests_expect() -> None:
    """The Dockerfile builds the wheel in one stage and runs it from a virtualenv in another,
    as the user and entry command the Deployments rely on (no container engine runs here, so
    the next test runs the same install on this machine)."""
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    stages = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(stages) == 2 and stages[0].endswith(" AS build")
    final = lines[lines.index(stages[1]) :]
    assert "COPY --from=build /opt/kubeprober /opt/kubeprober" in final
    assert 'ENTRYPOINT ["kubeprober"]' in final
    (user,) = [ln.split()[1] for ln in final if ln.startswith("USER ")]
    uid = int(user.split(":")[0])
    for name in ("central/deployment.yaml", "managed/agent/deployment.yaml"):
        pod = yaml.safe_load((ROOT / "manifests" / name).read_text())["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == uid > 0
        assert pod["containers"][0]["command"] == ["kubeprober"]
    # The build context holds what the wheel is built from, and not the working state.
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".state"} <= set(ignored)
    assert not {"pyproject.toml", "README.md", "kubeprober"} & set(ignored)


def test_the_entry_command_works_from_a_clean_venv(wheel: zipfile.ZipFile, tmp_path: Path) -> None:
    """Install the wheel, offline, into a new virtualenv and run its ``kubeprober``.

    The dependencies come from the test environment (appended to the new venv's path; no
    index is reachable offline), so ``kubeprober`` itself must come from the wheel."""
    clean = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(clean)], check=True)
    python = clean / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install"]
    assert wheel.filename is not None
    subprocess.run(
        [*install, "--quiet", "--no-deps", "--no-index", wheel.filename],
        check=True,
        capture_output=True,
    )
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # A plain path line: the test environment's own .pth files (its editable kubeprober) stay
    # unread, and the wheel's kubeprober comes first.
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    Path(site, "test-deps.pth").write_text(deps + "\n")
    env = {"PATH": str(clean / "bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8"}

    def run(*args: str) -> str:
        done = subprocess.run(
            [str(clean / "bin" / "kubeprober"), *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    where = subprocess.run(
        [python, "-c", "import kubeprober; print(kubeprober.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert where.startswith(site), where
    assert run("--version").split() == ["kubeprober", __version__]
    # Every subcommand's parser is built for --version; probers imports every prober.
    assert "http" in run("probers").split()
