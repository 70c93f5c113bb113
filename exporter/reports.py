"""Runs of container probes waiting for their reports, and who may report to which run.

Each run gets a fresh random token; the container reports with it (``Authorization: Bearer``
or in the path, ``/report/TOKEN``, for images that only know a URL). A token names one run
of one probe, so a container can only speak for its own run: a report for an earlier run of
the same probe (superseded) or for a run that has already ended (late) is refused, as is a
check the Probe does not declare. Only hashes of tokens are kept. Owned by the event loop
(the HTTP handler and the container runner). It must not run pods or serve HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from kubeprober.probers.report import CheckReport, Report

RETIRED_KEPT = 4096
"""Tokens of ended runs remembered, so their late reports get "gone" rather than "unknown"."""


class ReportRefused(Exception):
    """A report the agent will not take, and which kind of refusal it is."""

    def __init__(self, message: str, *, kind: Literal["unknown", "gone", "invalid"]) -> None:
        super().__init__(message)
        self.kind = kind
        """``unknown`` token, ``gone`` (a superseded or ended run), or ``invalid`` content."""


@dataclass
class OpenRun:
    """One run of a container probe, collecting reports until every declared check has one."""

    key: tuple[str, str]
    run_id: str
    checks: tuple[str, ...]
    """The check names the Probe declares: the only ones a report may name."""
    reported: dict[str, CheckReport] = field(default_factory=dict)
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once every declared check has been reported."""


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class RunDesk:
    """Open runs by token hash, and why recent tokens no longer count."""

    def __init__(self) -> None:
        self._open: dict[bytes, OpenRun] = {}
        self._current: dict[tuple[str, str], bytes] = {}
        self._retired: OrderedDict[bytes, str] = OrderedDict()

    def open(self, key: tuple[str, str], checks: tuple[str, ...]) -> tuple[OpenRun, str]:
        """Start a run of probe ``key``; return it and its token. A previous run is superseded."""
        run = OpenRun(key, secrets.token_hex(6), checks)
        token = secrets.token_urlsafe(32)
        previous = self._current.get(key)
        if previous is not None and previous in self._open:
            self._retire(previous, f"superseded by run {run.run_id}")
        self._open[_hash(token)] = run
        self._current[key] = _hash(token)
        return run, token

    def close(self, run: OpenRun) -> None:
        """End ``run``: later reports with its token are late."""
        for digest, open_run in list(self._open.items()):
            if open_run is run:
                self._retire(digest, "it has already ended")
                if self._current.get(run.key) == digest:
                    del self._current[run.key]

    def _retire(self, digest: bytes, why: str) -> None:
        run = self._open.pop(digest)
        self._retired[digest] = f"run {run.run_id} of probe {run.key[0]}/{run.key[1]}: {why}"
        while len(self._retired) > RETIRED_KEPT:
            self._retired.popitem(last=False)

    def deliver(self, token: str, report: Report) -> OpenRun:
        """Take ``report`` for the run of ``token``; raise ReportRefused saying why not."""
        digest = _hash(token)
        run = self._open.get(digest)
        if run is None:
            why = self._retired.get(digest)
            if why is not None:
                raise ReportRefused(f"report refused: {why}", kind="gone")
            raise ReportRefused("unknown run token", kind="unknown")
        if report.probe is not None and report.probe != run.key:
            raise ReportRefused(
                f"probeNamespace/probeName: this token belongs to probe {run.key[0]}/"
                f"{run.key[1]}, not {report.probe[0]}/{report.probe[1]}",
                kind="invalid",
            )
        for check in report.checks:
            if check.name not in run.checks:
                raise ReportRefused(
                    f"check {check.name!r} is not declared by probe {run.key[0]}/{run.key[1]} "
                    f"(its checks: {', '.join(run.checks)})",
                    kind="invalid",
                )
        for check in report.checks:
            run.reported[check.name] = check
        if set(run.reported) >= set(run.checks):
            run.complete.set()
        return run
