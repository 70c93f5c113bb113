"""Scheduler and kubelet stand-ins: Ready nodes, pod binding, pod status, local processes.

Only API calls, so it drives a real kube-apiserver exactly as it drives the test server.
Pods whose container image is :data:`LOCAL_IMAGE` run their command as a local process with
the pod's environment, inside the pod network namespace; its exit code becomes the pod phase.
:data:`UNPULLABLE_IMAGE` never starts (ErrImagePull). Other images just "run". The scheduler
stand-in (:mod:`.scheduling`) binds a pod only to a simulated node that fits it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from ..rawapi import call
from .netns import PodNetwork
from .nodes import Nodes, ts
from .podenv import command_line, container_env
from .probes import probe
from .scheduling import unschedulable_message, why_not

log = logging.getLogger(__name__)

LOCAL_IMAGE = "kubeprober.test/local"
UNPULLABLE_IMAGE = "kubeprober.test/unpullable"
"""An image no registry has: its containers wait in ErrImagePull, as a kubelet's would."""
MERGE = "application/merge-patch+json"
RESCHEDULE_INTERVAL = 0.5
"""Seconds between attempts to place pods no node fitted (nodes change: uncordon, untaint)."""


def _repository(image: str) -> str:
    return image.split("@")[0].rsplit(":", 1)[0]


def is_local(image: str) -> bool:
    """Tell whether an image name designates a local process."""
    return _repository(image) == LOCAL_IMAGE or image == LOCAL_IMAGE


def is_unpullable(image: str) -> bool:
    """Tell whether an image name designates an image that cannot be pulled."""
    return _repository(image) == UNPULLABLE_IMAGE


@dataclass
class Run:
    """One pod this kubelet runs; fields owned by the pod thread except ``procs`` exits."""

    ns: str
    name: str
    uid: str
    ip: str
    pod: dict[str, Any]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)
    start_errors: dict[str, str] = field(default_factory=dict)
    """Container -> why it could not start (its exit code is then 128, as runc's)."""
    restarts: dict[str, int] = field(default_factory=dict)
    ready: dict[str, bool] = field(default_factory=dict)
    started_at: str = field(default_factory=ts)
    reporting: threading.Lock = field(default_factory=threading.Lock)
    """Held while a status is computed and written, so writes land in order."""
    finished: bool = False
    stopping: bool = False


