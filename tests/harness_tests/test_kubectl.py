"""The real kubectl against the cluster under test: apply, printer columns, watch, delete."""

from __future__ import annotations

import queue
import secrets
import threading
import time
from typing import IO

from tests.harness.kubectl import Kubectl

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.GROUP}
spec:
  group: GROUP
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gd],
          categories: [kp-harness]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Mode, type: string, jsonPath: .spec.mode}
    - {name: Status, type: string, jsonPath: .status.status}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              mode: {type: string}
              with: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status:
            type: object
            properties:
              status: {type: string}
"""

OBJECTS = """
apiVersion: v1
kind: Namespace
metadata: {name: NS}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: NS}
data: {level: "1"}
---
apiVersion: GROUP/v1
kind: Gadget
metadata: {name: alpha, namespace: NS}
spec: {mode: fast, with: {anything: [1, 2]}}
---
apiVersion: GROUP/v1
kind: Gadget
metadata: {name: beta, namespace: NS}
spec: {mode: slow}
"""


class Lines:
    """Collect a process's stdout lines in a thread, so waits can time out."""

    def __init__(self, stream: IO[str]) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.queue.put(line)
        self.queue.put(None)

    def until(self, needle: str, timeout: float) -> str:
        """Return the lines read until one contains needle (or the timeout/EOF)."""
        seen = ""
        deadline = time.monotonic() + timeout
        while needle not in seen:
            try:
                line = self.queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if line is None:
                break
            seen += line
        return seen


def test_kubectl_end_to_end(kubectl: Kubectl) -> None:
    """Apply a CRD and objects, see printer columns, stream a change, delete the namespace."""
    group = f"k{secrets.token_hex(3)}.kubeprober.test"
    ns = f"kp-kubectl-{secrets.token_hex(3)}"
    kubectl("apply", "-f", "-", input=CRD.replace("GROUP", group))
    try:
        kubectl("wait", "--for=condition=Established", f"crd/gadgets.{group}", "--timeout=30s")
        out = kubectl(
            "apply", "-f", "-", input=OBJECTS.replace("GROUP", group).replace("NS", ns)
        ).stdout
        assert f"gadget.{group}/alpha created" in out
        again = kubectl(
            "apply",
            "-f",
            "-",
            input=OBJECTS.replace("GROUP", group)
            .replace("NS", ns)
            .replace('level: "1"', 'level: "2"'),
        ).stdout
        assert "configmap/settings configured" in again
        level = kubectl("get", "cm", "settings", "-n", ns, "-o", "jsonpath={.data.level}")
        assert level.stdout == "2"
        # The typed generators send protobuf bodies.
        kubectl("create", "configmap", "generated", "-n", ns, "--from-literal=k=v")
        made = kubectl("get", "cm", "generated", "-n", ns, "-o", "jsonpath={.data.k}")
        assert made.stdout == "v"

        # A category of the test's own: kubectl caches discovery for the session, so after the
        # CRD goes, "kubectl get kubeprober" in a later test would still ask for gadgets.
        listed = kubectl("get", "kp-harness", "-n", ns, "-o", "name").stdout.split()
        assert sorted(listed) == [f"gadget.{group}/alpha", f"gadget.{group}/beta"]
        table = kubectl("get", f"gadgets.{group}", "-n", ns).stdout.splitlines()
        assert table[0].split() == ["NAME", "MODE", "STATUS", "AGE"]
        assert table[1].split()[:2] == ["alpha", "fast"]
        assert table[2].split()[:2] == ["beta", "slow"]
        kept = kubectl(
            "get", f"gadget.{group}/alpha", "-n", ns, "-o", "jsonpath={.spec.with.anything}"
        ).stdout
        assert kept == "[1,2]"

        watcher = kubectl.popen("get", f"gadgets.{group}", "-n", ns, "-w", "--output-watch-events")
        assert watcher.stdout is not None and watcher.stderr is not None
        lines = Lines(watcher.stdout)
        try:
            first = lines.until("beta", 20)
            assert "alpha" in first and "beta" in first, first
            kubectl(
                "patch",
                f"gadget.{group}/beta",
                "-n",
                ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                '{"status": {"status": "Broken"}}',
            )
            change = lines.until("Broken", 20)
            assert "MODIFIED" in change and "beta" in change, change
        finally:
            watcher.terminate()
            watcher.wait(10)
            lines.thread.join(10)
            watcher.stdout.close()
            watcher.stderr.close()

        deleted = kubectl("delete", "ns", ns, "--timeout=60s")
        assert f'namespace "{ns}" deleted' in deleted.stdout
        missing = kubectl("get", "ns", ns, check=False)
        assert missing.returncode != 0 and "NotFound" in missing.stderr
    finally:
        kubectl("delete", "ns", ns, "--ignore-not-found", "--wait=false", check=False)
        kubectl("delete", "crd", f"gadgets.{group}", "--ignore-not-found", check=False)
