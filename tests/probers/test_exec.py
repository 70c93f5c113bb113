"""The ``exec`` prober running real commands: exit codes, output, timeouts and process cleanup."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from kubeprober.probers import exec as exec_prober
from kubeprober.probers.options import SpecError, parse_options
from kubeprober.probers.sdk import CheckFailed, Context
from kubeprober.probers.status import Status

PATH = "spec.checks[0].with"


def _ctx(timeout: float = 5.0) -> Context:
    return Context(namespace="default", probe="scripts", check="exec", timeout=timeout)


def _spec(options: dict[str, Any], tmp: Path) -> exec_prober.Spec:
    """Parse ``options`` with ``{tmp}`` in strings replaced by the test's directory."""

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{tmp}", str(tmp))
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    return parse_options(exec_prober.Spec, fill(options), PATH)


def _live_in_group(pgid: int) -> list[int]:
    """Return the pids of processes in group ``pgid`` that are not yet dead (zombies are)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it exited while we looked
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            found.append(int(entry.name))
    return found


async def _assert_group_gone(pgid: int) -> None:
    """Fail unless every process of group ``pgid`` is dead within a second."""
    left = _live_in_group(pgid)
    for _ in range(50):  # SIGKILL is delivered at once, but dying takes a moment
        if not left:
            break
        await asyncio.sleep(0.02)
        left = _live_in_group(pgid)
    assert not left, f"processes {left} of the command's group are still running"


def _read_pgid(path: Path) -> int | None:
    """Return the pid (so the group id) the command wrote to ``path``, if it has yet."""
    text = path.read_text() if path.exists() else ""
    return int(text) if text.endswith("\n") else None


# (case id, options, expected status, substrings of the message)
CASES: list[tuple[str, dict[str, Any], Status, tuple[str, ...]]] = [
    ("exit-0", {"command": ["true"]}, Status.PASS, ("true exited with 0",)),
    (
        "exit-wrong",
        {"command": ["sh", "-c", "echo starting; echo 'disk full' >&2; exit 3"]},
        Status.ERROR,
        ("sh -c 'echo starting;", 'exited with 3, expected exit code 0; stderr: "disk full"'),
    ),
    (
        "exit-wrong-stdout-only",
        {"command": ["sh", "-c", "echo not ready; exit 1"]},
        Status.ERROR,
        ('; stdout: "not ready"',),
    ),
    ("exit-wrong-silent", {"command": ["false"]}, Status.ERROR, ("exited with 1", "; no output")),
    (
        "exit-expected-3",
        {"command": ["sh", "-c", "exit 3"], "expectedExitCode": 3},
        Status.PASS,
        (),
    ),
    (
        "exit-0-but-3-expected",
        {"command": ["true"], "expectedExitCode": 3},
        Status.ERROR,
        ("exited with 0, expected exit code 3",),
    ),
    (
        "killed-by-signal",
        {"command": ["sh", "-c", "kill -TERM $$"]},
        Status.ERROR,
        ("was killed by SIGTERM",),
    ),
    (
        "stdout-match",
        {
            "command": ["sh", "-c", "echo 'accepting connections: 42'"],
            "stdoutRegex": r"accepting .*\d+",
        },
        Status.PASS,
        (),
    ),
    (
        "stdout-mismatch",
        {"command": ["echo", "no response"], "stdoutRegex": "^accepting"},
        Status.ERROR,
        ('echo \'no response\' stdout does not match "^accepting"; stdout: "no response"',),
    ),
    (
        "stdout-ignores-stderr",
        {"command": ["sh", "-c", "echo ready >&2"], "stdoutRegex": "ready"},
        Status.ERROR,
        ('stdout does not match "ready"; stdout: ""',),
    ),
    (
        "output-sees-stderr",
        {"command": ["sh", "-c", "echo out; echo ready >&2"], "outputRegex": "ready"},
        Status.PASS,
        (),
    ),
    (
        "output-mismatch",
        {"command": ["sh", "-c", "echo out; echo err >&2"], "outputRegex": "ready"},
        Status.ERROR,
        ('output does not match "ready"',),
    ),
    (
        "exit-checked-before-output",
        {"command": ["sh", "-c", "echo ready; exit 2"], "stdoutRegex": "ready"},
        Status.ERROR,
        ("exited with 2",),
    ),
    (
        "env",
        {"command": ["sh", "-c", 'test "$KP_MODE" = probe'], "env": {"KP_MODE": "probe"}},
        Status.PASS,
        (),
    ),
    (
        "env-absent",
        {"command": ["sh", "-c", 'test -n "$KP_MODE"']},
        Status.ERROR,
        ("exited with 1",),
    ),
    (
        "working-dir",
        {"command": ["pwd"], "workingDir": "{tmp}", "stdoutRegex": "^{tmp}$"},
        Status.PASS,
        (),
    ),
    (
        "long-stderr-truncated",
        {
            "command": [
                "sh",
                "-c",
                "i=0; while [ $i -lt 300 ]; do printf 'line%d ' $i >&2; i=$((i+1)); done; exit 1",
            ]
        },
        Status.ERROR,
        ('stderr: "...', 'line299"'),
    ),
]


@pytest.mark.parametrize(
    ("options", "status", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_probe(
    tmp_path: Path, options: dict[str, Any], status: Status, needles: tuple[str, ...]
) -> None:
    ctx = _ctx()
    outcome = await exec_prober.probe(_spec(options, tmp_path), ctx)

    assert outcome.status == status, outcome.message
    for needle in needles:
        assert needle in outcome.message
    assert len(outcome.message) < 400
    assert "run" in ctx.phases


CANNOT_RUN: list[tuple[str, dict[str, Any], str]] = [
    (
        "missing-command",
        {"command": ["kubeprober-no-such-command", "--version"]},
        "cannot run kubeprober-no-such-command --version: No such file or directory",
    ),
    (
        "missing-working-dir",
        {"command": ["true"], "workingDir": "{tmp}/gone"},
        "cannot run true: No such file or directory: {tmp}/gone",
    ),
    ("not-executable", {"command": ["{tmp}"]}, "cannot run {tmp}: Permission denied"),
]


@pytest.mark.parametrize(
    ("options", "message"), [c[1:] for c in CANNOT_RUN], ids=[c[0] for c in CANNOT_RUN]
)
async def test_command_that_cannot_start_is_unknown(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(CheckFailed) as failed:
        await exec_prober.probe(_spec(options, tmp_path), _ctx())

    assert failed.value.status == Status.UNKNOWN
    assert str(failed.value).startswith(message.replace("{tmp}", str(tmp_path)))


async def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pgid"
    script = f"echo $$ > {pidfile}; echo started; sleep 30 & sleep 30 & wait"
    spec = exec_prober.Spec(command=("sh", "-c", script))

    start = time.monotonic()
    outcome = await exec_prober.probe(spec, _ctx(timeout=0.5))

    assert time.monotonic() - start < 1.5
    assert outcome.status == Status.ERROR
    assert outcome.message.startswith("timed out after 0.5s running sh -c")
    assert outcome.message.endswith('; stdout: "started"')
    await _assert_group_gone(int(pidfile.read_text()))


async def test_cancellation_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pgid"
    script = f"sleep 30 & sleep 30 & echo $$ > {pidfile}; wait"
    spec = exec_prober.Spec(command=("sh", "-c", script))
    task = asyncio.create_task(exec_prober.probe(spec, _ctx(timeout=30)))
    for _ in range(200):
        if (pgid := _read_pgid(pidfile)) is not None:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the command never wrote its pid")
    assert len(_live_in_group(pgid)) == 3, "sh and both sleeps should be running"

    task.cancel()  # what the runner does when its hard deadline passes
    with pytest.raises(asyncio.CancelledError):
        await task

    await _assert_group_gone(pgid)


async def test_background_children_do_not_outlive_the_command(tmp_path: Path) -> None:
    pidfile = tmp_path / "pgid"
    spec = exec_prober.Spec(command=("sh", "-c", f"sleep 30 & echo $$ > {pidfile}; echo done"))

    start = time.monotonic()
    outcome = await exec_prober.probe(spec, _ctx(timeout=5))

    assert outcome.status == Status.PASS, outcome.message
    assert time.monotonic() - start < 1.0, "a child holding the pipes must not delay the result"
    await _assert_group_gone(int(pidfile.read_text()))


async def test_env_adds_to_the_agents_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KP_INHERITED", "kept")
    spec = exec_prober.Spec(
        command=("sh", "-c", 'test "$KP_INHERITED/$KP_ADDED" = kept/added'),
        env={"KP_ADDED": "added"},
    )
    outcome = await exec_prober.probe(spec, _ctx())
    assert outcome.status == Status.PASS, outcome.message


GOOD_SPECS: list[tuple[dict[str, Any], exec_prober.Spec]] = [
    ({"command": ["pg_isready"]}, exec_prober.Spec(command=("pg_isready",))),
    (
        {
            "command": ["redis-cli", "ping"],
            "env": {"REDISCLI_AUTH": "x"},
            "workingDir": "/tmp",
            "expectedExitCode": 2,
            "stdoutRegex": "^PONG$",
            "outputRegex": "PONG",
        },
        exec_prober.Spec(
            command=("redis-cli", "ping"),
            env={"REDISCLI_AUTH": "x"},
            working_dir="/tmp",
            expected_exit_code=2,
            stdout_regex="^PONG$",
            output_regex="PONG",
        ),
    ),
]


@pytest.mark.parametrize(("data", "want"), GOOD_SPECS)
def test_spec_accepts(data: dict[str, Any], want: exec_prober.Spec) -> None:
    assert parse_options(exec_prober.Spec, data, PATH) == want


BAD_SPECS: list[tuple[dict[str, Any], str]] = [
    ({}, f"{PATH}.command: required"),
    ({"command": "pg_isready -h db"}, f'{PATH}.command: expected a list, got "pg_isready -h db"'),
    ({"command": []}, f"{PATH}.command: expected a non-empty argv list, got []"),
    ({"command": [""]}, f'{PATH}.command: expected a non-empty argv list, got [""]'),
    ({"command": ["sleep", 5]}, f"{PATH}.command[1]: expected a string, got 5"),
    ({"command": ["true"], "env": ["A=1"]}, f'{PATH}.env: expected a map, got ["A=1"]'),
    ({"command": ["true"], "env": {"PORT": 5432}}, f"{PATH}.env.PORT: expected a string, got 5432"),
    (
        {"command": ["true"], "expectedExitCode": 256},
        f"{PATH}.expectedExitCode: expected integer 0-255, got 256",
    ),
    (
        {"command": ["true"], "expectedExitCode": "0"},
        f'{PATH}.expectedExitCode: expected integer 0-255, got "0"',
    ),
    (
        {"command": ["true"], "stdoutRegex": "[a-"},
        f'{PATH}.stdoutRegex: expected a regular expression, got "[a-"',
    ),
    (
        {"command": ["true"], "outputRegex": "(x"},
        f'{PATH}.outputRegex: expected a regular expression, got "(x"',
    ),
    ({"command": ["true"], "shell": True}, f"{PATH}.shell: unknown option"),
]


@pytest.mark.parametrize(
    ("data", "error"), BAD_SPECS, ids=[e.split(": ", 1)[0] for _, e in BAD_SPECS]
)
def test_spec_rejects(data: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_options(exec_prober.Spec, data, PATH)
    assert str(raised.value).startswith(error)


def _pids_with_arg(arg: str) -> list[int]:
    """Return live processes whose argv contains ``arg``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if arg.encode() in argv and state != "Z":
            found.append(int(entry.name))
    return found


