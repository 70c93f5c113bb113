"""Keep the result store on disk (``--state-dir``) so a restart keeps the last results.

Without Kubernetes there is no ProbeStatus to reload from; this file plays that part.
Writes are atomic (temporary file, fsync, rename): a crash leaves the old or the new state,
never half of one. A file that cannot be read is set aside and logged, never fatal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from kubeprober.exporter.store import CheckState, ResultStore, new_history
from kubeprober.probers.result import CheckResult
from kubeprober.probers.status import Status

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def dump(store: ResultStore) -> dict[str, Any]:
    """Render the store's check states as JSON-ready data."""
    probes: dict[str, Any] = {}
    for state in store:
        checks = {}
        for name, check in state.checks.items():
            if check.result is None:
                continue
            r = check.result
            checks[name] = {
                "status": r.status.value,
                "message": r.message,
                "startedAt": r.started_at,
                "duration": r.duration,
                "phases": r.phases,
                "certificates": r.certificates,
                "consecutiveFailures": check.consecutive_failures,
                "lastSuccess": check.last_success,
                "lastTransition": check.last_transition,
                "runs": {s.value: n for s, n in check.runs.items()},
                # The results before it, for /status?history=1: what that shows of them.
                "history": [
                    {
                        "status": h.status.value,
                        "message": h.message,
                        "startedAt": h.started_at,
                        "duration": h.duration,
                    }
                    for h in list(check.history)[:-1]
                ],
            }
        if checks:
            probes[f"{state.probe.namespace}/{state.probe.name}"] = checks
    return {"version": FORMAT_VERSION, "probes": probes}


def parse(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, CheckState]]:
    """Turn saved data back into check states; raise ValueError/KeyError/TypeError if broken."""
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported state format version {data.get('version')!r}")
    out: dict[tuple[str, str], dict[str, CheckState]] = {}
    for key, checks in data["probes"].items():
        namespace, _, name = key.partition("/")
        states = {}
        for check_name, c in checks.items():
            result = CheckResult(
                status=Status(c["status"]),
                message=str(c["message"]),
                started_at=float(c["startedAt"]),
                duration=float(c["duration"]),
                phases={str(k): float(v) for k, v in c.get("phases", {}).items()},
                certificates={str(k): float(v) for k, v in c.get("certificates", {}).items()},
            )
            runs = dict.fromkeys(Status, 0)
            runs.update({Status(s): int(n) for s, n in c.get("runs", {}).items()})
            history = new_history()
            history.extend(
                CheckResult(
                    status=Status(h["status"]),
                    message=str(h["message"]),
                    started_at=float(h["startedAt"]),
                    duration=float(h["duration"]),
                )
                for h in c.get("history", ())
            )
            history.append(result)
            states[str(check_name)] = CheckState(
                result=result,
                consecutive_failures=int(c["consecutiveFailures"]),
                last_success=c.get("lastSuccess"),
                last_transition=c.get("lastTransition"),
                runs=runs,
                history=history,
            )
        out[(namespace, name)] = states
    return out


class StateFile:
    """The store's file in the state directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "results.json"

    def load(self) -> dict[tuple[str, str], dict[str, CheckState]]:
        """Read saved states; a missing file is empty, a broken one is set aside and logged."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return parse(data)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = self.path.with_suffix(".broken")
            log.error(
                "state file %s unreadable (%s); moved to %s, starting empty", self.path, exc, aside
            )
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            return {}

    def write(self, data: dict[str, Any]) -> None:
        """Write data from :func:`dump` atomically (safe to call from a thread)."""
        write_json_atomic(self.path, data)


def write_json_atomic(path: Path, data: object) -> None:
    """Write ``data`` as JSON: a temporary file, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
