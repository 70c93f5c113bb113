"""The body a container probe POSTs to the agent's ``/report``: both shapes, parsed and built.

Two shapes are accepted, so prober images written for the original kubeprober keep working
unchanged: ours, ``{"checks": [{"name", "status", "message"}]}``, and the original one,
``{"probeName", "probeNamespace", "name", "status", "message", "lastRun", "checkers": [{"name",
"status", "message", "lastRun"}]}`` (statuses in any case, ``lastRun`` RFC 3339). A body
with ``checkers`` is the original shape. Both sides use this module: the agent to read a
report, the SDK (:mod:`probers.container_sdk`) to write one. It must not know about runs,
tokens or HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubeprober.probers.options import shown
from kubeprober.probers.probe import CHECK_NAME_PATTERN
from kubeprober.probers.status import Status

MAX_BODY_BYTES = 64 * 1024
"""Bytes a report may hold: a few hundred checks with long messages; more is refused (413)."""
MAX_MESSAGE_CHARS = 2048
"""Characters of one check's message; a report with a longer one is refused (400)."""
_CHECK_NAME = re.compile(CHECK_NAME_PATTERN)


class ReportError(ValueError):
    """A report body that cannot be used; the text names the field and the value."""


@dataclass(frozen=True)
class CheckReport:
    """One check's result as the container saw it."""

    name: str
    status: Status
    message: str = ""


@dataclass(frozen=True)
class Report:
    """A parsed report: its checks, and the probe the original shape names (ours names none)."""

    checks: tuple[CheckReport, ...]
    original: bool = False
    """Sent in the original kubeprober shape (its SDK retries every answer but 200 and 400)."""
    probe: tuple[str, str] | None = None
    """``(probeNamespace, probeName)`` of an original-shape report."""


def parse_report(body: object) -> Report:
    """Read either shape; raise ReportError naming the first field at fault."""
    if not isinstance(body, Mapping):
        raise ReportError(f"expected a JSON object, got {shown(body)}")
    if "checkers" in body:
        return _parse_original(body)
    unknown = sorted(set(body) - {"checks"})
    if unknown:
        raise ReportError(f"{unknown[0]}: unknown field (known: checks, or checkers)")
    return Report(_parse_checks(body.get("checks"), "checks"))


def _parse_original(body: Mapping[str, Any]) -> Report:
    probe = []
    for key in ("probeNamespace", "probeName"):
        value = body.get(key)
        if not isinstance(value, str) or not value:
            raise ReportError(f"{key}: expected the probe's {key[5:].lower()}, got {shown(value)}")
        probe.append(value)
    for key in ("status", "lastRun"):  # the roll-up the original SDK adds; checked, not used
        if body.get(key) is not None:
            (_status if key == "status" else _time)(body[key], key)
    return Report(
        _parse_checks(body.get("checkers"), "checkers"), original=True, probe=(probe[0], probe[1])
    )


def _parse_checks(raw: object, path: str) -> tuple[CheckReport, ...]:
    if not isinstance(raw, list) or not raw:
        raise ReportError(f"{path}: expected a non-empty list of checks, got {shown(raw)}")
    checks: dict[str, CheckReport] = {}
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            raise ReportError(f"{where}: expected an object, got {shown(item)}")
        name = item.get("name")
        if not isinstance(name, str) or not _CHECK_NAME.match(name):
            raise ReportError(f"{where}.name: expected a check name, got {shown(name)}")
        if name in checks:
            raise ReportError(f"{where}.name: duplicate check {shown(name)}")
        status = _status(item.get("status"), f"{where}.status")
        message = item.get("message") or ""
        if not isinstance(message, str):
            raise ReportError(f"{where}.message: expected a string, got {shown(message)}")
        if len(message) > MAX_MESSAGE_CHARS:
            raise ReportError(f"{where}.message: longer than {MAX_MESSAGE_CHARS} characters")
        if item.get("lastRun") is not None:
            _time(item["lastRun"], f"{where}.lastRun")
        checks[name] = CheckReport(name, status, message)
    return tuple(checks.values())


def _status(value: object, path: str) -> Status:
    if isinstance(value, str) and value.upper() in Status.__members__:
        return Status(value.upper())
    raise ReportError(f"{path}: expected one of {', '.join(Status)}, got {shown(value)}")


def _time(value: object, path: str) -> None:
    try:
        if not isinstance(value, str):
            raise ValueError
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(
            f"{path}: expected an RFC 3339 time like 2026-12-04T10:00:00Z, got {shown(value)}"
        ) from None


def report_body(checks: Iterable[CheckReport]) -> dict[str, Any]:
    """Build our shape of report from ``checks``."""
    return {
        "checks": [{"name": c.name, "status": c.status.value, "message": c.message} for c in checks]
    }
