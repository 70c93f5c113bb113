"""The ``exec`` prober: run a command and judge its exit code and output.

Anything scriptable becomes a check this way: ``pg_isready``, ``redis-cli ping``, ``etcdctl
endpoint health`` or a site's own script. The command is an argv list run without a shell, in a
session of its own; its whole process group is killed once the command exits, times out or the
check is cancelled by the runner's deadline, so a check never leaves processes behind (only a
process that starts a session of its own escapes, as with any supervisor). Whether pushed
``exec`` probes may run at all is the agent's decision (``--accept-remote-exec``), not this
module's.

``with:`` options:

- ``command`` (required): the argv, e.g. ``["pg_isready", "-h", "db"]``; for shell syntax use
  ``["sh", "-c", "..."]``.
- ``env``: variables added to (or replacing those of) the agent's environment.
- ``workingDir``: directory to run in (default: the agent's).
- ``expectedExitCode`` (default 0): the exit code that means healthy.
- ``stdoutRegex``: a regular expression that must be found in standard output.
- ``outputRegex``: one that must be found in standard output and error together, interleaved
  as they arrived.

A wrong exit code, a regex not found or a timeout is ERROR, quoting the last 200 characters of
the output. A command that cannot be started at all (not found, not executable, missing
``workingDir``) is UNKNOWN: nothing ran, so nothing is known about what the command checks, and
it is the probe or the agent's image that needs fixing, not the cluster. Regexes see at most
the last 1 MiB of each stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
from dataclasses import dataclass

from kubeprober.probers.options import SpecError, option, shown
from kubeprober.probers.sdk import CheckFailed, Context, Outcome
from kubeprober.probers.status import Status

DESCRIPTION = "Run a command (no shell) and check its exit code and output."

# Enough for any health command's output; a runaway command must not fill the agent's memory.
_OUTPUT_LIMIT = 1 << 20
# What an on-call human needs to see of a failing command's output.
_TAIL = 200
# SIGKILL takes effect at once; waiting longer means a process stuck in the kernel.
_REAP_GRACE = 2.0


@dataclass(frozen=True)
class Spec:
    """Options of the ``exec`` prober."""

    command: tuple[str, ...] = option("argv of the command to run, no shell")
    env: dict[str, str] = option("environment variables added to the agent's", default_factory=dict)
    working_dir: str | None = option("directory to run in; default the agent's", default=None)
    expected_exit_code: int = option(
        "exit code that means healthy", default=0, minimum=0, maximum=255
    )
    stdout_regex: str | None = option(
        "regular expression that must be found in standard output", default=None
    )
    output_regex: str | None = option(
        "regular expression that must be found in standard output and error together",
        default=None,
    )

    def __post_init__(self) -> None:
        if not self.command or not self.command[0]:
            raise SpecError("command", f"expected a non-empty argv list, got {shown(self.command)}")
        for key, pattern in (
            ("stdoutRegex", self.stdout_regex),
            ("outputRegex", self.output_regex),
        ):
            if pattern is None:
                continue
            try:
                re.compile(pattern)
            except re.error as exc:
                msg = f"expected a regular expression, got {shown(pattern)} ({exc})"
                raise SpecError(key, msg) from None


class _Collector(asyncio.SubprocessProtocol):
    """Collect a child's output and say when it exited and when its pipes closed."""

    def __init__(self) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.output = bytearray()
        # Events, not futures: cancelling a task that awaits a future cancels the future too.
        self.exited = asyncio.Event()
        self.drained = asyncio.Event()
        self._open_pipes = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        for buffer in (self.stdout if fd == 1 else self.stderr, self.output):
            buffer += data
            del buffer[:-_OUTPUT_LIMIT]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open_pipes.discard(fd)
        if not self._open_pipes:
            self.drained.set()

    def process_exited(self) -> None:
        self.exited.set()


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Run the command within ``ctx.timeout`` and judge how it ended."""
    cmd = _display(spec.command)
    try:
        transport, child = await _start(spec)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise CheckFailed(
            f"cannot run {cmd}: {exc.strerror or exc}{where}", Status.UNKNOWN
        ) from exc
    try:
        async with asyncio.timeout(ctx.timeout):
            with ctx.phase("run"):
                await child.exited.wait()
                # Leftover background processes would hold the pipes open.
                _kill_group(transport)
                await child.drained.wait()
    except TimeoutError:
        return Outcome.error(
            f"timed out after {ctx.timeout:g}s running {cmd}; killed it{_tail(child)}"
        )
    finally:
        await _stop(transport, child)
    return _judge(spec, cmd, transport.get_returncode(), child)


async def _start(spec: Spec) -> tuple[asyncio.SubprocessTransport, _Collector]:
    """Start the command in a session of its own, collecting its output."""
    loop = asyncio.get_running_loop()
    starting = loop.create_task(
        loop.subprocess_exec(
            _Collector,
            *spec.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **spec.env} if spec.env else None,
            cwd=spec.working_dir,
            start_new_session=True,
        )
    )
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        # The command may already run and fork while its pipes are being connected; asyncio
        # would kill only the leader and then wait for the pipes the children hold. Let the
        # start finish (milliseconds) so the whole group can be killed.
        with contextlib.suppress(Exception):
            await _stop(*await starting)
        raise


async def _stop(transport: asyncio.SubprocessTransport, child: _Collector) -> None:
    """Kill the command's whole process group, reap the command and close its pipes."""
    # Kill before any await: a second cancellation must not skip it.
    _kill_group(transport)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_REAP_GRACE):
                await child.exited.wait()  # reaped: close() need not kill (and reap) it itself
    finally:
        transport.close()


