"""Kubernetes timestamps and the "age" rendering kubectl shows, in one place."""

from __future__ import annotations

import datetime as dt


def now() -> str:
    """Return the current time as a Kubernetes RFC 3339 timestamp (second precision)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(ts: str) -> dt.datetime:
    """Parse a Kubernetes timestamp."""
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def human_age(ts: str | None) -> str:
    """Render the age since ts the way the apiserver's HumanDuration does."""
    if not ts:
        return "<unknown>"
    seconds = int((dt.datetime.now(dt.UTC) - parse(ts)).total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // 24 // 365}y"