async def test_cancellation_while_starting_kills_the_process_group() -> None:
    nap = f"30.{os.getpid()}{int(time.monotonic() * 1000) % 100000}"  # unique to this test
    spec = exec_prober.Spec(command=("sh", "-c", f"sleep {nap} & sleep {nap} & wait"))
    task = asyncio.create_task(exec_prober.probe(spec, _ctx(timeout=30)))
    for _ in range(2):
        await asyncio.sleep(0)  # let the task fork the command, not finish connecting its pipes
    deadline = time.monotonic() + 5
    while len(_pids_with_arg(nap)) < 2 and time.monotonic() < deadline:
        # Block the loop on purpose: the start must not complete meanwhile.
        time.sleep(0.01)  # noqa: ASYNC251
    assert len(_pids_with_arg(nap)) == 2, "both sleeps should be running"

    task.cancel()
    start = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert time.monotonic() - start < 1.0, "cancellation must not wait for the children"
    assert not _pids_with_arg(nap), "cancellation must kill the children"


async def test_pass_message_is_the_commands_last_line() -> None:
    spec = exec_prober.Spec(command=("sh", "-c", "echo first; echo 'disk 22% used'; echo"))
    outcome = await exec_prober.probe(spec, Context(namespace="n", probe="p", check="c", timeout=5))
    assert outcome.message == "disk 22% used"