def _judge(spec: Spec, cmd: str, code: int | None, child: _Collector) -> Outcome:
    """Compare the exit code and the output with what the spec expects."""
    if code != spec.expected_exit_code:
        ended = f"exited with {code}"
        if code is not None and code < 0:
            try:
                ended = f"was killed by {signal.Signals(-code).name}"
            except ValueError:  # a real-time or otherwise unnamed signal
                ended = f"was killed by signal {-code}"
        return Outcome.error(
            f"{cmd} {ended}, expected exit code {spec.expected_exit_code}{_tail(child)}"
        )
    checks = (
        ("stdout", spec.stdout_regex, child.stdout),
        ("output", spec.output_regex, child.output),
    )
    for stream, pattern, data in checks:
        if pattern is not None and not re.search(pattern, data.decode(errors="replace")):
            return Outcome.error(
                f"{cmd} {stream} does not match {shown(pattern)}; {stream}: {_last(data)}"
            )
    # A script's own last line ("root filesystem 22% used") says more than its argv.
    lines = [ln.strip() for ln in child.stdout.decode(errors="replace").splitlines()]
    said = next((ln for ln in reversed(lines) if ln), "")
    return Outcome.passed(said[:200] if said else f"{cmd} exited with {code}")


def _kill_group(transport: asyncio.SubprocessTransport) -> None:
    """SIGKILL every process left in the command's group; nothing left is fine."""
    pgid = transport.get_pid()  # the leader of a new session leads its process group
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _display(command: tuple[str, ...]) -> str:
    """Render the command as a shell would show it, shortened to fit a message."""
    text = shlex.join(command)
    return text if len(text) <= 80 else text[:77] + "..."


def _tail(child: _Collector) -> str:
    """Return ``; stderr: "..."`` (or stdout when stderr is empty) for a failure message."""
    if child.stderr.strip():
        return f"; stderr: {_last(child.stderr)}"
    if child.stdout.strip():
        return f"; stdout: {_last(child.stdout)}"
    return "; no output"


def _last(data: bytearray) -> str:
    """Quote the last characters of ``data``, where failing commands say what went wrong."""
    text = data.decode(errors="replace").strip()
    if len(text) > _TAIL:
        text = "..." + text[-_TAIL:]
    return json.dumps(text, ensure_ascii=False)
