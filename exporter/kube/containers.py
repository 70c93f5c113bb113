"""Container probes: each run is a Job of the Probe's PodSpec, whose pod reports to ``/report``.

Exists to turn one scheduled run of a Probe with ``spec.template`` into a ``batch/v1`` Job
(``backoffLimit: 0``, ``activeDeadlineSeconds`` from the timeout, owned by the Probe, labelled
with probe and run), give its containers the run's report URL, token and deadline, and wait
for the first of: every declared check reported, the pod ended, the deadline. A check not
reported ends UNKNOWN with what the pod says: failed, unschedulable, image not pulled, or
never reported. After each run only the newest ``keep_jobs`` Jobs of the probe are kept;
those of an assigned probe (no Probe owns them) also go an hour after they finish.
It must not decide who may run containers (:mod:`exporter.exec_policy`) nor read reports
(:mod:`exporter.reports`, :mod:`exporter.http`).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from kubeprober.exporter.kube.watching import ProbeRef
from kubeprober.exporter.reports import OpenRun, RunDesk
from kubeprober.exporter.runner import unknown_results
from kubeprober.kube.api import KubeApi
from kubeprober.kube.errors import KubeError
from kubeprober.kube.resources import CONFIG_MAPS, JOBS, PODS, PROBES
from kubeprober.probers.durations import format_duration
from kubeprober.probers.probe import Probe
from kubeprober.probers.result import CheckResult, rfc3339
from kubeprober.probers.status import Status

log = logging.getLogger(__name__)

PERMISSIONS = (
    JOBS.permission("create"),
    JOBS.permission("list"),
    JOBS.permission("delete"),
    PODS.permission("list"),
    CONFIG_MAPS.permission("get"),
)
PROBE_LABEL = "kubeprober.io/probe"
RUN_LABEL = "kubeprober.io/run"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kubeprober"}
IMAGE_PROBLEMS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
"""Waiting reasons of a container whose image the kubelet cannot get."""


@dataclass(frozen=True)
class ContainerSettings:
    """How container probes run."""

    report_url: str | None = None
    """The agent as pods reach it, like ``http://10.0.0.7:8080`` (``--report-url``); else its
    listen address once it listens, if that is one address (not ``0.0.0.0``). None: container
    probes end UNKNOWN saying so, since their pods could not report."""
    env_config_map: str | None = None
    """A ConfigMap in the agent's namespace whose data every run's containers get as
    environment (``--container-env-configmap``): per-cluster settings such as an app's URL."""
    agent_namespace: str = "default"
    keep_jobs: int = 3
    """Jobs kept per probe after a run, newest first: enough to read the last failures'
    logs, few enough that a probe every minute leaves no trail of pods."""
    poll_interval: float = 1.0
    """Seconds between looks at a run's pod: how soon a pod that failed ends its run."""
    grace: float = 2.0
    """Seconds past the deadline before a silent run ends, so a report sent at the deadline
    is still taken."""


def label_value(name: str) -> str:
    """A Probe name as a label value (at most 63 characters; longer ones end in a hash)."""
    if len(name) <= 63:
        return name
    return f"{name[:46].rstrip('-.')}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"


UNOWNED_JOB_TTL = 3600
"""Seconds a finished Job of an assigned probe is kept (``ttlSecondsAfterFinished``)."""


