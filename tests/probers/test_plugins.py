"""Third-party probers arrive through the ``kubeprober.probers`` entry-point group."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubeprober.probers import registry
from kubeprober.probers.probe import parse_probe

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

PLUGIN = '''
"""A third-party prober, as a plugin author would write it."""
from dataclasses import dataclass
from kubeprober.probers.options import option
from kubeprober.probers.sdk import Outcome

DESCRIPTION = "Say hello to a queue."


@dataclass(frozen=True)
class Spec:
    queue: str = option("queue to greet")
    depth: int = option("messages allowed waiting", default=10, minimum=0)


async def probe(spec, ctx):
    return Outcome.passed(f"hello {spec.queue}")
'''


def install_plugin(site: Path, *, name: str, module: str, body: str) -> None:
    """Lay out a module and the dist-info that declares it as an entry point."""
    (site / f"{module}.py").write_text(body)
    dist = site / f"{module}_dist-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}-dist\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[kubeprober.probers]\n{name} = {module}\n")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """A directory on sys.path for plugin distributions; the registry is re-read around it."""
    sys.path.insert(0, str(tmp_path))
    registry.probers.cache_clear()
    yield tmp_path
    sys.path.remove(str(tmp_path))
    registry.probers.cache_clear()


def test_plugin_is_registered_and_validated(site: Path) -> None:
    install_plugin(site, name="queue", module="kp_queue_plugin", body=PLUGIN)
    found = registry.probers()
    assert found["queue"].origin == "kp_queue_plugin-dist"
    assert found["queue"].description == "Say hello to a queue."
    doc = {
        "apiVersion": "kubeprober.io/v1",
        "kind": "Probe",
        "metadata": {"name": "q"},
        "spec": {
            "layer": "middleware",
            "checks": [{"name": "c", "prober": "queue", "with": {"queue": "orders"}}],
        },
    }
    assert parse_probe(doc).checks[0].spec.queue == "orders"


@pytest.mark.parametrize(
    ("name", "body", "logged"),
    [
        ("http", PLUGIN, "the name is taken"),
        ("broken", "raise ImportError('missing dependency')", "failed to load"),
        ("partial", "DESCRIPTION = 'no spec, no probe'", "lacks Spec, probe"),
    ],
)
def test_bad_plugins_are_skipped_with_a_reason(
    site: Path, caplog: pytest.LogCaptureFixture, name: str, body: str, logged: str
) -> None:
    install_plugin(site, name=name, module=f"kp_{name}_plugin", body=body)
    found = registry.probers()
    assert found["http"].origin == "builtin"
    assert name == "http" or name not in found
    assert logged in caplog.text


def test_probers_command_lists_plugins(site: Path) -> None:
    install_plugin(site, name="queue", module="kp_queue_plugin", body=PLUGIN)
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [str(Path(sys.executable).with_name("kubeprober")), "probers", "queue"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout
    assert "queue: Say hello to a queue.  (plugin from kp_queue_plugin-dist)" in out
    assert "depth" in out and "messages allowed waiting" in out


def test_the_example_plugin_installs_with_pip_and_runs(tmp_path: Path) -> None:
    """The README's steps for examples/prober-plugin, against a licence server on loopback."""
    source = tmp_path / "prober-plugin"  # pip builds in the source tree: not in the repo's
    shutil.copytree(EXAMPLES / "prober-plugin", source)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(source)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    server = socket.create_server(("127.0.0.1", 0))
    greeter = threading.Thread(target=_greet, args=(server,), daemon=True)
    greeter.start()
    try:
        doc = yaml.safe_load((EXAMPLES / "prober-plugin" / "probe.yaml").read_text())
        doc["spec"]["checks"][0]["with"].update(host="127.0.0.1", port=server.getsockname()[1])
        probes = tmp_path / "probe.yaml"
        probes.write_text(yaml.safe_dump(doc))
        kubeprober = str(Path(sys.executable).with_name("kubeprober"))
        env = {**os.environ, "PYTHONPATH": str(site)}
        listed = subprocess.run(
            [kubeprober, "probers", "licence"],
            capture_output=True, text=True, env=env, timeout=60, check=True,
        ).stdout  # fmt: skip
        checked = subprocess.run(
            [kubeprober, "check", str(probes)],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
    finally:
        server.close()
        greeter.join(5)
    assert "licence: Prove the licence server accepts connections" in listed
    assert "(plugin from kubeprober-licence)" in listed
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "PASS" in checked.stdout and "LICENCE server 4.2 ready" in checked.stdout


def _greet(server: socket.socket) -> None:
    """Answer one connection with a licence server's banner."""
    try:
        conn, _ = server.accept()
    except OSError:  # closed before anyone came
        return
    with conn:
        conn.sendall(b"LICENCE server 4.2 ready\r\n")
