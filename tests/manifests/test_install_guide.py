"""The README's install guide, run as written against the cluster under test.

One cluster plays both parts, as the guide allows (the aggregator and the agent have
namespaces of their own). Every ``sh`` block of "Install on Kubernetes" runs through bash in
a scratch directory (``manifests`` linked in, ``~/.kube/config`` the cluster's), with the
aggregator's example host replaced by the aggregator the test runs. No kubelet runs the
Deployments' pods, so the test runs their containers' command lines as local processes,
with the files their volumes would mount taken from the Secrets and the ConfigMap the guide's
commands created. On a real control plane both run as their ServiceAccounts, bound by the
manifests' roles alone, and the pods must pass the restricted Pod Security admission.
"""

from __future__ import annotations

import base64
import os
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import trustme
from kubernetes import client

from kubeprober.aggregator.kube import mode as central_mode
from kubeprober.exporter.kube.mode import PERMISSIONS as AGENT_PERMISSIONS
from kubeprober.kube.resources import NODES
from tests.binaries import binary
from tests.conftest import CENTRAL_NAMESPACE, MANIFESTS, RBAC_NAMESPACE
from tests.harness import accounts
from tests.harness.faultproxy import FaultProxy
from tests.harness.fixtures import KubeCluster
from tests.harness.kubectl import Kubectl
from tests.harness.waiting import wait_for
from tests.manifests.rendering import OVERLAYS, find, local_command, render

ROOT = MANIFESTS.parent
HOST = "kubeprober.example.com"
STEPS = [
    "1. Build the image",
    "2. Install the aggregator (central cluster)",
    "3. Register a managed cluster (central cluster)",
    "4. Install the agent (managed cluster)",
    "5. Attach probes",
    "6. See the results",
    "7. Prometheus and Grafana (central cluster)",
    "8. Upgrade",
    "9. Uninstall",
]
NOT_RUN = {
    # No container engine here: tests/test_packaging.py builds the wheel and runs it.
    "docker build -t registry.example.com/kubeprober:0.1.0 .",
    "docker push registry.example.com/kubeprober:0.1.0",
    # prometheus-operator's CRDs are not installed: test_kustomize checks what it renders.
    "kubectl apply -k manifests/prometheus",
}

BEYOND_ITS_NAMESPACE = re.compile(
    rf"GET /(api/v1|apis/[^/]+/[^/]+)/("
    rf"namespaces/(?!{RBAC_NAMESPACE}/)[^/]+/"  # another namespace's objects
    r"|(services|ingresses|endpointslices|pods|secrets|deployments|daemonsets)\?)"  # all of them
)
"""What the agent bound to its own namespace may not read: the default addons, dns and targets
Probes read kube-system or every namespace, and say they cannot (manifests/probes/*.yaml,
manifests/managed/rbac/base/proberroles.yaml). Those refusals are by design; any other is not."""


