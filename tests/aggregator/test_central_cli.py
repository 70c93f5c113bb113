"""The central CLI, run as the installed ``kubeprober`` script against a real aggregator.

``status``, ``run`` and ``cluster add`` talk to (or write for) an aggregator running in the test's
event loop, with agents reporting through real tunnels; ``aggregator`` itself runs as a process.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from kubeprober.aggregator.registry import load_file
from tests.aggregator._fleet_harness import (
    FleetFile,
    Service,
    agent,
    aggregator,
    cluster_of,
    eventually,
    exec_probe,
    get_json,
    has_results,
    make_tls,
    probe,
    write_operator_tokens,
    write_probes,
)
from tests.binaries import binary
from tests.ports import free_port

KUBEPROBER = str(Path(sys.executable).with_name("kubeprober"))
READ_TOKEN = "cli-read-token-0123"


@dataclass
class Run:
    """What one ``kubeprober`` invocation did."""

    code: int
    out: str
    err: str


async def kubeprober(*args: str, env: dict[str, str] | None = None) -> Run:
    """Run the installed console script and wait for it (at most 60 s)."""
    proc = await asyncio.create_subprocess_exec(
        KUBEPROBER,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@pytest_asyncio.fixture
async def tls_port(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """A TLS listener with a trustme certificate; return its port and the CA file."""
    tls = make_tls(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    yield server.sockets[0].getsockname()[1], tls.ca
    server.close()
    await server.wait_closed()


def suspended(probe: dict[str, Any]) -> dict[str, Any]:
    """The Probe with ``suspend: true``: its checks never get a result."""
    return {**probe, "spec": {**probe["spec"], "suspend": True}}


# cluster -> (its one local probe, the exit code of `status --cluster` for it)
FLEET: dict[str, tuple[dict[str, Any] | None, int, str]] = {
    "ok": (exec_probe("disk", "true", layer="infrastructure"), 0, "PASS"),
    "warn": (None, 1, "WARN"),  # a tls check with a far warnDays, filled in by the fixture
    "error": (exec_probe("db", "false", layer="middleware"), 2, "ERROR"),
    "unknown": (exec_probe("tool", "/nonexistent/kp-tool", layer="kubernetes"), 3, "UNKNOWN"),
    # Nothing with a result is neither healthy nor UNKNOWN; exit 3 all the same: no answer.
    "idle": (suspended(exec_probe("nap", "true")), 3, "pending"),
    "pending": (None, 3, "no checks"),  # defined, but its agent never connects
}


@dataclass
class CentralFleet:
    """An aggregator with the FLEET clusters reporting, and its URL."""

    url: str
    file: FleetFile
    tmp: Path
    stack: AsyncExitStack
    http: aiohttp.ClientSession

    async def add_agent(self, cluster: str, probes: list[dict[str, Any]]) -> None:
        """Start an agent for ``cluster`` with local ``probes``."""
        path = write_probes(self.tmp / f"{cluster}.yaml", probes)
        service = agent(cluster, fleet=self.file, aggregator_url=self.url, probes=path)
        await service.start()
        self.stack.push_async_callback(service.stop)


async def start_fleet(
    tmp: Path,
    stack: AsyncExitStack,
    http: aiohttp.ClientSession,
    probes: dict[str, list[dict[str, Any]]],
    *,
    pending: tuple[str, ...] = (),
    read_token: bool = False,
    operators: Path | None = None,
) -> CentralFleet:
    """Start an aggregator and one agent per ``probes`` key; wait until all have results.

    ``operators`` is its ``--operator-tokens`` file; by default one with the token in
    ``tmp/operator-token``."""
    file = FleetFile(tmp / "clusters.yaml")
    for name in [*probes, *pending]:
        file.add(name)
    file.write()
    token_file = None
    if read_token:
        token_file = tmp / "read-token"
        token_file.write_text(READ_TOKEN + "\n")
    if operators is None:
        operators = tmp / "operators"
        token = write_operator_tokens(operators, "ops")["ops"]
        (tmp / "operator-token").write_text(token + "\n")
    central: Service = aggregator(
        file.path, read_token_file=token_file, operator_tokens_file=operators
    )
    await central.start()
    stack.push_async_callback(central.stop)
    fleet = CentralFleet(central.url, file, tmp, stack, http)
    for name, local in probes.items():
        await fleet.add_agent(name, local)
    token = READ_TOKEN if read_token else None

    async def status() -> dict[str, Any]:
        return await get_json(http, f"{central.url}/status", token=token)

    def ready(doc: dict[str, Any]) -> bool:
        # A suspended probe never gets a result: it only has to be listed.
        return all(
            has_results(
                cluster_of(doc, n),
                *(p["metadata"]["name"] for p in local if not p["spec"].get("suspend")),
            )
            and len(cluster_of(doc, n)["probes"]) == len(local)
            for n, local in probes.items()
        )

    await eventually(status, ready, within=15, what="every agent's results")
    return fleet


@pytest_asyncio.fixture
async def stack() -> AsyncIterator[tuple[AsyncExitStack, aiohttp.ClientSession]]:
    """Services stopped at teardown, and an HTTP client."""
    async with aiohttp.ClientSession() as http, AsyncExitStack() as stack:
        yield stack, http


@pytest_asyncio.fixture
async def central(
    tmp_path: Path,
    tls_port: tuple[int, Path],
    stack: tuple[AsyncExitStack, aiohttp.ClientSession],
) -> CentralFleet:
    """The FLEET, reporting to an aggregator in this loop."""
    port, ca = tls_port
    warn = probe(
        "cert",
        "tls",
        {"host": "127.0.0.1", "port": port, "caFile": str(ca), "warnDays": 1_000_000},
        layer="infrastructure",
    )
    probes = {n: [p or warn] for n, (p, _, _) in FLEET.items() if n != "pending"}
    return await start_fleet(tmp_path, *stack, probes, pending=("pending",))


def rows(out: str) -> dict[str, list[str]]:
    """Table rows of ``status`` output keyed by their first column (until a blank line)."""
    table: dict[str, list[str]] = {}
    for line in out.splitlines():
        if not line.strip():
            break
        cells = line.split()
        table[cells[0]] = cells
    return table


async def test_status_prints_the_fleet_and_exits_with_the_worst(central: CentralFleet) -> None:
    calls = [("status", "--aggregator", central.url)] + [
        ("status", "--aggregator", central.url, "--cluster", name) for name in [*FLEET, "nope"]
    ]
    runs = await asyncio.gather(*(kubeprober(*c) for c in calls))
    nope = runs.pop()
    assert nope.code == 3 and nope.out == "", nope
    said = f"kubeprober: {central.url}/status?cluster=nope: 404 unknown cluster 'nope'\n"
    assert nope.err == said

    whole = runs[0]
    assert whole.code == 2, whole
    table = rows(whole.out)
    assert table["CLUSTER"][:7] == [
        "CLUSTER",
        "STATE",
        "STATUS",
        "APPLICATION",
        "MIDDLEWARE",
        "KUBERNETES",
        "INFRASTRUCTURE",
    ]
    for name, (_, _, status) in FLEET.items():
        state = "Pending" if name == "pending" else "Online"
        assert table[name][:2] == [name, state], whole.out
        assert " ".join(table[name][2:]).startswith(status), whole.out
    assert table["error"][3:7] == ["-", "ERROR", "1/1", "-"]  # by layer: status, count/total
    assert table["pending"][-2:] == ["never", "-"]  # LAST SEEN, KUBECTL (no agent: no proxy)
    assert table["idle"][3] == "pending" and table["idle"][4] == "1/1"  # application layer

    for name, run in zip(FLEET, runs[1:], strict=True):
        local, code, status = FLEET[name]
        assert run.code == code, (name, run)
        assert list(rows(run.out)) == ["CLUSTER", name]
        checks = run.out.split("\n\n", 1)[1].splitlines()
        assert checks[0].split() == ["PROBE", "CHECK", "LAYER", "STATUS", "MESSAGE"]
        if name == "pending":
            assert checks[1:] == []
            continue
        (line,) = checks[1:]
        probe_name = "cert" if name == "warn" else local["metadata"]["name"]  # type: ignore[index]
        assert line.split()[:4] == [f"default/{probe_name}", "check", line.split()[2], status]
    assert "/nonexistent/kp-tool" in runs[1 + list(FLEET).index("unknown")].out

    async with central.http.get(f"{central.url}/status?cluster=ok&cluster=nope") as resp:
        assert resp.status == 404
        assert await resp.json() == {"error": "unknown cluster 'nope'"}
    both = await get_json(central.http, f"{central.url}/status?status=ERROR&status=warn")
    assert {c["name"] for c in both["clusters"] if c["probes"]} == {"error", "warn"}


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        pytest.param(("count", "--cluster", "ok"), 0, ["ok: default/count (kubernetes): PASS"]),
        pytest.param(("default/db", "--cluster", "ok"), 2, ["ok: default/db (middleware): ERROR"]),
        pytest.param(("nope", "--cluster", "ok"), 3, ["404", "nope"]),
        pytest.param(("count", "--cluster", "pluto"), 3, ["404", "pluto"]),
    ],
    ids=["pass", "error", "unknown-probe", "unknown-cluster"],
)
async def test_run_prints_the_result_and_exits_by_status(
    tmp_path: Path,
    stack: tuple[AsyncExitStack, aiohttp.ClientSession],
    args: tuple[str, ...],
    code: int,
    words: list[str],
) -> None:
    counter = tmp_path / "runs"
    count = exec_probe(
        "count", "sh", "-c", f'echo run >> {counter}; echo "run $(wc -l < {counter})"',
        layer="kubernetes",
    )  # fmt: skip
    fail = exec_probe("db", "sh", "-c", "echo refused >&2; exit 4", layer="middleware")
    fleet = await start_fleet(tmp_path, *stack, {"ok": [count, fail]})
    token = str(tmp_path / "operator-token")
    run = await kubeprober("run", *args, "--aggregator", fleet.url, "--operator-token-file", token)
    assert run.code == code, run
    said = run.out + run.err
    assert all(w in said for w in words), said
    if code == 0:
        table = run.out.splitlines()[1:]
        assert table[0].split() == ["CHECK", "STATUS", "DURATION", "MESSAGE"]
        assert re.fullmatch(r"check\s+PASS\s+\d+ms\s+run 2", table[1]), table
        assert counter.read_text() == "run\nrun\n"  # it really ran again


async def test_read_token_file(
    tmp_path: Path, stack: tuple[AsyncExitStack, aiohttp.ClientSession]
) -> None:
    fleet = await start_fleet(
        tmp_path, *stack, {"ok": [exec_probe("disk", "true")]}, read_token=True
    )
    token = str(tmp_path / "read-token")
    without, with_token, run_with = await asyncio.gather(
        kubeprober("status", "--aggregator", fleet.url),
        kubeprober("status", "--aggregator", fleet.url, "--read-token-file", token),
        kubeprober("run", "disk", "--cluster", "ok", "--aggregator", fleet.url,
                   "--operator-token-file", token),
    )  # fmt: skip
    assert without.code == 3 and "401" in without.err, without
    assert READ_TOKEN not in without.err
    assert with_token.code == 0, with_token
    assert rows(with_token.out)["ok"][:3] == ["ok", "Online", "PASS"]
    # Reading is not acting: the read token cannot run probes.
    assert run_with.code == 3 and "403 the read token cannot run probes" in run_with.err, run_with


async def test_token_makes_an_operator_token_that_runs_probes(
    tmp_path: Path, stack: tuple[AsyncExitStack, aiohttp.ClientSession]
) -> None:
    operators = tmp_path / "operators"
    alice, again, printed, bad = await asyncio.gather(
        kubeprober("token", "alice", "--operator-tokens", str(operators)),
        kubeprober("token", "bob", "--operator-tokens", str(tmp_path / "other")),
        kubeprober("token", "carol"),
        kubeprober("token", "not a name"),
    )
    assert alice.code == 0 and "added alice" in alice.err, alice
    token = alice.out.strip()
    (tmp_path / "alice.token").write_text(alice.out)
    assert token not in operators.read_text() and operators.read_text().startswith("alice: ")
    assert again.code == 0 and again.out.strip() != token
    assert printed.code == 0 and printed.err.splitlines()[-1].startswith("carol: "), printed
    assert bad.code == 3 and "operator name 'not a name'" in bad.err, bad
    twice = await kubeprober("token", "alice", "--operator-tokens", str(operators))
    assert twice.code == 3 and "alice already has a token" in twice.err, twice

    fleet = await start_fleet(
        tmp_path, *stack, {"ok": [exec_probe("disk", "true")]}, operators=operators
    )
    run = await kubeprober(
        "run", "disk", "--cluster", "ok", "--aggregator", fleet.url,
        "--operator-token-file", str(tmp_path / "alice.token"),
    )  # fmt: skip
    assert run.code == 0 and "ok: default/disk" in run.out, run


async def test_status_of_an_unreachable_aggregator_is_unknown() -> None:
    run = await kubeprober("status", "--aggregator", f"http://127.0.0.1:{free_port()}")
    assert run.code == 3
    assert "cannot reach" in run.err
    assert "Traceback" not in run.err


async def test_cluster_add_defines_a_cluster_the_aggregator_accepts(
    tmp_path: Path, stack: tuple[AsyncExitStack, aiohttp.ClientSession]
) -> None:
    fleet = await start_fleet(tmp_path, *stack, {"ok": [exec_probe("disk", "true")]})
    fresh = tmp_path / "new" / "clusters.yaml"
    fresh.parent.mkdir()
    added, created, bad = await asyncio.gather(
        kubeprober("cluster", "add", "neptune", "--clusters", str(fleet.file.path)),
        kubeprober("cluster", "add", "pluto", "--clusters", str(fresh), "--display-name", "P 9"),
        kubeprober("cluster", "add", "Not_A_Label", "--clusters", str(tmp_path / "bad.yaml")),
    )
    assert added.code == 0, added
    (token,) = set(re.findall(r"kp1\.neptune\.[A-Za-z0-9_-]+", added.out))
    assert "kubeprober agent" in added.out
    assert "--token-file" in added.out

    # The files hold the token's hash, never the token: the printed text says so.
    assert created.code == 0, created
    (pluto_token,) = set(re.findall(r"kp1\.pluto\.[A-Za-z0-9_-]+", created.out))
    assert "tokenHash: sha256:" in fresh.read_text()
    assert pluto_token not in fresh.read_text() and token not in fleet.file.path.read_text()
    assert "holds only the token's hash" in created.out
    defined = load_file(fresh)
    assert defined.errors == [] and list(defined.clusters) == ["pluto"]
    assert defined.clusters["pluto"].display_name == "P 9"
    assert defined.tokens.verify(pluto_token) == "pluto"

    assert bad.code != 0 and "Traceback" not in bad.err, bad
    assert "Not_A_Label" in bad.err
    assert not (tmp_path / "bad.yaml").exists()

    # The running aggregator picks the new cluster up and lets its agent in.
    fleet.file.tokens["neptune"] = token
    fleet.file.labels["neptune"] = {}
    await fleet.add_agent("neptune", [exec_probe("disk", "true")])

    async def status() -> dict[str, Any]:
        return await get_json(fleet.http, f"{fleet.url}/status")

    await eventually(
        status,
        lambda d: any(c["name"] == "neptune" and has_results(c, "disk") for c in d["clusters"]),
        within=10,
        what="neptune online",
    )
    assert load_file(fleet.file.path).errors == []

    before = fleet.file.path.read_text()
    again = await kubeprober("cluster", "add", "neptune", "--clusters", str(fleet.file.path))
    assert again.code != 0 and "already" in again.err, again
    assert fleet.file.path.read_text() == before


async def test_aggregator_process_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    file = FleetFile(tmp_path / "clusters.yaml").add("moon")
    file.write()
    proc = await asyncio.create_subprocess_exec(
        KUBEPROBER, "aggregator", "--clusters", str(file.path), "--listen", "127.0.0.1:0",
        "--grafana-url", "https://grafana.example/g",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        url = re.search(r"serving (http://127\.0\.0\.1:\d+)/", line)
        assert url, line
        assert f"agents dial ws://{url[1].removeprefix('http://')}/api/v1/tunnel" in line
        async with aiohttp.ClientSession() as http:
            doc = await get_json(http, f"{url[1]}/status")
            async with http.get(f"{url[1]}/readyz") as resp:
                assert resp.status == 200
            async with http.get(f"{url[1]}/") as resp:  # the board links to that Grafana
                assert "https://grafana.example/g/d/kubeprober-check?" in await resp.text()
        assert [(c["name"], c["state"]) for c in doc["clusters"]] == [("moon", "Pending")]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        pytest.param(
            ("aggregator", "--help"),
            0,
            ["--clusters", "--listen", "--tls-cert", "--tls-key", "--read-token-file",
             "--grafana-url", "--runbook-url"],
            id="help",
        ),
        pytest.param(
            ("aggregator", "--clusters", "/nonexistent/clusters.yaml", "--listen", "127.0.0.1:0"),
            3,
            ["/nonexistent/clusters.yaml"],
            id="missing-file",
        ),
        pytest.param(
            ("aggregator", "--clusters", "/etc/hostname", "--tls-cert", "/etc/hostname"),
            3,
            ["--tls-cert and --tls-key"],
            id="cert-without-key",
        ),
        pytest.param(("aggregator", "--listen", "nowhere"), 3, ["--listen", "HOST:PORT"],
                     id="bad-argument"),
        pytest.param(("aggregator", "--grafana-url", "grafana.example"), 3,
                     ["--grafana-url", "'grafana.example'", "https://"], id="grafana-url"),
        pytest.param(("aggregator", "--runbook-url", "https://x.example/r.md#top"), 3,
                     ["--runbook-url", "no query or fragment"], id="runbook-fragment"),
        pytest.param(("status", "--interval", "0"), 3, ["--interval"], id="bad-interval"),
        pytest.param(("status", "--aggregator-ca", "/nonexistent/ca.pem"), 3,
                     ["--aggregator-ca: /nonexistent/ca.pem: no such file"], id="ca-missing"),
        pytest.param(("status", "--aggregator-ca", "/etc/hostname"), 3,
                     ["--aggregator-ca: /etc/hostname: no PEM certificate"], id="ca-not-pem"),
        pytest.param(("run", "p", "--cluster", "c", "--operator-token-file", "/nonexistent/t"), 3,
                     ["--operator-token-file: /nonexistent/t: no such file"], id="token-missing"),
        pytest.param(("aggregator", "--clusters", "/dev/null", "--listen", "127.0.0.1:0",
                      "--tls-cert", "/etc/hostname", "--tls-key", "/etc/hostname"), 3,
                     ["TLS certificate /etc/hostname and key /etc/hostname: not a PEM"],
                     id="tls-not-pem"),
        pytest.param(("aggregator", "--clusters", "/dev/null", "--tls-cert", "/nonexistent/c",
                      "--tls-key", "/nonexistent/k"), 3,
                     ["--tls-cert: /nonexistent/c: no such file"], id="tls-missing"),
        pytest.param(("agent", "--probes", "/dev/null", "--state-dir", "/proc/kp-state",
                      "--listen", "127.0.0.1:0"), 3,
                     ["--state-dir /proc/kp-state: no such file"], id="agent-state-dir"),
        pytest.param(("agent", "--probes", "/dev/null", "--aggregator", "wss://127.0.0.1:9",
                      "--token-file", "/etc/hostname", "--aggregator-ca", "/etc/hostname"), 3,
                     ["--aggregator-ca: /etc/hostname: no PEM certificate"], id="agent-ca"),
        pytest.param(("status", "--aggregator", "wss://127.0.0.1:9"), 3,
                     ["'wss://127.0.0.1:9'", "https://"], id="wss-url"),
        pytest.param(("status", "--aggregator", "127.0.0.1:9"), 3,
                     ["'127.0.0.1:9'", "http://"], id="no-scheme"),
        pytest.param(("cluster", "add", "x", "--clusters", "/nonexistent/dir/c.yaml"), 3,
                     ["--clusters /nonexistent/dir/c.yaml: directory /nonexistent/dir does not"],
                     id="add-missing-directory"),

        pytest.param(("status", "--help"), 0, ["--aggregator", "--cluster", "--read-token-file"],
                     id="status-help"),
        pytest.param(("run", "--help"), 0, ["--cluster", "PROBE"], id="run-help"),
        pytest.param(("cluster", "add", "--help"), 0, ["--clusters", "name"], id="add-help"),
    ],
)  # fmt: skip
async def test_simple_invocations(args: tuple[str, ...], code: int, words: list[str]) -> None:
    run = await kubeprober(*args, env={"KUBEPROBER_AGGREGATOR": "", "KUBEPROBER_AGGREGATOR_CA": ""})
    assert run.code == code, run
    said = run.out + run.err
    assert all(w in said for w in words), said
    assert "Traceback" not in said
    if code:  # one line says what is wrong (after the usage or INFO logs, if any)
        usage = ("usage:", " ")
        said_lines = [ln for ln in run.err.splitlines() if not ln.startswith(usage)]
        assert len([ln for ln in said_lines if " INFO " not in ln]) == 1, run.err


async def test_cluster_add_leaves_a_file_of_another_kind_alone(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("root:x:0:0:root:/root:/bin/bash\n")
    other.chmod(0o644)
    run = await kubeprober("cluster", "add", "x", "--clusters", str(other))
    assert run.code == 3, run
    assert f"--clusters {other}: fix it first" in run.err and "Traceback" not in run.err
    assert other.read_text() == "root:x:0:0:root:/root:/bin/bash\n"
    assert other.stat().st_mode & 0o777 == 0o644


async def test_tls_failures_are_explained_in_one_line(tls_port: tuple[int, Path]) -> None:
    port, _ = tls_port

    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(plain, "127.0.0.1", 0)
    plain_port = server.sockets[0].getsockname()[1]
    env = {"KUBEPROBER_AGGREGATOR": "", "KUBEPROBER_AGGREGATOR_CA": "", "SSL_CERT_FILE": ""}
    try:
        untrusted, plain_http, tls_to_plain = await asyncio.gather(
            kubeprober("status", "--aggregator", f"https://127.0.0.1:{port}", env=env),
            kubeprober("status", "--aggregator", f"http://127.0.0.1:{port}", env=env),
            kubeprober("status", "--aggregator", f"https://127.0.0.1:{plain_port}", env=env),
        )
    finally:
        server.close()
        await server.wait_closed()
    url = f"https://127.0.0.1:{port}"
    assert (untrusted.code, untrusted.err) == (
        3,
        f"kubeprober: {url}: TLS certificate not trusted (unable to get local issuer "
        "certificate); give the CA that signed it with --aggregator-ca PEM or "
        "$KUBEPROBER_AGGREGATOR_CA\n",
    )
    assert plain_http.code == 3 and plain_http.err.endswith("use https://\n"), plain_http
    assert tls_to_plain.code == 3, tls_to_plain
    assert tls_to_plain.err.startswith(f"kubeprober: https://127.0.0.1:{plain_port}: TLS handshake")
    assert tls_to_plain.err.endswith("if the aggregator serves plain HTTP, use http://\n")
    for run in (untrusted, plain_http, tls_to_plain):
        assert len(run.err.splitlines()) == 1 and "Traceback" not in run.err


async def test_a_kubeconfig_that_is_not_yaml_is_one_line(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("clusters: [\n")
    runs = await asyncio.gather(
        kubeprober("cluster", "add", "moon", "--kubeconfig", str(kubeconfig)),
        kubeprober("agent", "--kubeconfig", str(kubeconfig), "--listen", "127.0.0.1:0"),
        kubeprober("aggregator", "--kubeconfig", str(kubeconfig), "--listen", "127.0.0.1:0"),
    )
    for run in runs:
        assert run.code == 3, run
        (line,) = [ln for ln in run.err.splitlines() if " INFO " not in ln]
        assert f": kubeconfig {kubeconfig}: while parsing a flow node" in line, run.err


async def test_targets_are_grouped_by_status_and_labelled_in_federated_metrics(
    tmp_path: Path, stack: tuple[AsyncExitStack, aiohttp.ClientSession]
) -> None:
    """A check with three targets, one down: ``status`` says "2/3 PASS" on the check's row and
    lists the failing target; the aggregator's /metrics carries ``target`` and passes promtool."""
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    hosts = probe("hosts", "tcp", {"host": "127.0.0.1", "port": "${target.port}"}, check="api")
    hosts["spec"]["checks"][0]["targets"] = [
        {"name": "a", "port": port},
        {"name": "b", "port": port},
        {"name": "down", "port": free_port()},
    ]
    try:
        fleet = await start_fleet(tmp_path, *stack, {"moon": [hosts]})
        run = await kubeprober("status", "--aggregator", fleet.url, "--cluster", "moon")
        assert run.code == 2, run
        checks = [line.split(None, 4) for line in run.out.split("\n\n", 1)[1].splitlines()]
        assert checks[1][:4] == ["default/hosts", "api", "application", "ERROR"]
        assert checks[1][4] == "2/3 PASS"
        assert checks[2][:4] == ["default/hosts", "api/down", "application", "ERROR"]
        assert "refused" in checks[2][4]
        assert len(checks) == 3

        async with fleet.http.get(f"{fleet.url}/metrics") as resp:
            text = await resp.text()
        success = re.findall(r"^kubeprober_check_success\{([^}]*)\} (\S+)$", text, re.M)
        labelled = {
            dict(kv.split("=", 1) for kv in labels.split(","))["target"]: value
            for labels, value in success
        }
        assert labelled == {'"a"': "1.0", '"b"': "1.0", '"down"': "0.0"}
        promtool = await asyncio.create_subprocess_exec(
            binary("promtool"), "check", "metrics", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        said, _ = await promtool.communicate(text.encode())
        assert promtool.returncode == 0 and said == b"", said
    finally:
        listener.close()
        await listener.wait_closed()
