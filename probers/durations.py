"""Go-style durations (``30s``, ``5m``, ``1h30m``, ``250ms``), as Kubernetes users write them."""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
# Also used as the CRD's OpenAPI pattern, so the API server rejects what we would reject.
PATTERN = r"^(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+)$"


def parse_duration(text: str) -> float:
    """Return seconds for a Go duration string; raise ValueError on anything else."""
    text = text.strip()
    if text in ("0", ""):
        if text == "0":
            return 0.0
        raise ValueError("empty duration")
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"not a duration like 30s, 5m or 1h30m: {text!r}")
    return total


def format_duration(seconds: float) -> str:
    """Render seconds the way users wrote them: ``90`` -> ``1m30s``, ``0.25`` -> ``250ms``."""
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{int(hours)}h"
    if minutes:
        out += f"{int(minutes)}m"
    if secs or not out:
        out += f"{secs:g}s"
    return out