def guide() -> dict[str, list[str]]:
    """The commands of each step of the README's install guide, continuation lines joined."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Install on Kubernetes\n", 1)[1].split("\n## ", 1)[0]
    steps = {}
    for part in section.split("\n### ")[1:]:
        title, _, body = part.partition("\n")
        blocks = re.findall(r"```sh\n(.*?)```", body, re.S)
        text = "".join(blocks).replace("\\\n", " ")
        steps[title] = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    return steps


class Shell:
    """Runs the guide's commands as a reader would, in a scratch directory of their own."""

    def __init__(self, workdir: Path, kube_config_path: Path, kubectl: Kubectl) -> None:
        self.workdir = workdir
        workdir.mkdir()
        (workdir / "manifests").symlink_to(MANIFESTS)
        (workdir / ".kube").mkdir()
        shutil.copy(kube_config_path, workdir / ".kube" / "config")
        bin_dir = workdir / "bin"
        bin_dir.mkdir()
        wrapper = bin_dir / "kubectl"  # the harness's kubectl, with its discovery cache
        wrapper.write_text(f'#!/bin/sh\nexec {kubectl.path} --cache-dir={kubectl.cache_dir} "$@"\n')
        wrapper.chmod(0o755)
        venv_bin = Path(sys.executable).parent  # this environment's kubeprober
        self.env = {
            "PATH": f"{bin_dir}:{venv_bin}:/usr/bin:/bin",
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
        }
        self.urls: dict[str, str] = {}

    def substitute(self, command: str) -> str:
        """The command with the example host replaced by the test's aggregator."""
        for example, real in self.urls.items():
            command = command.replace(example, real)
        return command

    def __call__(self, command: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one command through bash, as :meth:`substitute` makes it."""
        command = self.substitute(command)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert not check or done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        return done

    def together(self, commands: list[str]) -> None:
        """Run commands at the same time, as on different clusters; each must succeed."""
        procs = [
            subprocess.Popen(
                ["bash", "-euo", "pipefail", "-c", self.substitute(command)],
                cwd=self.workdir,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for command in commands
        ]
        for command, proc in zip(commands, procs, strict=True):
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, f"{command}\n{out}"


class Service:
    """A Deployment's container run as a local process: its command line, its files."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        found = re.search(r"serving (http://127\.0\.0\.1:\d+)", line)
        assert found, f"{argv[1]} did not start: {line}{log.read_text()}"
        self.url = found.group(1)

    def log_text(self) -> str:
        """What it logged so far."""
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        """SIGTERM, and wait (SIGKILL after 20 s)."""
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.log.close()


def _container(path: str, name: str) -> dict[str, Any]:
    pod = find(render(path), "Deployment", name)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container


def _mount_secret(
    core: client.CoreV1Api, container: dict[str, Any], secret: str, namespace: str, root: Path
) -> None:
    """Write the Secret's keys where the container mounts it, as the kubelet would."""
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"].startswith("/var/run")]
    target = root / mount["mountPath"].lstrip("/")
    target.mkdir(parents=True)
    for key, value in (core.read_namespaced_secret(secret, namespace).data or {}).items():
        (target / key).write_bytes(base64.b64decode(value))
    for mount in container["volumeMounts"]:
        (root / mount["mountPath"].lstrip("/")).mkdir(parents=True, exist_ok=True)


def _identity(
    cluster: KubeCluster,
    kube_api: client.ApiClient,
    kube_config_path: Path,
    account: str,
    namespace: str,
    grants: list[tuple[Any, str | None]],
    workdir: Path,
) -> FaultProxy | None:
    """On a real control plane, a proxy whose kubeconfig is the ServiceAccount's, once the
    manifests' bindings grant it all it needs; on the test server (no RBAC), None."""
    if not cluster.real:
        return None
    accounts.wait_granted(kube_api, accounts.user(namespace, account), grants)
    kubeconfig = accounts.token_kubeconfig(
        kube_api, kube_config_path, namespace, account, workdir / f"{account}.yaml"
    )
    proxy_dir = workdir / f"{account}-proxy"
    proxy_dir.mkdir()
    return FaultProxy(kubeconfig, proxy_dir).start()


def test_the_install_guide_works_as_written(
    kube_cluster: KubeCluster,
    kube_api: client.ApiClient,
    kube_config_path: Path,
    kubectl: Kubectl,
    fresh: list[str],
    tmp_path: Path,
) -> None:
    binary("openssl")  # the guide makes the read token with it
    steps = guide()
    assert list(steps) == STEPS
    run = Shell(tmp_path / "reader", kube_config_path, kubectl)
    core = client.CoreV1Api(kube_api)
    proxies: list[FaultProxy] = []
    services: list[Service] = []  # the Deployments' containers, run here
    local = {**os.environ, "PATH": run.env["PATH"], "PYTHONUNBUFFERED": "1"}

    def run_step(title: str) -> list[subprocess.CompletedProcess[str]]:
        done = []
        for command in steps[title]:
            if command in NOT_RUN:
                continue
            done.append(run(command))
            applied = re.fullmatch(r"kubectl apply -k manifests/(\S+).*", command)
            if applied:
                fresh.append(applied.group(1))
        return done

    try:
        assert NOT_RUN & set(steps[STEPS[0]]) == set(steps[STEPS[0]])

        # 2. The aggregator: its objects, its Secret, the Ingress with its certificate.
        cert = trustme.CA().issue_cert(HOST)
        cert.cert_chain_pems[0].write_to_path(run.workdir / "tls.crt")
        cert.private_key_pem.write_to_path(run.workdir / "tls.key")
        run_step(STEPS[1])
        assert (run.workdir / "admin.token").read_text().strip()
        container = _container("central", "kubeprober-aggregator")
        root = tmp_path / "aggregator-pod"
        _mount_secret(core, container, "kubeprober-aggregator", CENTRAL_NAMESPACE, root)
        proxy = _identity(
            kube_cluster, kube_api, kube_config_path, "kubeprober-aggregator",
            CENTRAL_NAMESPACE, [(p, CENTRAL_NAMESPACE) for p in central_mode.PERMISSIONS],
            tmp_path,
        )  # fmt: skip
        proxies += [proxy] if proxy else []
        argv = local_command(container, env={}, root=root)
        # In a pod it finds the API server and its namespace by itself; here it is told.
        argv = [a if a != "--listen=:8088" else "--listen=127.0.0.1:0" for a in argv]
        kubeconfig = proxy.kubeconfig if proxy else kube_config_path
        argv += ["--kubeconfig", str(kubeconfig), "--namespace", CENTRAL_NAMESPACE]
        aggregator = Service(argv, tmp_path / "aggregator.log", local)
        services.append(aggregator)
        run.urls = {
            f"wss://{HOST}": aggregator.url.replace("http", "ws", 1),
            f"https://{HOST}": aggregator.url,
        }

        # 3. Register moon; it prints the commands of step 4, which the README shows.
        (added,) = run_step(STEPS[2])
        printed = [ln.strip() for ln in added.stdout.splitlines() if ln.startswith("  kubectl")]
        (token,) = set(re.findall(r"kp1\.moon\.[A-Za-z0-9_-]+", added.stdout))
        shown = [run.substitute(c) for c in steps[STEPS[3]][:-1]]
        assert [c.replace(token, "kp1.moon.SECRET") for c in printed] == shown

        # 4. moon's agent, installed by the printed commands.
        for command in printed:
            run(command)
        fresh.append("managed")
        container = _container("managed", "kubeprober-agent")
        root = tmp_path / "agent-pod"
        _mount_secret(core, container, "kubeprober-agent-token", RBAC_NAMESPACE, root)
        settings = core.read_namespaced_config_map("kubeprober-agent", RBAC_NAMESPACE).data
        proxy = _identity(
            kube_cluster, kube_api, kube_config_path, "kubeprober-agent", RBAC_NAMESPACE,
            [(p, None if p.resource == NODES.plural else RBAC_NAMESPACE)
             for p in AGENT_PERMISSIONS],
            tmp_path,
        )  # fmt: skip
        proxies += [proxy] if proxy else []
        # The pod's address (downward API), for container probes' reports: none run here.
        env = {"KUBEPROBER_AGGREGATOR_URL": settings["aggregator-url"], "POD_IP": "127.0.0.1"}
        argv = local_command(container, env=env, root=root)
        argv = [a if a != "--listen=:8080" else "--listen=127.0.0.1:0" for a in argv]
        kubeconfig = proxy.kubeconfig if proxy else kube_config_path
        argv += ["--kubeconfig", str(kubeconfig), "--namespace", RBAC_NAMESPACE]
        services.append(Service(argv, tmp_path / "agent.log", local))

        # 5 and 6. Probes attached centrally and locally run on moon; every view shows them.
        run_step(STEPS[4])
        get_probestatus, get_clusters, status = steps[STEPS[5]]
        shown_last: list[str] = []

        def dns_result() -> bool:
            shown_last[:] = [run(get_probestatus).stdout]
            return bool(re.search(r"^dns\s+(PASS|INFO|WARN|ERROR|UNKNOWN)\s", shown_last[0], re.M))

        try:
            wait_for(dns_result, timeout=60, interval=0.5, what="a result in moon's ProbeStatus")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {shown_last}\n{services[-1].log_text()}") from None
        wait_for(
            lambda: re.search(r"^moon\s+Online\s", run(get_clusters).stdout, re.M),
            timeout=30, interval=0.5, what="moon Online in kubectl get clusters",
        )  # fmt: skip
        table = wait_for(
            lambda: (done := run(status, check=False)).returncode != 3 and done,
            timeout=30, interval=0.5, what="a fleet table with results",
        )  # fmt: skip
        assert table and re.search(r"^moon\s", table.stdout, re.M), table
        for proxy in proxies:  # as their ServiceAccounts, nothing was refused but by design
            refused = [r for r in proxy.forbidden if not BEYOND_ITS_NAMESPACE.match(r)]
            assert refused == [], refused

        # The Deployments' pods are admitted (on a real control plane: restricted).
        for namespace, name in [
            (CENTRAL_NAMESPACE, "kubeprober-aggregator"),
            (RBAC_NAMESPACE, "kubeprober-agent"),
        ]:
            selector = f"app.kubernetes.io/name={name}"
            wait_for(
                lambda ns=namespace, s=selector: (
                    core.list_namespaced_pod(ns, label_selector=s).items
                ),
                what=f"a pod of {namespace}/{name}",
            )

        # 4, the alternative: the agent of every namespace.
        run(steps[STEPS[3]][-1])
        fresh.append("managed/all-namespaces")
        (agent,) = (
            client.AppsV1Api(kube_api)
            .read_namespaced_deployment("kubeprober-agent", RBAC_NAMESPACE)
            .spec.template.spec.containers
        )
        assert agent.args[-1] == "--all-namespaces"

        # 7 and 8: Grafana's dashboards; an upgrade keeps each cluster's own settings.
        run_step(STEPS[6])
        run_step(STEPS[7])
        for kind, name, namespace in [
            ("secret", "kubeprober-aggregator", CENTRAL_NAMESPACE),
            ("secret", "kubeprober-agent-token", RBAC_NAMESPACE),
            ("configmap", "kubeprober-agent", RBAC_NAMESPACE),
        ]:
            run(f"kubectl -n {namespace} get {kind} {name}")

        # The guide applied every overlay but prometheus (not installable here).
        assert set(OVERLAYS) - set(fresh) == {"prometheus"}

        # 9. Uninstall. The CRDs are the test session's: deleting them is only asked, dry.
        for service in services:
            service.stop()
        services.clear()
        uninstall = steps[STEPS[8]]
        assert uninstall[-1] == "kubectl delete -k manifests/crds"
        # Each side is its own cluster's business, so both go at once (each waits for its
        # namespace, which a real namespace controller empties after some seconds).
        run.together(uninstall[:-1])
        run(uninstall[-1] + " --dry-run=server")
        for namespace in (RBAC_NAMESPACE, CENTRAL_NAMESPACE):
            wait_for(
                lambda ns=namespace: run(f"kubectl get namespace {ns}", check=False).returncode,
                timeout=60, interval=0.5, what=f"namespace {namespace} deleted",
            )  # fmt: skip
    finally:
        for service in services:
            service.stop()
        services.clear()
        for proxy in proxies:
            proxy.stop()
