"""The SDK a container probe's own code uses: run checks, then report them to the agent.

The agent starts each run of a container probe as a Job whose pod gets the run's report URL,
token and deadline in its environment (``KUBEPROBER_REPORT_URL``, ``KUBEPROBER_RUN_TOKEN``,
``KUBEPROBER_DEADLINE``). :func:`report` sends results there, retrying with backoff while the
agent is away until the deadline; :func:`run_checks` runs several check functions at once,
each within a timeout, and turns what they do into results. With ``KUBEPROBER_DRY_RUN=1``
(or ``dry_run=True``) the report is printed instead of sent, to try a probe anywhere.
``kubeprober report`` is the same for shell scripts. Synchronous and standard library only:
it runs in the probe's image, not in the agent.

    from kubeprober.probers.container_sdk import report, run_checks
    report(*run_checks({"login": login, "order": place_order}, timeout=10))
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import IO
from urllib.parse import urlsplit

from kubeprober.pacing import Backoff, BackoffSettings
from kubeprober.probers.report import CheckReport, report_body
from kubeprober.probers.sdk import CheckFailed, Outcome
from kubeprober.probers.status import Status

log = logging.getLogger(__name__)
URL_ENV = "KUBEPROBER_REPORT_URL"
TOKEN_ENV = "KUBEPROBER_RUN_TOKEN"
DEADLINE_ENV = "KUBEPROBER_DEADLINE"
DRY_RUN_ENV = "KUBEPROBER_DRY_RUN"
DEFAULT_PATIENCE = 30.0
"""Seconds :func:`report` keeps trying when no deadline is given."""
RETRY = BackoffSettings(initial=0.2, maximum=5.0)
"""An agent restarting is back within seconds; a report need not wait longer between tries."""
REQUEST_TIMEOUT = 10.0
"""Seconds one attempt may take."""


class ReportFailed(Exception):
    """The report did not reach the agent: refused (``status`` set) or no answer in time."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Target:
    """Where and until when to report: from the run's environment, or given."""

    url: str
    token: str
    deadline: float
    """Unix time after which no further attempt is made."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Target:
        """Read the run's environment; raise ReportFailed naming what is missing."""
        env = os.environ if environ is None else environ
        missing = [name for name in (URL_ENV, TOKEN_ENV) if not env.get(name)]
        if missing:
            raise ReportFailed(
                f"{' and '.join(missing)} not set: run this in a container probe, "
                f"or set {DRY_RUN_ENV}=1 to print the report instead"
            )
        parts = urlsplit(env[URL_ENV])
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ReportFailed(f"{URL_ENV}: expected http://HOST:PORT, got {env[URL_ENV]!r}")
        deadline = time.time() + DEFAULT_PATIENCE
        if env.get(DEADLINE_ENV):
            try:
                when = datetime.fromisoformat(env[DEADLINE_ENV].replace("Z", "+00:00"))
            except ValueError:
                raise ReportFailed(
                    f"{DEADLINE_ENV}: expected an RFC 3339 time, got {env[DEADLINE_ENV]!r}"
                ) from None
            deadline = when.timestamp()
        return cls(env[URL_ENV], env[TOKEN_ENV], deadline)


def report(
    *checks: CheckReport,
    target: Target | None = None,
    dry_run: bool | None = None,
    out: IO[str] | None = None,
) -> None:
    """Send ``checks`` to the agent, retrying until the deadline; raise ReportFailed.

    A refusal (4xx: a bad report, a wrong or outdated token) is final; anything else (no
    connection, 5xx) is tried again with backoff while the deadline allows.
    """
    if dry_run is None:
        dry_run = os.environ.get(DRY_RUN_ENV, "") not in ("", "0")
    body = json.dumps(report_body(checks))
    if dry_run:
        print(body, file=out or sys.stdout)
        return
    target = target or Target.from_env()
    backoff = Backoff(RETRY)
    while True:
        remaining = target.deadline - time.time()
        try:
            _post(target, body, timeout=max(0.1, min(REQUEST_TIMEOUT, remaining)))
            return
        except urllib.error.HTTPError as exc:
            problem = _error_text(exc)
            if 400 <= exc.code < 500:
                raise ReportFailed(f"report refused ({exc.code}): {problem}", exc.code) from None
        except OSError as exc:  # refused, reset, timed out: the agent may be restarting
            problem = str(getattr(exc, "reason", exc))
        delay = backoff.next_delay()
        if time.time() + delay >= target.deadline:
            raise ReportFailed(f"report not delivered before the deadline: {problem}")
        log.warning("report not taken (%s); trying again in %.1fs", problem, delay)
        time.sleep(delay)


def _post(target: Target, body: str, *, timeout: float) -> None:
    request = urllib.request.Request(
        target.url,
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {target.token}"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        answer.read()


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"])
    except (ValueError, KeyError, TypeError, OSError):
        return exc.reason if isinstance(exc.reason, str) else f"HTTP {exc.code}"
    finally:
        exc.close()


CheckFunction = Callable[[], Outcome | None]
"""A check: return an Outcome (None means PASS), or raise CheckFailed for a broken target."""


def run_checks(checks: Mapping[str, CheckFunction], *, timeout: float) -> list[CheckReport]:
    """Run every check at once, each in a thread, and return their results in order.

    A check that has not returned within ``timeout`` seconds is UNKNOWN ("no result within"):
    the probe could not tell; its thread is a daemon, so it cannot keep the process alive.
    One that raises CheckFailed gets its status (ERROR by default); any other exception means
    the check itself is broken: UNKNOWN, naming the exception.
    """
    outcomes: dict[str, Outcome] = {}  # written by each check's thread, read after join
    threads = [
        threading.Thread(
            target=_run_one, args=(name, fn, outcomes), name=f"check-{name}", daemon=True
        )
        for name, fn in checks.items()
    ]
    end = time.monotonic() + timeout
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    unknown = Outcome(Status.UNKNOWN, f"no result within {timeout:g}s")
    return [
        CheckReport(name, outcome.status, outcome.message)
        for name in checks
        for outcome in [outcomes.get(name, unknown)]
    ]


def _run_one(name: str, fn: CheckFunction, outcomes: dict[str, Outcome]) -> None:
    try:
        outcome = fn() or Outcome.passed()
    except CheckFailed as exc:
        outcome = Outcome(exc.status, str(exc))
    except Exception as exc:
        outcome = Outcome(Status.UNKNOWN, f"check failed: {type(exc).__name__}: {exc}")
    outcomes[name] = outcome
