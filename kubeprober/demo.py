"""``kubeprober demo``: a whole local fleet on loopback, no cluster needed.

The aggregator runs in this process over TLS (a throwaway CA made at start); three agents
run as child ``kubeprober agent`` processes that dial it through real tunnels. Probes are
assigned centrally and chosen so every panel has data: passing checks, a certificate close
to expiry (WARN), a database that is down (ERROR) and a misconfigured probe (UNKNOWN).

One demo owns its state directory at a time: it holds a lock on ``demo.lock`` there for as
long as it runs, so a second start changes nothing and says where the first one is. An agent
that dies is logged and started again after :data:`RESTART_DELAY`; its cluster shows Offline
on the board meanwhile, as a real outage would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import fcntl
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubeprober.aggregator.auth import new_operator_token, token_hash
from kubeprober.aggregator.process import run_aggregator
from kubeprober.aggregator.state import AggregatorSettings
from kubeprober.aggregator.tokens import hashed_token, new_token
from kubeprober.args import USAGE_EXIT, Parser, listen_address, os_problem, positive_float

log = logging.getLogger(__name__)
CLUSTERS = ("moon", "mars", "venus")
CERT_DAYS = 10
"""The demo certificate expires in 10 days, inside the TLS check's 30-day warning."""
RESTART_DELAY = 5.0
"""Seconds before a dead agent is started again: long enough to see its cluster go Offline,
short enough that a crashing agent costs one log line per try, not a busy loop."""
AGGREGATOR_START = 30.0
"""Seconds the aggregator may take to listen (a slow first TLS set-up) before the demo gives up."""


class DemoRunning(Exception):
    """Another demo holds the state directory; the text says where it is."""


LOCAL_PROBES = """\
apiVersion: kubeprober.io/v1
kind: Probe
metadata: {name: local-host}
spec:
  layer: infrastructure
  interval: 15s
  checks:
  - name: tmp-writable
    prober: exec
    with: {command: ["sh", "-c", "f=$(mktemp) && rm \\"$f\\" && echo /tmp is writable"]}
"""


