"""The CLI's one table printer: columns sized to their content, the last one left ragged.

``kubeprober check``, ``status`` and ``run`` all print through it, so their tables line up
the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

COLORS = {
    "PASS": "\033[32m",
    "INFO": "\033[36m",
    "WARN": "\033[33m",
    "ERROR": "\033[31m",
    "UNKNOWN": "\033[35m",
}
"""Terminal colours of the statuses, for a table with a status column."""


def print_table(
    rows: Sequence[tuple[str, ...]],
    out: TextIO | None = None,
    *,
    status_column: int | None = None,
) -> None:
    """Print ``rows`` (the first is the header) to ``out`` (standard output by default).

    The last column (a message) is not padded. With ``status_column``, that column's cells
    below the header are coloured by status when ``out`` is a terminal.
    """
    out = sys.stdout if out is None else out
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    color = status_column is not None and out.isatty()
    for i, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        if color and i and status_column is not None:
            cells[status_column] = COLORS.get(row[status_column], "") + cells[status_column]
            cells[status_column] += "\033[0m"
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)
