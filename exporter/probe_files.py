"""File mode's probe set: probe files reloaded when they change, and what did not load.

A file that cannot be used as a whole (unreadable, over the size limit, not UTF-8, not YAML)
changes nothing: the Probes it held keep running in their previous version, with their
history. An invalid Probe in a file that parses keeps its previous version too, while the
valid ones load. Each such problem is a :class:`ConfigError`, which ``/status`` and
``/metrics`` show; the log alone is not where people look. This module only loads and
decides; it never runs probes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from kubeprober.probers.probe import (
    LoadResult,
    Probe,
    ProbeError,
    by_key,
    combine,
    load_file,
    probe_files,
)

log = logging.getLogger(__name__)
Key = tuple[str, str]
Stamp = tuple[int, int, int, int]
"""A file's inode, size, mtime and ctime: any write, replacement or chmod changes it."""


@dataclass(frozen=True)
class ConfigError:
    """A probe file, or one Probe in it, that did not load."""

    file: str
    message: str
    kept: tuple[Key, ...] = ()
    """The Probes still running their previous version because of it."""

    @classmethod
    def of(cls, error: ProbeError, kept: tuple[Key, ...] = ()) -> ConfigError:
        """Describe a load error: the file's reason, or the Probe's name and its errors."""
        message = str(error.error) if error.whole_file else f"{error.name}: {error.error}"
        return cls(error.source, message, kept)


class ProbeFiles:
    """Loads probe files when they change; reads only the files that changed."""

    def __init__(self, path: Path, *, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._loaded: dict[Path, tuple[Stamp | None, LoadResult]] = {}
        self._stamps: dict[Path, Stamp | None] | None = None
        self._current: dict[Key, Probe] = {}
        # Owned by the task that calls reload(); read by /status and /metrics.
        self.errors: tuple[ConfigError, ...] = ()
        """What the last load could not apply."""
        self.files_ok: dict[str, bool] = {}
        """Per file: whether its last load applied every Probe in it."""

    def reload(self) -> list[Probe] | None:
        """Return the new probe set if the files changed since the last call, else None."""
        stamps = {file: _stamp(file) for file in probe_files(self.path)}
        if stamps == self._stamps:
            return None
        self._stamps = stamps
        loaded = {file: self._load(file, stamp) for file, stamp in stamps.items()}
        self._loaded = loaded
        result = combine(self._usable(part) for _, part in loaded.values())
        probes = by_key(result.probes)
        errors = [self._apply(error, probes) for error in result.errors]
        added = probes.keys() - self._current.keys()
        removed = self._current.keys() - probes.keys()
        changed = {k for k in probes.keys() & self._current.keys() if probes[k] != self._current[k]}
        log.info(
            "loaded %d probes from %s (%d added, %d changed, %d removed, %d invalid)",
            len(probes),
            self.path,
            len(added),
            len(changed),
            len(removed),
            len(result.errors),
        )
        failed = {e.file for e in errors}
        self.errors = tuple(errors)
        self.files_ok = {str(file): str(file) not in failed for file in stamps}
        self._current = probes
        return list(probes.values())

    def _load(self, file: Path, stamp: Stamp | None) -> tuple[Stamp | None, LoadResult]:
        previous = self._loaded.get(file)
        if stamp is not None and previous is not None and previous[0] == stamp:
            return previous
        part = load_file(file, max_bytes=self.max_bytes)
        for warning in part.warnings:
            log.warning("%s", warning)
        return stamp, part

    def _usable(self, part: LoadResult) -> LoadResult:
        """The part itself, or for a file that did not load, the Probes it had before."""
        failed = [e for e in part.errors if e.whole_file]
        if not failed:
            return part
        kept = [p for p in self._current.values() if p.source == failed[0].source]
        return LoadResult(probes=kept, errors=failed)

    def _apply(self, error: ProbeError, probes: dict[Key, Probe]) -> ConfigError:
        """Keep the previous version of what ``error`` stands in for; log and describe it."""
        if error.whole_file:
            kept = tuple(k for k, p in probes.items() if p.source == error.source)
            how = f"; its {len(kept)} Probes keep running unchanged" if kept else ""
            log.error("%s%s", error, how)
            return ConfigError.of(error, kept)
        previous = self._current.get(error.key) if error.key is not None else None
        if previous is None or previous.key in probes:
            log.error("invalid probe %s", error)
            return ConfigError.of(error)
        probes[previous.key] = previous
        log.error("invalid probe %s; keeping its previous version", error)
        return ConfigError.of(error, (previous.key,))


def _stamp(file: Path) -> Stamp | None:
    try:
        st = os.stat(file)
    except OSError:
        return None  # load_file reports why
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
