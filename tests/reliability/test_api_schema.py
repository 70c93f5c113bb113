"""The aggregator's HTTP API against its own /openapi.json, with schemathesis.

A real aggregator on loopback serves every operation of the document; schemathesis generates
requests from it (valid ones and not, and other methods) and checks that no answer is a 5xx,
that every answer is one the document declares (status, content type, body schema) and that
guarded operations refuse a request without a valid token. It runs twice: reads open (no
``--read-token-file``) with an agent connected, and reads guarded by a read token.

schemathesis calls the server with ``requests``, synchronously, so the aggregator and its agent
run as ``kubeprober`` processes, started once per mode.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from kubeprober.aggregator.openapi import OPENAPI
from tests.aggregator._fleet_harness import (
    FleetFile,
    exec_probe,
    write_operator_tokens,
    write_probes,
)

KUBEPROBER = str(Path(sys.executable).with_name("kubeprober"))
READ_TOKEN = "read-0c9d4e1f2a3b"
EXAMPLES = 8
"""Generated requests per operation, test and mode (13 operations, 2 tests, 2 modes), besides
schemathesis's explicit examples."""


@dataclass
class Hub:
    """A running aggregator and what a client needs to call it."""

    url: str
    operator: str
    read_token: str | None


def _serve(*args: str, log: Path) -> tuple[subprocess.Popen[str], str]:
    """Start ``kubeprober ARGS`` listening on a free loopback port; return it and its URL."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [KUBEPROBER, *args, "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "kubeprober ... serving http://127.0.0.1:PORT/..."
    found = re.search(r"http://127\.0\.0\.1:\d+", line)
    if found is None:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{args[0]} did not start: {line!r} {log.read_text()}")
    return proc, found.group()


@pytest.fixture(scope="module", params=["open", "guarded"])
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """An aggregator of cluster ``moon``: reads open, with moon's agent connected, or reads
    guarded by a read token."""
    tmp = tmp_path_factory.mktemp(f"schema-{request.param}")
    fleet = FleetFile(tmp / "clusters.yaml")
    fleet.add("moon")
    fleet.write()
    read_token = READ_TOKEN if request.param == "guarded" else None
    args = ["aggregator", "--clusters", str(fleet.path), "--operator-tokens", str(tmp / "ops")]
    if read_token is not None:
        (tmp / "read.token").write_text(read_token + "\n")
        args += ["--read-token-file", str(tmp / "read.token")]
    operator = write_operator_tokens(tmp / "ops", "alice")["alice"]
    probes = write_probes(tmp / "probes.yaml", [exec_probe("ok", "true")])
    procs: list[subprocess.Popen[str]] = []
    try:
        hub, url = _serve(*args, log=tmp / "aggregator.log")
        procs.append(hub)
        if read_token is not None:  # what is refused needs no agent: one process less
            yield Hub(url, operator, read_token)
            return
        moon, _ = _serve(
            "agent",
            "--probes", str(probes),
            "--aggregator", url.replace("http", "ws", 1),
            "--token-file", str(fleet.token_file("moon")),
            log=tmp / "agent.log",
        )  # fmt: skip
        procs.append(moon)
        _wait_online(url, operator)
        yield Hub(url, operator, read_token)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            assert proc.stdout is not None
            proc.stdout.close()
            proc.wait(timeout=20)


def _wait_online(url: str, operator: str) -> None:
    headers = {"Authorization": f"Bearer {operator}"}
    doc: dict[str, Any] = {}
    with requests.Session() as http:
        for _ in range(200):
            doc = http.get(f"{url}/status", headers=headers, timeout=5).json()
            if doc["clusters"] and doc["clusters"][0]["state"] == "Online":
                return
            time.sleep(0.05)  # polling a subprocess: no event to wait on
    raise AssertionError(f"cluster moon never came online: {doc}")


def test_the_document_checked_is_the_one_served(hub: Hub) -> None:
    with requests.get(f"{hub.url}/openapi.json", timeout=5) as answer:
        assert answer.status_code == 200
        assert answer.json() == OPENAPI


# The document itself, not fetched: schemathesis's lazy (fixture) schemas do not run on
# pytest 9; the test above shows the aggregator serves this very document.
schema = schemathesis.openapi.from_dict(copy.deepcopy(OPENAPI))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@schema.parametrize()
@FUZZ
def test_every_answer_is_declared_and_none_is_a_server_error(
    case: schemathesis.Case, hub: Hub
) -> None:
    excluded = [positive_data_acceptance] if _beyond_the_schema(case) else []
    case.call_and_validate(
        base_url=hub.url,
        headers={"Authorization": f"Bearer {hub.operator}"},
        excluded_checks=excluded,
        timeout=10,
    )


def _beyond_the_schema(case: schemathesis.Case) -> bool:
    """Whether a request the document allows may still be refused (400, as it says) for what
    OpenAPI cannot express: a series selector's grammar, or history=1 with other than one
    cluster (a rule across two parameters)."""
    query = case.query or {}
    if case.path == "/metrics":
        return bool(query.get("match[]"))
    clusters = [c for c in str(query.get("cluster", "")).split(",") if c]
    return case.path == "/status" and "history" in query and len(clusters) != 1


@schema.parametrize()
@FUZZ
def test_guarded_operations_refuse_requests_without_a_valid_token(
    case: schemathesis.Case, hub: Hub
) -> None:
    """No token, or one schemathesis made up (its own ``Authorization`` header)."""
    security = case.operation.definition.raw.get("security", [])
    open_to_all = not security or ({} in security and hub.read_token is None)
    answer = case.call(base_url=hub.url, timeout=10)
    if case.method.upper() != case.operation.method.upper():  # TRACE and the like
        assert answer.status_code in (401, 405), (case.method, answer.text)
    elif open_to_all:
        assert answer.status_code != 401, answer.text
        excluded = [positive_data_acceptance] if _beyond_the_schema(case) else []
        case.validate_response(answer, excluded_checks=excluded)
    else:
        assert answer.status_code == 401, answer.text
