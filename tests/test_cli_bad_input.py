"""Every verb given bad flag values or environment: exit 3, one line naming what and which value.

The commands run in-process (``kubeprober.cli.main``), in a directory holding a broken YAML
file, an empty directory and a well-formed cluster token; a traceback would fail the test
as an exception.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeprober.aggregator.tokens import new_token
from kubeprober.args import USAGE_EXIT
from kubeprober.cli import main

LISTEN = ["--listen", "127.0.0.1:0"]
AGENT = ["agent", "--probes", "dir", *LISTEN]
TUNNEL = ["--token-file", "token"]
HUB = "http://127.0.0.1:1"  # nothing listens on port 1: every call fails to connect
REPORT_ENV = {
    "KUBEPROBER_REPORT_URL": "http://127.0.0.1:1/report",
    "KUBEPROBER_RUN_TOKEN": "t",
    "KUBEPROBER_DEADLINE": "2030-01-01T00:00:00Z",
}
REPORT = ["report", "--check", "c", "--status", "PASS"]

# (argv, environment, words the last line of stderr must hold)
CASES: dict[str, tuple[list[str], dict[str, str], list[str]]] = {
    "agent-probes-missing": (
        ["agent", "--probes", "nowhere.yaml", *LISTEN],
        {},
        ["--probes", "nowhere.yaml", "no such file"],
    ),
    "agent-listen": (
        ["agent", "--probes", "dir", "--listen", "nonsense"],
        {},
        ["--listen", "'nonsense'"],
    ),
    "agent-port": (["agent", "--probes", "dir", "--listen", ":99999"], {}, ["--listen", ":99999"]),
    "agent-size": (
        [*AGENT, "--max-probe-file-size", "12XB"],
        {},
        ["--max-probe-file-size", "12XB"],
    ),
    "agent-concurrency": ([*AGENT, "--max-concurrency", "zero"], {}, ["--max-concurrency", "zero"]),
    "agent-connections": ([*AGENT, "--max-connections", "0"], {}, ["--max-connections", "'0'"]),
    "agent-url": ([*AGENT, *TUNNEL, "--aggregator", "notaurl"], {}, ["--aggregator", "notaurl"]),
    "agent-plaintext": (
        [*AGENT, *TUNNEL, "--aggregator", "ws://10.1.1.1"],
        {},
        ["--aggregator", "10.1.1.1", "--insecure"],
    ),
    "agent-token-missing": (
        [*AGENT, "--aggregator", "wss://x", "--token-file", "nowhere"],
        {},
        ["--token-file", "nowhere", "no such file"],
    ),
    "agent-token-dir": (
        [*AGENT, "--aggregator", "wss://x", "--token-file", "dir"],
        {},
        ["--token-file", "dir", "is a directory"],
    ),
    "agent-token-bad": (
        [*AGENT, "--aggregator", "wss://x", "--token-file", "bad.yaml"],
        {},
        ["--token-file", "bad.yaml"],
    ),
    "agent-ca": (
        [*AGENT, *TUNNEL, "--aggregator", "wss://x", "--aggregator-ca", "bad.yaml"],
        {},
        ["--aggregator-ca", "bad.yaml", "no PEM"],
    ),
    "agent-state-dir": ([*AGENT, "--state-dir", "bad.yaml"], {}, ["--state-dir", "bad.yaml"]),
    "agent-kubeconfig": (
        ["agent", "--kubeconfig", "nowhere", *LISTEN],
        {},
        ["kubeconfig", "nowhere"],
    ),
    "agent-KUBECONFIG": (
        ["agent", *LISTEN],
        {"KUBECONFIG": "bad.yaml"},
        ["kubeconfig", "bad.yaml"],
    ),
    "agent-report-url": ([*AGENT, "--report-url", "notaurl"], {}, ["--report-url", "notaurl"]),
    "check-missing": (["check", "nowhere.yaml"], {}, ["nowhere.yaml", "no such file"]),
    "check-yaml": (["check", "bad.yaml"], {}, ["no valid Probe in bad.yaml"]),
    "check-kubeconfig": (
        ["check", "dir", "--kubeconfig", "nowhere"],
        {},
        ["kubeconfig", "nowhere"],
    ),
    "aggregator-clusters-missing": (
        ["aggregator", "--clusters", "nowhere", *LISTEN],
        {},
        ["--clusters", "nowhere", "no such file"],
    ),
    "aggregator-clusters-dir": (
        ["aggregator", "--clusters", "dir", *LISTEN],
        {},
        ["--clusters", "dir", "is a directory"],
    ),
    "aggregator-clusters-yaml": (
        ["aggregator", "--clusters", "bad.yaml", *LISTEN],
        {},
        ["bad.yaml", "invalid YAML at line 2"],
    ),
    "aggregator-read-token": (
        ["aggregator", "--clusters", "bad.yaml", "--read-token-file", "nowhere"],
        {},
        ["--read-token-file", "nowhere"],
    ),
    "aggregator-tls": (
        ["aggregator", "--clusters", "bad.yaml", "--tls-cert", "bad.yaml"],
        {},
        ["--tls-cert", "--tls-key"],
    ),
    "aggregator-answer": (
        ["aggregator", "--clusters", "bad.yaml", "--max-answer-mib", "lots"],
        {},
        ["--max-answer-mib", "lots"],
    ),
    "aggregator-interval": (
        ["aggregator", "--clusters", "bad.yaml", "--full-pull-interval", "1h"],
        {},
        ["--full-pull-interval", "1h"],
    ),
    "aggregator-link": (
        ["aggregator", "--clusters", "bad.yaml", "--grafana-url", "javascript:x"],
        {},
        ["--grafana-url", "javascript:x"],
    ),
    "token-dir": (["token", "alice", "--operator-tokens", "dir"], {}, ["--operator-tokens", "dir"]),
    "token-missing-dir": (
        ["token", "alice", "--operator-tokens", "no/such/f"],
        {},
        ["--operator-tokens", "no/such/f", "no such file"],
    ),
    "token-name": (["token", "bad name!"], {}, ["operator name", "bad name!"]),
    "cluster-name": (["cluster", "add", "Bad_Name", "--clusters", "c.yaml"], {}, ["Bad_Name"]),
    "cluster-file-yaml": (["cluster", "add", "moon", "--clusters", "bad.yaml"], {}, ["bad.yaml"]),
    "cluster-url": (
        ["cluster", "add", "moon", "--clusters", "c.yaml", "--aggregator-url", "notaurl"],
        {},
        ["--aggregator-url", "notaurl"],
    ),
    "status-url": (["status", "--aggregator", "ftp://x"], {}, ["aggregator URL", "ftp://x"]),
    "status-KUBEPROBER_AGGREGATOR": (
        ["status"],
        {"KUBEPROBER_AGGREGATOR": "notaurl"},
        ["$KUBEPROBER_AGGREGATOR", "notaurl"],
    ),
    "status-KUBEPROBER_AGGREGATOR_CA": (
        ["status", "--aggregator", "https://127.0.0.1:1"],
        {"KUBEPROBER_AGGREGATOR_CA": "bad.yaml"},
        ["--aggregator-ca", "bad.yaml"],
    ),
    "status-token": (
        ["status", "--aggregator", HUB, "--read-token-file", "nowhere"],
        {},
        ["--read-token-file", "nowhere"],
    ),
    "status-interval": (["status", "--interval", "-1"], {}, ["--interval", "-1"]),
    "run-url": (["run", "x", "--cluster", "moon", "--aggregator", "notaurl"], {}, ["notaurl"]),
    "run-token": (
        ["run", "x", "--cluster", "moon", "--aggregator", HUB, "--operator-token-file", "dir"],
        {},
        ["--operator-token-file", "dir"],
    ),
    "kubeconfig-output": (
        [
            "kubeconfig",
            "--cluster",
            "moon",
            "--aggregator",
            "https://127.0.0.1:1",
            "--operator-token-file",
            "token",
            "-o",
            "no/such/out",
        ],
        {},
        ["--output", "no/such/out"],
    ),
    "report-url": (
        REPORT,
        {**REPORT_ENV, "KUBEPROBER_REPORT_URL": "notaurl"},
        ["KUBEPROBER_REPORT_URL", "notaurl"],
    ),
    "report-deadline": (
        REPORT,
        {**REPORT_ENV, "KUBEPROBER_DEADLINE": "tomorrow"},
        ["KUBEPROBER_DEADLINE", "tomorrow"],
    ),
    "report-token": (
        REPORT,
        {k: v for k, v in REPORT_ENV.items() if k != "KUBEPROBER_RUN_TOKEN"},
        ["KUBEPROBER_RUN_TOKEN"],
    ),
    "report-status": (
        ["report", "--check", "c", "--status", "GREEN"],
        REPORT_ENV,
        ["--status", "GREEN"],
    ),
    "demo-listen": (["demo", "--listen", "nonsense"], {}, ["--listen", "nonsense"]),
    "demo-state-dir": (["demo", "--state-dir", "bad.yaml/x"], {}, ["--state-dir", "bad.yaml/x"]),
}


@pytest.mark.parametrize(("argv", "env", "words"), CASES.values(), ids=CASES.keys())
def test_bad_input_exits_3_with_one_line_naming_it(
    argv: list[str],
    env: dict[str, str],
    words: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "bad.yaml").write_text("not: [valid\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "token").write_text(f"{new_token('moon')}\n")
    monkeypatch.chdir(tmp_path)
    for name in ("KUBECONFIG", "KUBEPROBER_AGGREGATOR", "KUBEPROBER_AGGREGATOR_CA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert code == USAGE_EXIT, err
    last = err.strip().splitlines()[-1]
    for word in words:
        assert word in last, f"{word!r} not in {last!r}"
    # Argparse's usage lines may come before it, and check's line per problem file.
    others = [
        line
        for line in err.strip().splitlines()[:-1]
        if not line.startswith((" ", "usage:", "error: "))
    ]
    assert not others, err