class ContainerRunner:
    """Runs container probes as Jobs; one :meth:`run` per scheduled run."""

    def __init__(
        self,
        api: KubeApi,
        runs: RunDesk,
        owner: Callable[[tuple[str, str]], ProbeRef | None],
        *,
        settings: ContainerSettings | None = None,
    ) -> None:
        self.settings = settings or ContainerSettings()
        """Owned by the event loop; :meth:`listening` fills in the report URL once."""
        self._api = api
        self._runs = runs
        self._owner = owner

    def listening(self, url: str) -> None:
        """Take the agent's listen URL as the report URL, unless one was given."""
        host = url.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
        if self.settings.report_url is None and host not in ("0.0.0.0", "::"):
            self.settings = replace(self.settings, report_url=url)

    async def run(self, probe: Probe) -> dict[str, CheckResult]:
        """Run ``probe`` once as a Job and return a result for each of its checks."""
        started = time.time()
        if self.settings.report_url is None:
            return unknown_results(
                probe,
                "the agent has no --report-url: a container probe's pod could not report",
                started_at=started,
            )
        run, token = self._runs.open(probe.key, tuple(c.name for c in probe.checks))
        try:
            try:
                extra = await self._extra_env()
                job = self._job(probe, run, token, extra, deadline=started + probe.timeout)
                await self._api.create(JOBS, job, namespace=probe.namespace)
            except KubeError as exc:
                return unknown_results(probe, f"cannot start the run: {exc}", started_at=started)
            why = await self._wait(probe, run, job["metadata"]["name"], started)
        finally:
            self._runs.close(run)
        await self._clean_up(probe, keep=job["metadata"]["name"])
        duration = time.time() - started
        results = {}
        for check in probe.checks:
            got = run.reported.get(check.name)
            if got is not None:
                results[check.name] = CheckResult(got.status, got.message, started, duration)
            else:
                results[check.name] = CheckResult(Status.UNKNOWN, why, started, duration)
        return results

    async def _extra_env(self) -> dict[str, str]:
        name = self.settings.env_config_map
        if name is None:
            return {}
        config = await self._api.get(CONFIG_MAPS, name, namespace=self.settings.agent_namespace)
        return {str(k): str(v) for k, v in (config.get("data") or {}).items()}

    def _job(
        self, probe: Probe, run: OpenRun, token: str, extra: Mapping[str, str], *, deadline: float
    ) -> dict[str, Any]:
        assert probe.template is not None and self.settings.report_url is not None
        base = self.settings.report_url.rstrip("/")
        ours = {
            "KUBEPROBER_REPORT_URL": f"{base}/report",
            "KUBEPROBER_STATUS_REPORT_URL": f"{base}/report/{token}",
            "KUBEPROBER_RUN_ID": run.run_id,
            "KUBEPROBER_RUN_TOKEN": token,
            "KUBEPROBER_DEADLINE": rfc3339(deadline),
            "KUBEPROBER_PROBE_NAME": probe.name,
            "KUBEPROBER_PROBE_NAMESPACE": probe.namespace,
        }
        env = {**extra, **ours}  # ours win: a ConfigMap must not redirect reports
        pod_spec = copy.deepcopy(dict(probe.template))
        pod_spec["restartPolicy"] = "Never"
        for container in pod_spec["containers"]:
            kept = [e for e in container.get("env") or [] if e.get("name") not in env]
            container["env"] = kept + [{"name": k, "value": v} for k, v in env.items()]
        labels = {**MANAGED_BY, PROBE_LABEL: label_value(probe.name), RUN_LABEL: run.run_id}
        metadata: dict[str, Any] = {
            "name": f"{label_value(probe.name)[:50].rstrip('-.')}-{run.run_id}",
            "labels": labels,
        }
        spec: dict[str, Any] = {
            "backoffLimit": 0,
            "activeDeadlineSeconds": max(1, math.ceil(probe.timeout)),
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        }
        owner = self._owner(probe.key)
        if owner is None:
            # An assigned probe has no Probe object to be collected with: once unassigned, no
            # run of it cleans up again, so Kubernetes' TTL controller removes its Jobs.
            spec["ttlSecondsAfterFinished"] = UNOWNED_JOB_TTL
        else:
            metadata["ownerReferences"] = [
                {
                    "apiVersion": PROBES.api_version,
                    "kind": PROBES.kind,
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": True,
                }
            ]
        return {
            "apiVersion": JOBS.api_version,
            "kind": JOBS.kind,
            "metadata": metadata,
            "spec": spec,
        }

    async def _wait(self, probe: Probe, run: OpenRun, job: str, started: float) -> str:
        """Wait until the run is over; return why the checks still unreported have no result."""
        end = started + probe.timeout + self.settings.grace
        pods: list[dict[str, Any]] = []
        while True:
            remaining = end - time.time()
            if remaining <= 0:
                return _silent(pods, job, probe.timeout)
            try:
                await asyncio.wait_for(
                    run.complete.wait(), min(self.settings.poll_interval, remaining)
                )
                return ""  # every check reported: nothing is missing
            except TimeoutError:
                pass
            try:
                listed = await self._api.list(
                    PODS, namespace=probe.namespace, label_selector=f"{RUN_LABEL}={run.run_id}"
                )
            except KubeError as exc:
                log.debug("%s/%s: reading the run's pod: %s", *probe.key, exc)
                continue
            # A Job past activeDeadlineSeconds has its pod deleted: keep what it last said.
            pods = listed["items"] or pods
            ended = _ended(pods)
            if ended is not None:
                return ended

    async def _clean_up(self, probe: Probe, *, keep: str) -> None:
        """Delete all but the newest ``keep_jobs`` Jobs of ``probe`` (``keep``, this run's,
        always stays: creation times have whole seconds), with their pods."""
        try:
            jobs = await self._api.list(
                JOBS,
                namespace=probe.namespace,
                label_selector=f"{PROBE_LABEL}={label_value(probe.name)}",
            )
            others = [j for j in jobs["items"] if j["metadata"]["name"] != keep]
            newest = sorted(
                others,
                key=lambda j: (j["metadata"].get("creationTimestamp", ""), j["metadata"]["name"]),
                reverse=True,
            )
            for job in newest[self.settings.keep_jobs - 1 :]:
                await self._api.delete(
                    JOBS, job["metadata"]["name"], namespace=probe.namespace, background=True
                )
        except KubeError as exc:  # the next run tries again
            log.warning("%s/%s: cleaning up old Jobs: %s", *probe.key, exc)


def _ended(pods: list[dict[str, Any]]) -> str | None:
    """Why a run whose pod has ended has no more reports coming; None while it runs."""
    for pod in pods:
        status = pod.get("status") or {}
        name = pod["metadata"]["name"]
        if status.get("phase") == "Succeeded":
            return f"pod {name} ended without reporting this check"
        if status.get("phase") == "Failed":
            if status.get("reason"):
                return f"pod {name} failed: {status['reason']}: {status.get('message', '')}"
            for c in status.get("containerStatuses") or []:
                ended = (c.get("state") or {}).get("terminated")
                if ended and ended.get("exitCode"):
                    why = ended.get("reason") or "Error"
                    return (
                        f"pod {name} failed: container {c['name']} exited with code "
                        f"{ended['exitCode']} ({why}) without reporting this check"
                    )
            return f"pod {name} failed without reporting this check"
    return None


def _silent(pods: list[dict[str, Any]], job: str, timeout: float) -> str:
    """Why a run reached its deadline without every report, from its pod as last seen."""
    within = f"no report within {format_duration(timeout)}"
    if not pods:
        return f"{within}: Job {job} has no pod"
    pod = pods[0]
    name, status = pod["metadata"]["name"], pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{within}: pod {name} unschedulable: {condition.get('message', '')}"
    for c in status.get("containerStatuses") or []:
        waiting = (c.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_PROBLEMS:
            return (
                f"{within}: pod {name} cannot pull image {c.get('image', '')}: "
                f"{waiting['reason']}: {waiting.get('message', '')}"
            ).rstrip(": ")
    return f"{within}: pod {name} is {status.get('phase', 'Pending')}"
