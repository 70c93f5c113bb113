"""Send each cluster its assignment through its tunnel, and back off from an agent that fails.

Exists because an agent that cannot take an assignment (it answers an error, an answer that is
not the contract's, or nothing in time) must not get the same body on every reload, forever:
each failure is logged with its reason and the next try of that revision waits twice as long
as the last (``retry_base`` up to ``retry_cap``). A new revision or a new session is sent at
once. Must not know where assignments come from or when they change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubeprober.aggregator.views import ClusterView
from kubeprober.tunnel import TunnelError
from kubeprober.tunnel.http.client import AgentClient

log = logging.getLogger(__name__)

PATH = "/v1/assignment"


@dataclass(frozen=True, slots=True)
class AssignSettings:
    """How patiently assignments are sent (seconds)."""

    timeout: float = 10.0
    """Seconds one PUT may take: an agent validates and applies a body in milliseconds."""
    retry_base: float = 5.0
    """Seconds before the first retry of a revision that failed: a few reloads."""
    retry_cap: float = 300.0
    """Longest wait between retries: a broken agent costs one request per 5 minutes."""


@dataclass(slots=True)
class _Failed:
    revision: int
    failures: int
    not_before: float
    """``clock()`` value before which the revision is not sent again."""


class Assigner:
    """PUT assignments to agents; remember which revision failed and when to try again."""

    def __init__(
        self,
        agents: AgentClient,
        settings: AssignSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._agents = agents
        self.settings = settings
        self._clock = clock
        self._failed: dict[str, _Failed] = {}  # owned by the event loop

    def forget(self, cluster: str) -> None:
        """Send ``cluster`` its next assignment at once (its agent reconnected)."""
        self._failed.pop(cluster, None)

    def due(self, view: ClusterView, revision: int) -> bool:
        """Whether the cluster's agent lacks ``revision`` and may be sent it now: not while
        waiting after a failure to send that same revision (a new one is worth a try at once)."""
        if view.assignment_revision == revision:
            return False
        failed = self._failed.get(view.name)
        return failed is None or failed.revision != revision or self._clock() >= failed.not_before

    async def push(self, view: ClusterView, body: dict[str, Any]) -> None:
        """PUT ``body`` to the cluster's agent unless it has that revision or must wait."""
        revision: int = body["revision"]
        if not self.due(view, revision):
            return
        failed = self._failed.get(view.name)
        if failed is not None and failed.revision != revision:
            failed = None  # counted afresh
        try:
            answer = await self._put(view.name, body)
        except (TunnelError, TimeoutError, ValueError) as exc:
            failures = failed.failures + 1 if failed else 1
            delay = min(self.settings.retry_cap, self.settings.retry_base * 2 ** (failures - 1))
            self._failed[view.name] = _Failed(revision, failures, self._clock() + delay)
            log.warning(
                "assignment revision %d to cluster %s failed: %s; next try in %g s",
                revision,
                view.name,
                self._describe(exc),
                delay,
            )
            return
        self._failed.pop(view.name, None)
        view.assignment_revision = revision
        for item in answer["refused"]:
            log.warning("cluster %s refused probe %s: %s", view.name, item["name"], item["reason"])
        log.info(
            "cluster %s has assignment revision %d (%d probes, %d refused)",
            view.name,
            revision,
            len(body["probes"]),
            len(answer["refused"]),
        )

    async def _put(self, cluster: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send the body; return the agent's answer, or raise ValueError saying what is wrong."""
        async with asyncio.timeout(self.settings.timeout):
            reply = await self._agents.request(
                cluster,
                "PUT",
                PATH,
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
        if not reply.body:
            raise ValueError(f"the agent answered {reply.status} with an empty body")
        try:
            answer = reply.json()
        except ValueError:
            msg = f"the agent answered {reply.status} with a body that is not JSON"
            raise ValueError(msg) from None
        if reply.status != 200:
            error = answer.get("error", answer) if isinstance(answer, dict) else answer
            raise ValueError(f"the agent answered {reply.status}: {error}")
        return check_answer(answer, body["revision"])

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer within {self.settings.timeout:g} s"
        return str(exc) or type(exc).__name__


def check_answer(answer: object, revision: int) -> dict[str, Any]:
    """Return the agent's answer if it is the contract's; raise ValueError naming the field."""
    if not isinstance(answer, dict):
        raise ValueError("the answer is not a JSON object")
    if answer.get("revision") != revision:
        raise ValueError(f"revision: expected {revision}, got {answer.get('revision')!r}")
    accepted = answer.get("accepted")
    if not isinstance(accepted, list) or not all(isinstance(n, str) for n in accepted):
        raise ValueError(f"accepted: expected a list of names, got {accepted!r:.80}")
    refused = answer.get("refused")
    if not isinstance(refused, list) or not all(
        isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("reason"), str)
        for r in refused
    ):
        raise ValueError(f"refused: expected a list of {{name, reason}}, got {refused!r:.80}")
    return answer
