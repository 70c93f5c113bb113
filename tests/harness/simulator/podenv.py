"""A container's environment and command line as the kubelet would build them.

Resolves ``env`` (values, fieldRef, configMapKeyRef, secretKeyRef), ``envFrom`` and ``$(VAR)``
references in command/args, so a local process sees what the container would.
"""

from __future__ import annotations

import base64
import os
import re
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

# Host variables a local process needs to run at all (a container gets these from its image).
HOST_VARS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Expand $(VAR) references the Kubernetes way ($$ escapes, unknown refs stay)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _REF.sub(sub, text)


def _field(pod: dict[str, Any], path: str) -> str:
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str((pod["metadata"].get(m.group(1)) or {}).get(m.group(2), ""))
    cur: Any = pod
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def _data(core: client.CoreV1Api, kind: str, ns: str, name: str) -> dict[str, str]:
    try:
        if kind == "configmap":
            return dict(core.read_namespaced_config_map(name, ns).data or {})
        raw = core.read_namespaced_secret(name, ns).data or {}
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in raw.items()}
    except ApiException as exc:
        if exc.status == 404:
            return {}
        raise


def container_env(
    core: client.CoreV1Api, pod: dict[str, Any], container: dict[str, Any]
) -> dict[str, str]:
    """Return the environment of one container of a pod (pod as a plain dict)."""
    ns = pod["metadata"]["namespace"]
    env = {k: os.environ[k] for k in HOST_VARS if k in os.environ}
    env["HOSTNAME"] = pod["metadata"]["name"]
    env["KUBEPROBER_SIM_POD_IP"] = pod.get("status", {}).get("podIP", "")
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        if src.get("configMapRef"):
            data = _data(core, "configmap", ns, src["configMapRef"]["name"])
        elif src.get("secretRef"):
            data = _data(core, "secret", ns, src["secretRef"]["name"])
        else:
            continue
        env.update({prefix + k: v for k, v in data.items()})
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = expand(str(var["value"]), env)
            continue
        ref = var.get("valueFrom") or {}
        if ref.get("fieldRef"):
            env[name] = _field(pod, ref["fieldRef"]["fieldPath"])
        elif ref.get("configMapKeyRef"):
            r = ref["configMapKeyRef"]
            value = _data(core, "configmap", ns, r["name"]).get(r["key"])
            if value is not None:
                env[name] = value
        elif ref.get("secretKeyRef"):
            r = ref["secretKeyRef"]
            value = _data(core, "secret", ns, r["name"]).get(r["key"])
            if value is not None:
                env[name] = value
        else:
            env.setdefault(name, "")
    return env


def command_line(container: dict[str, Any], env: dict[str, str]) -> list[str] | None:
    """Return command + args expanded, or None when the container names no command."""
    command = container.get("command") or []
    if not command:
        return None
    return [expand(str(a), env) for a in [*command, *(container.get("args") or [])]]
