"""The import map of docs/design.md holds: every import of ours and of ``kubernetes`` is allowed.

The rules are read from the document's two tables, so the page and the test cannot drift.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
PACKAGE = ROOT / "kubeprober"
EVERYTHING = "everything"
_ROW = re.compile(r"^\|\s*`([\w.]+)`\s*\|\s*(.+?)\s*\|\s*$")


def _table(header: str) -> dict[str, list[str]]:
    """Rows of the design page's two-column table whose header line is ``header``."""
    rows: dict[str, list[str]] = {}
    inside = False
    for line in DESIGN.read_text(encoding="utf-8").splitlines():
        if line.strip() == header:
            inside = True
        elif inside and not line.startswith("|"):
            break
        elif inside and (match := _ROW.match(line)):
            rows[match[1]] = re.findall(r"`([\w.]+)`", match[2]) or [match[2]]
    assert rows, f"docs/design.md has no table headed {header!r}"
    return rows


ALLOWED = _table("| package | may import |")
THIRD_PARTY = _table("| third-party package | only in |")


def owner(module: str) -> str:
    """The longest package of the import map that contains ``module``."""
    candidates = [p for p in ALLOWED if module == p or module.startswith(p + ".")]
    assert candidates, f"{module} is in no package of the import map"
    return max(candidates, key=len)


def module_name(path: Path, package_dir: Path) -> str:
    """The dotted name a source file under ``package_dir`` (kubeprober/) is imported as."""
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """Every module a source file imports, absolute, with its line number."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base


def sources() -> list[Path]:
    """Every Python file of the installed package (the linked folders included)."""
    found = []
    for folder, _, files in os.walk(PACKAGE, followlinks=True):
        found += [Path(folder) / name for name in files if name.endswith(".py")]
    return sorted(found)


def violations(path: Path, package_dir: Path = PACKAGE) -> list[str]:
    """The imports of one file that the map does not allow."""
    module = module_name(path, package_dir)
    mine = owner(module)
    allowed = ALLOWED[mine]
    found = []
    for line, imported in imports(path, module):
        where = f"{path.relative_to(package_dir.parent)}:{line}"
        top = imported.split(".")[0]
        if top == "kubeprober":
            theirs = owner(imported)
            if theirs != mine and EVERYTHING not in allowed and theirs not in allowed:
                found.append(f"{where}: {mine} may not import {imported} ({theirs})")
        elif top in THIRD_PARTY and not any(
            module == p or module.startswith(p + ".") for p in THIRD_PARTY[top]
        ):
            found.append(f"{where}: only {', '.join(THIRD_PARTY[top])} may import {top}")
    return found


def test_the_map_covers_the_package() -> None:
    """Every linked folder is a row, so nothing escapes the rules by being unlisted."""
    linked = {f"kubeprober.{p.name}" for p in PACKAGE.iterdir() if p.is_symlink()}
    assert linked <= set(ALLOWED)
    assert len(sources()) > 50


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_map(path: Path) -> None:
    """No file imports a package of ours, or kubernetes, that the map keeps from it."""
    assert violations(path) == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("kubeprober/probers/x.py", "from kubeprober.exporter.store import S\n", "may not"),
        ("kubeprober/tunnel/x.py", "import kubeprober.aggregator.views\n", "may not"),
        ("kubeprober/exporter/x.py", "from kubeprober.aggregator import fleet\n", "may not"),
        ("kubeprober/aggregator/x.py", "from ..exporter import store\n", "may not"),
        ("kubeprober/exporter/kube/x.py", "import kubernetes\n", "only"),
        ("kubeprober/kube/x.py", "from kubernetes import client\n", None),
        ("kubeprober/kube/x.py", "from kubeprober.probers import status\n", "may not"),
        ("kubeprober/tunnel/x.py", "from kubeprober.tasks import spawn\n", None),
        ("kubeprober/exporter/x.py", "from kubeprober.probers.status import Status\n", None),
        ("kubeprober/cli.py", "from kubeprober.aggregator import cli\n", None),
        ("kubeprober/args.py", "from kubeprober.probers import status\n", "may not"),
    ],
)
def test_the_checker_catches_what_it_must(
    tmp_path: Path, module: str, source: str, expected: str | None
) -> None:
    """Each rule fires on a file that breaks it, and stays quiet on one that keeps it."""
    path = tmp_path / module
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    found = violations(path, tmp_path / "kubeprober")
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0], found
