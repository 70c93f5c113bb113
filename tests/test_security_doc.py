"""docs/security.md names tests that exist: every `tests/…py` and `::name` it cites."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# `tests/a/b.py`, `tests/a/b.py::test_x`, and `::test_y` standing for the last file named
# in the same table row or paragraph.
_CITED = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`")


def cited() -> list[tuple[str, str | None]]:
    """(file, test name or None) for each test the document cites, in order."""
    found: list[tuple[str, str | None]] = []
    last = ""
    for line in (ROOT / "docs" / "security.md").read_text().splitlines():
        if line.startswith("|") or not line.strip():  # a table row, or a new paragraph
            last = ""
        for path, name in _CITED.findall(line):
            if not path and not name:
                continue
            last = path or last
            assert last, f"::{name} with no file named before it in its row or paragraph: {line}"
            found.append((last, name or None))
    return found


def test_every_cited_test_exists() -> None:
    missing = []
    for path, name in cited():
        file = ROOT / path
        if not file.is_file():
            missing.append(path)
        elif name is not None and not re.search(rf"def {name}\b", file.read_text()):
            missing.append(f"{path}::{name}")
    assert not missing, missing
    assert len(cited()) > 40