class Kubelet:
    """Registers nodes, binds pending pods and runs them."""

    def __init__(
        self,
        api: client.ApiClient,
        workdir: Path,
        network: PodNetwork,
        *,
        nodes: int = 1,
        node_prefix: str = "kp-sim-node",
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.workdir = workdir
        self.network = network
        self.nodes = [f"{node_prefix}-{i}" for i in range(nodes)]
        self._next_node = 0
        self.free_ips = list(network.pod_ips)
        # runs and lock are shared by the watch thread, process waiters and the prober.
        self.runs: dict[str, Run] = {}
        self.lock = threading.RLock()
        self.stopped = threading.Event()
        self.threads: list[threading.Thread] = []
        self.node_agent = Nodes(api, self.nodes, self.stopped, address=network.host_ip)
        # Pods no node fitted, by uid: (namespace, name, the message last written); owned by
        # the watch thread and the prober thread under lock.
        self.unscheduled: dict[str, tuple[str, str, str]] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Register nodes and start watching pods."""
        self.node_agent.register()
        for target, name in (
            (self._watch_pods, "sim-kubelet"),
            (self.node_agent.heartbeat, "sim-leases"),
            (self._probe_loop, "sim-prober"),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self) -> None:
        """Stop threads, kill local processes and remove the nodes."""
        self.stopped.set()
        for t in self.threads:
            t.join(10)
        with self.lock:
            runs = list(self.runs.values())
        for run in runs:
            self._kill(run, grace=1)
        self.node_agent.remove()

    def logs(self, ns: str, pod: str, container: str) -> str:
        """Return what a local container wrote to stdout and stderr."""
        path = self.workdir / f"{ns}_{pod}_{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- pods -----------------------------------------------------------------------------

    def _watch_pods(self) -> None:
        rv = ""
        while not self.stopped.is_set():
            try:
                if not rv:
                    pods = self.api.sanitize_for_serialization(
                        self.core.list_pod_for_all_namespaces()
                    )
                    rv = pods["metadata"]["resourceVersion"]
                    for p in pods.get("items") or []:
                        self._handle("ADDED", p)
                w = watch.Watch()
                for ev in w.stream(
                    self.core.list_pod_for_all_namespaces,
                    resource_version=rv,
                    timeout_seconds=1,
                    allow_watch_bookmarks=True,
                ):
                    obj = ev["raw_object"]
                    rv = obj["metadata"]["resourceVersion"]
                    if ev["type"] != "BOOKMARK":
                        self._handle(ev["type"], obj)
                    if self.stopped.is_set():
                        w.stop()
            except ApiException as exc:
                if exc.status == 410:
                    rv = ""
                    continue
                log.warning("pod watch: %s", exc)
                self.stopped.wait(0.5)
            except Exception as exc:  # connection errors: retry like a kubelet would
                log.debug("pod watch: %s", exc)
                self.stopped.wait(0.5)

    def _handle(self, typ: str, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        uid = meta["uid"]
        try:
            if typ == "DELETED":
                with self.lock:
                    run = self.runs.pop(uid, None)
                if run:
                    self._kill(run, grace=0)
                    self.free_ips.append(run.ip)
                return
            node = spec.get("nodeName")
            if not node:
                if spec.get(
                    "schedulerName", "default-scheduler"
                ) == "default-scheduler" and not meta.get("deletionTimestamp"):
                    self._bind(pod)
                return
            if node not in self.nodes:
                return
            if meta.get("deletionTimestamp"):
                self._terminate(pod)
                return
            with self.lock:
                known = uid in self.runs
            if not known and (pod.get("status") or {}).get("phase", "Pending") == "Pending":
                self._start(pod)
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("pod %s/%s: %s", meta.get("namespace"), meta["name"], exc)

    def _bind(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        nodes = [self.api.sanitize_for_serialization(self.core.read_node(n)) for n in self.nodes]
        fitting = [n["metadata"]["name"] for n in nodes if why_not(pod, n) is None]
        if not fitting:
            self._mark_unschedulable(pod, unschedulable_message(pod, nodes))
            return
        with self.lock:
            self.unscheduled.pop(meta["uid"], None)
        node = fitting[self._next_node % len(fitting)]
        self._next_node += 1
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        # The generated client cannot parse the Status that a binding answers; post raw.
        ans = call(
            self.api,
            "POST",
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding",
            body,
        )
        if ans.status >= 300 and ans.status != 409:
            log.warning("bind %s: %s %s", meta["name"], ans.status, ans.body)

    def _mark_unschedulable(self, pod: dict[str, Any], message: str) -> None:
        """Say why no node fits, as the scheduler does, and try again later."""
        meta = pod["metadata"]
        with self.lock:
            before = self.unscheduled.get(meta["uid"])
            self.unscheduled[meta["uid"]] = (meta["namespace"], meta["name"], message)
        if before is not None and before[2] == message:
            return
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": ts(),
        }
        self.core.patch_namespaced_pod_status(
            meta["name"],
            meta["namespace"],
            {"status": {"phase": "Pending", "conditions": [condition]}},
            _content_type=MERGE,
        )

    def _reschedule(self) -> None:
        """Try again to place the pods no node fitted."""
        with self.lock:
            waiting = list(self.unscheduled.items())
        for uid, (ns, name, _) in waiting:
            try:
                pod = self.api.sanitize_for_serialization(self.core.read_namespaced_pod(name, ns))
            except ApiException as exc:
                if exc.status == 404:
                    with self.lock:
                        self.unscheduled.pop(uid, None)
                continue
            meta, spec = pod["metadata"], pod.get("spec") or {}
            if meta["uid"] != uid or spec.get("nodeName") or meta.get("deletionTimestamp"):
                with self.lock:
                    self.unscheduled.pop(uid, None)
                continue
            self._bind(pod)

    def _start(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with self.lock:
            ip = self.free_ips.pop(0)
            run = Run(meta["namespace"], meta["name"], meta["uid"], ip, pod)
            self.runs[run.uid] = run
        # What the downward API (status.podIP, status.hostIP) gives the containers.
        pod.setdefault("status", {}).update(podIP=ip, hostIP=self.network.host_ip)
        for c in pod["spec"]["containers"]:
            run.ready[c["name"]] = not (is_local(c["image"]) and c.get("readinessProbe"))
            if is_unpullable(c["image"]):
                run.ready[c["name"]] = False
            if is_local(c["image"]):
                self._spawn(run, c)
        self._report(run)

    def _spawn(self, run: Run, c: dict[str, Any]) -> None:
        env = container_env(self.core, run.pod, c)
        argv = command_line(c, env)
        name = c["name"]
        cwd = (
            c.get("workingDir")
            if c.get("workingDir") and os.path.isdir(c["workingDir"])
            else str(self.workdir)
        )
        why = _cannot_start(argv, env, cwd)
        if why is not None:
            # As a container runtime: the container never runs, it ends in StartError (128).
            run.exit_codes[name] = 128
            run.start_errors[name] = why
            return
        assert argv is not None
        logf = open(self.workdir / f"{run.ns}_{run.name}_{name}.log", "ab")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                self.network.command(argv),
                env=env,
                cwd=cwd,
                stdout=logf,
                stderr=logf,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            logf.write(f"simulator: cannot start {argv!r}: {exc}\n".encode())
            logf.close()
            run.exit_codes[name] = 127
            return
        logf.close()
        run.procs[name] = proc
        threading.Thread(
            target=self._wait, args=(run, name, proc), daemon=True, name=f"sim-wait-{run.name}"
        ).start()

    def _wait(self, run: Run, name: str, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        with self.lock:
            if run.stopping or self.stopped.is_set():
                return
            run.exit_codes[name] = code
            policy = run.pod["spec"].get("restartPolicy", "Always")
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        if restart:
            self.stopped.wait(1.0)
            with self.lock:
                if run.stopping or self.stopped.is_set():
                    return
                run.restarts[name] = run.restarts.get(name, 0) + 1
                run.exit_codes.pop(name, None)
            c = next(c for c in run.pod["spec"]["containers"] if c["name"] == name)
            self._spawn(run, c)
        try:
            self._report(run)
        except Exception as exc:
            log.warning("status of %s/%s: %s", run.ns, run.name, exc)

    def _status(self, run: Run) -> dict[str, Any]:
        """Return the pod status the kubelet reports for run."""
        containers = run.pod["spec"]["containers"]
        statuses = []
        local_codes = []
        for c in containers:
            name = c["name"]
            code = run.exit_codes.get(name)
            pulled = not is_unpullable(c["image"])
            if not pulled:
                message = f'Failed to pull image "{c["image"]}": not found (simulated registry)'
                state: dict[str, Any] = {"waiting": {"reason": "ErrImagePull", "message": message}}
            elif code is None:
                state = {"running": {"startedAt": run.started_at}}
            else:
                local_codes.append(code)
                why = run.start_errors.get(name)
                state = {
                    "terminated": {
                        "exitCode": code,
                        "reason": "Completed" if code == 0 else "Error",
                        "startedAt": run.started_at,
                        "finishedAt": ts(),
                    }
                }
                if why is not None:
                    state["terminated"].update(reason="StartError", message=why)
            ready = pulled and code is None and run.ready.get(name, True)
            statuses.append(
                {
                    "name": name,
                    "image": c["image"],
                    "imageID": "",
                    "containerID": f"sim://{run.uid[:8]}-{name}",
                    "ready": ready,
                    "started": pulled and code is None,
                    "restartCount": run.restarts.get(name, 0),
                    "state": state,
                }
            )
        done = len(local_codes) == len(containers) and bool(containers)
        if done:
            phase = "Succeeded" if all(c == 0 for c in local_codes) else "Failed"
        elif any("waiting" in s["state"] for s in statuses):
            phase = "Pending"  # a container is not started yet
        else:
            phase = "Running"
        all_ready = all(s["ready"] for s in statuses)
        now = ts()

        def cond(t: str, ok: bool) -> dict[str, Any]:
            return {
                "type": t,
                "status": "True" if ok else "False",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            }

        return {
            "phase": phase,
            "hostIP": self.network.host_ip,
            "hostIPs": [{"ip": self.network.host_ip}],
            "podIP": run.ip,
            "podIPs": [{"ip": run.ip}],
            "startTime": run.started_at,
            "conditions": [
                cond("PodReadyToStartContainers", True),
                cond("Initialized", True),
                cond("Ready", all_ready),
                cond("ContainersReady", all_ready),
                cond("PodScheduled", True),
            ],
            "containerStatuses": statuses,
        }

    def _report(self, run: Run) -> None:
        # One report of a pod at a time, each computed when its turn comes: a container that
        # exits while the start is being reported must not have its Failed overwritten by
        # that (older) Running.
        with run.reporting:
            with self.lock:
                if run.finished:
                    return
                status = self._status(run)
                run.finished = status["phase"] in ("Succeeded", "Failed")
            self.core.patch_namespaced_pod_status(
                run.name, run.ns, {"status": status}, _content_type=MERGE
            )

    def _terminate(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with self.lock:
            run = self.runs.get(meta["uid"])
        if run is not None:
            self._kill(run, grace=int(meta.get("deletionGracePeriodSeconds") or 0))
        body = client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta["uid"])
        )
        self.core.delete_namespaced_pod(meta["name"], meta["namespace"], body=body)

    def _kill(self, run: Run, *, grace: int) -> None:
        with self.lock:
            run.stopping = True
            procs = list(run.procs.values())
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + min(grace, 5)
        for p in procs:
            try:
                p.wait(max(deadline - time.monotonic(), 0.05))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    # -- readiness ------------------------------------------------------------------------

    def _probe_loop(self) -> None:
        """Run readinessProbes of local containers and report readiness changes."""
        last_reschedule = 0.0
        while not self.stopped.wait(0.3):
            if time.monotonic() - last_reschedule >= RESCHEDULE_INTERVAL:
                last_reschedule = time.monotonic()
                try:
                    self._reschedule()
                except Exception as exc:
                    log.debug("rescheduling: %s", exc)
            with self.lock:
                runs = [r for r in self.runs.values() if not r.finished and not r.stopping]
            for run in runs:
                changed = False
                for c in run.pod["spec"]["containers"]:
                    spec = c.get("readinessProbe")
                    if not spec or not is_local(c["image"]) or c["name"] in run.exit_codes:
                        continue
                    ok = probe(spec, run.ip, self.network)
                    if run.ready.get(c["name"]) != ok:
                        run.ready[c["name"]] = ok
                        changed = True
                if changed:
                    try:
                        self._report(run)
                    except Exception as exc:
                        log.debug("readiness of %s: %s", run.name, exc)


def _cannot_start(argv: list[str] | None, env: dict[str, str], cwd: str) -> str | None:
    """Say why a container's command cannot be executed, as runc would; None if it can.

    Checked before spawning: the process runs through the pods' network namespace helper,
    which would start and only then fail, and a runtime never reports such a container as
    running, not even for a moment.
    """
    if argv is None:
        return "no command: the simulator runs only containers that name one"
    exe = argv[0]
    if "/" in exe:
        found: str | None = os.path.join(cwd, exe)  # an absolute exe stays as it is
    else:
        found = shutil.which(exe, path=env.get("PATH", os.defpath))
    if found is None or not os.path.isfile(found):
        return f'exec: "{exe}": executable file not found in $PATH or no such file'
    if not os.access(found, os.X_OK):
        return f'exec: "{exe}": permission denied'
    return None