@dataclass(frozen=True)
class DemoSettings:
    """Where and for how long the demo runs."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 8088
    duration: float | None = None
    """Seconds to run before stopping by itself; None runs until Ctrl-C."""


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """Write a CA and a server certificate for 127.0.0.1/localhost; return (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeprober demo CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


def free_port(host: str) -> int:
    """A loopback port nothing listens on: the demo's "database that is down"."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
    return port


def clusters_file(*, port: int, ca: Path, tokens: dict[str, str], down_port: int) -> str:
    """The central definition: three clusters, their tokens, and the probes assigned."""
    url = f"https://127.0.0.1:{port}"
    docs = []
    labels = {
        "moon": ["aggregator-api", "aggregator-cert"],
        "mars": ["aggregator-api", "aggregator-cert", "orders-db"],
        "venus": ["aggregator-api", "aggregator-cert", "payments"],
    }
    for name in CLUSTERS:
        label_lines = "".join(f'    probe/{p}: "true"\n' for p in labels[name])
        docs.append(
            f"apiVersion: kubeprober.io/v1\nkind: Cluster\nmetadata:\n  name: {name}\n"
            f"  labels:\n{label_lines}spec:\n  displayName: {name.title()}\n"
            f"  tokenSecretRef: {{name: token-{name}}}\n"
        )
        docs.append(
            f"apiVersion: v1\nkind: Secret\nmetadata: {{name: token-{name}}}\n"
            f"stringData: {{tokenHash: {hashed_token(tokens[name])}}}\n"
        )
    docs.append(f"""\
apiVersion: kubeprober.io/v1
kind: Probe
metadata: {{name: aggregator-api}}
spec:
  layer: application
  interval: 10s
  checks:
  - name: healthz
    prober: http
    with: {{url: "{url}/healthz", caFile: "{ca}", bodyRegex: "ok"}}
""")
    docs.append(f"""\
apiVersion: kubeprober.io/v1
kind: Probe
metadata: {{name: aggregator-cert}}
spec:
  layer: infrastructure
  interval: 30s
  checks:
  - name: expiry
    prober: tls
    with: {{host: 127.0.0.1, port: {port}, serverName: localhost, caFile: "{ca}", warnDays: 30}}
""")
    docs.append(f"""\
apiVersion: kubeprober.io/v1
kind: Probe
metadata: {{name: orders-db}}
spec:
  layer: middleware
  interval: 10s
  timeout: 3s
  checks:
  - name: postgres-port
    prober: tcp
    with: {{host: 127.0.0.1, port: {down_port}}}
""")
    docs.append(f"""\
apiVersion: kubeprober.io/v1
kind: Probe
metadata: {{name: payments}}
spec:
  layer: application
  interval: 10s
  checks:
  - name: checkout
    prober: http
    # Misconfigured on purpose: the CA file does not exist, so the probe cannot tell (UNKNOWN).
    with: {{url: "{url}/healthz", caFile: "/nonexistent/payments-ca.pem"}}
""")
    return "---\n".join(docs)


@dataclass(frozen=True)
class DemoFiles:
    """What prepare() wrote: TLS material, the clusters file and each agent's directory."""

    ca: Path
    cert: Path
    key: Path
    clusters: Path
    port: int
    agent_dirs: dict[str, Path]
    operators: Path
    """The ``--operator-tokens`` file; the token itself is in ``operator-token`` beside it."""


def prepare(settings: DemoSettings) -> DemoFiles:
    """Write certificates, tokens, the clusters file and the agents' local probes."""
    state = settings.state_dir
    state.mkdir(parents=True, exist_ok=True)
    ca, cert, key = make_tls(state / "tls")
    port = settings.port or free_port(settings.host)
    tokens = {name: str(new_token(name)) for name in CLUSTERS}
    path = state / "clusters.yaml"
    path.write_text(
        clusters_file(port=port, ca=ca, tokens=tokens, down_port=free_port(settings.host))
    )
    operator = new_operator_token()
    (state / "operator-token").write_text(operator + "\n")
    (state / "operator-token").chmod(0o600)
    (state / "operators").write_text(f"demo: {token_hash(operator)}\n")
    dirs = {}
    for name in CLUSTERS:
        directory = dirs[name] = state / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(tokens[name] + "\n")
        (directory / "token").chmod(0o600)
        (directory / "local-probes.yaml").write_text(LOCAL_PROBES)
    return DemoFiles(ca, cert, key, path, port, dirs, state / "operators")


@contextlib.contextmanager
def claim(state: Path) -> Iterator[None]:
    """Hold ``state``'s demo lock, or raise DemoRunning saying where the running demo is.

    The lock is the kernel's (flock): it goes with the process however that ends, so a demo
    killed with SIGKILL never blocks the next one.
    """
    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(state / "demo.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DemoRunning(_running(state, os.read(fd, 32).decode().strip())) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            (state / "demo.json").unlink(missing_ok=True)  # `status` must not find a dead demo
    finally:
        os.close(fd)


def _running(state: Path, pid: str) -> str:
    where = f"a demo is already running from {state} (pid {pid or '?'})"
    try:
        info = json.loads((state / "demo.json").read_text())
        where += f": board {info['board']}, details in {state / 'demo.json'}"
    except (OSError, ValueError, KeyError, TypeError):
        where += " (still starting)"
    return f"{where}; nothing was changed. Stop it first, or use another --state-dir and --listen"


async def run_demo(settings: DemoSettings) -> None:
    """Start the fleet, print where to look, run until Ctrl-C or ``duration``.

    Raises DemoRunning, before touching anything, when a demo already runs from the state
    directory, and OSError when the aggregator cannot listen.
    """
    with claim(settings.state_dir):
        await _run(settings, prepare(settings))


async def _run(settings: DemoSettings, files: DemoFiles) -> None:
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    aggregator = asyncio.create_task(
        run_aggregator(
            AggregatorSettings(
                clusters_file=files.clusters,
                host=settings.host,
                port=files.port,
                tls_cert=files.cert,
                tls_key=files.key,
                operator_tokens_file=files.operators,
            ),
            on_listening=ready.set_result,
            stop=stop,
        ),
        name="demo-aggregator",
    )
    agents: dict[str, asyncio.subprocess.Process] = {}
    supervisors: list[asyncio.Task[None]] = []
    try:
        # The aggregator either listens or fails (a port in use): whichever comes first.
        starting: set[asyncio.Future[Any]] = {ready, aggregator}
        await asyncio.wait(starting, timeout=AGGREGATOR_START, return_when="FIRST_COMPLETED")
        if aggregator.done():
            aggregator.result()  # raises what stopped it
        if not ready.done():
            raise OSError(f"the aggregator did not listen within {AGGREGATOR_START:g}s")
        url = ready.result()
        for name, directory in files.agent_dirs.items():
            agents[name] = await _start_agent(directory, files.port, files.ca)
        info: dict[str, Any] = {
            "aggregator": url,
            "board": f"{url}/",
            "status": f"{url}/status",
            "metrics": f"{url}/metrics",
            "ca": str(files.ca),
            "operatorToken": str(settings.state_dir / "operator-token"),
            "agents": [{"cluster": n, "pid": p.pid} for n, p in agents.items()],
        }
        summary = settings.state_dir / "demo.json"
        await asyncio.to_thread(summary.write_text, json.dumps(info, indent=2) + "\n")

        async def supervise(name: str) -> None:
            """Start ``name``'s agent again whenever it dies, unless the demo is stopping."""
            while True:
                proc = agents[name]
                code = await proc.wait()
                if stop.is_set():  # Ctrl-C reached the agents too: the demo is stopping
                    return
                log.error(
                    "agent %s (pid %d) exited with code %d; starting it again in %gs "
                    "(its log: %s)",
                    name, proc.pid, code, RESTART_DELAY, files.agent_dirs[name] / "agent.log",
                )  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RESTART_DELAY)
                    return
                agents[name] = await _start_agent(files.agent_dirs[name], files.port, files.ca)
                info["agents"] = [{"cluster": n, "pid": p.pid} for n, p in agents.items()]
                await asyncio.to_thread(summary.write_text, json.dumps(info, indent=2) + "\n")
                log.info("agent %s started again (pid %d)", name, agents[name].pid)

        supervisors = [
            asyncio.create_task(supervise(name), name=f"demo-supervise-{name}") for name in agents
        ]
        print(
            f"kubeprober demo: 3 clusters ({', '.join(CLUSTERS)}) reporting to one aggregator",
            f"  board    {info['board']}",
            f"  status   {info['status']}",
            f"  metrics  {info['metrics']}",
            f"  (TLS with a demo CA: curl --cacert {files.ca} {info['status']})",
            f"  run a probe now: kubeprober run local-host --cluster moon --aggregator {url} "
            f"--aggregator-ca {files.ca} --operator-token-file {info['operatorToken']}",
            f"  details in {summary}; Ctrl-C stops everything",
            sep="\n",
            flush=True,
        )
        await asyncio.wait({aggregator}, timeout=settings.duration)
    finally:
        for task in supervisors:
            task.cancel()
        await asyncio.gather(*supervisors, return_exceptions=True)
        for proc in agents.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in agents.items():
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                log.warning("agent %s did not stop; killing it", name)
                proc.kill()
                await proc.wait()
        stop.set()
        await aggregator


async def _start_agent(directory: Path, port: int, ca: Path) -> asyncio.subprocess.Process:
    # The child keeps its own copy of the log descriptor; ours closes right after the spawn.
    fd = os.open(directory / "agent.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kubeprober.cli", "agent",
            "--probes", str(directory / "local-probes.yaml"),
            "--state-dir", str(directory / "state"),
            "--listen", "127.0.0.1:0",
            "--aggregator", f"wss://127.0.0.1:{port}",
            "--token-file", str(directory / "token"),
            "--aggregator-ca", str(ca),
            stdout=fd, stderr=fd, stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    finally:
        os.close(fd)


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add ``demo`` to the umbrella CLI."""
    p = sub.add_parser(
        "demo",
        help="run a whole local fleet: the aggregator and three agents on loopback",
        description="Start the aggregator (TLS, demo CA) and three agents that dial it, with "
        "probes assigned centrally; print the board, /status and /metrics URLs.",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".state/demo"),
        metavar="DIR",
        help="where certificates, tokens, logs and demo.json go (default %(default)s)",
    )
    p.add_argument(
        "--listen",
        type=listen_address,
        default=("127.0.0.1", 8088),
        metavar="HOST:PORT",
        help="aggregator address (default 127.0.0.1:8088; port 0 = any free port)",
    )
    p.add_argument(
        "--duration",
        type=positive_float,
        metavar="SECONDS",
        help="stop by itself after this long (for scripts)",
    )
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    host, port = args.listen
    settings = DemoSettings(state_dir=args.state_dir, host=host, port=port, duration=args.duration)
    try:
        asyncio.run(run_demo(settings))
    except KeyboardInterrupt:  # the aggregator's handler normally takes Ctrl-C first
        pass
    except DemoRunning as exc:
        print(f"kubeprober demo: {exc}", file=sys.stderr)
        return USAGE_EXIT
    except OSError as exc:
        under = exc.filename is not None and Path(exc.filename).is_relative_to(args.state_dir)
        print(
            f"kubeprober demo: {'--state-dir ' if under else ''}{os_problem(exc)}", file=sys.stderr
        )
        return USAGE_EXIT
    return 0
