"""The state file: a restart keeps results; writes are atomic; a broken file is set aside."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from kubeprober.exporter.persist import FORMAT_VERSION, StateFile, dump, parse
from kubeprober.exporter.scheduler import Scheduler
from kubeprober.exporter.status import AgentFacts, status_document
from kubeprober.exporter.store import ResultStore
from kubeprober.probers.result import CheckResult
from kubeprober.probers.status import Status
from tests.exporter import fakes
from tests.exporter.fakes import check, make_probe

PROBES = [
    make_probe("web", (check("home"), check("login"))),
    make_probe("db", (check("tcp"),), namespace="team-a", layer="middleware"),
    make_probe("never", (check("c"),)),
]


def filled_store() -> ResultStore:
    """A store with a few runs of history, one probe never run."""
    store = ResultStore()
    store.set_probes(PROBES)
    web, db = PROBES[0].key, PROBES[1].key
    cert = {"shop.example:443": 1.9e9}
    store.record(
        web,
        {
            "home": CheckResult(Status.PASS, "", 100.0, 0.25, {"connect": 0.01}, cert),
            "login": CheckResult(Status.PASS, "", 100.0, 0.5),
        },
        duration=0.5,
    )
    store.record(
        web,
        {
            "home": CheckResult(Status.WARN, "slow", 130.0, 2.0),
            "login": CheckResult(Status.ERROR, "HTTP 500", 130.0, 0.5),
        },
        duration=2.0,
    )
    for at in (100.0, 130.0, 160.0):
        store.record(
            db, {"tcp": CheckResult(Status.UNKNOWN, "no result within 5s", at, 5.0)}, duration=5
        )
    return store


def snapshot(store: ResultStore) -> dict[tuple[str, str, str], tuple[object, ...]]:
    """Everything persisted about each check, for comparing stores."""
    return {
        (*state.probe.key, name): (
            c.result,
            c.consecutive_failures,
            c.last_success,
            c.last_transition,
            dict(c.runs),
            # Earlier results keep what /status?history=1 shows of them.
            [(h.status, h.message, h.started_at, h.duration) for h in c.history],
        )
        for state in store
        for name, c in state.checks.items()
    }


def test_round_trip_keeps_results_and_counters(tmp_path: Path) -> None:
    before = filled_store()
    file = StateFile(tmp_path)
    file.write(dump(before))
    after = ResultStore()
    after.restore(file.load())
    after.set_probes(PROBES)
    assert snapshot(after) == snapshot(before)
    login = after.get(PROBES[0].key)
    assert login is not None
    assert login.checks["login"].consecutive_failures == 1
    assert login.checks["home"].last_success == 130.0
    db = after.get(PROBES[1].key)
    assert db is not None
    assert db.checks["tcp"].consecutive_failures == 3
    assert db.checks["tcp"].runs[Status.UNKNOWN] == 3
    assert db.checks["tcp"].last_transition == 105.0
    assert [h.started_at for h in db.checks["tcp"].history] == [100.0, 130.0, 160.0]


def test_dump_shape() -> None:
    data = dump(filled_store())
    assert data["version"] == FORMAT_VERSION
    assert sorted(data["probes"]) == ["default/web", "team-a/db"]  # never-run probe left out
    home = data["probes"]["default/web"]["home"]
    assert home == {
        "status": "WARN",
        "message": "slow",
        "startedAt": 130.0,
        "duration": 2.0,
        "phases": {},
        "certificates": {},
        "consecutiveFailures": 0,
        "lastSuccess": 130.0,
        "lastTransition": 132.0,
        "runs": {"PASS": 1, "INFO": 0, "WARN": 1, "ERROR": 0, "UNKNOWN": 0},
        # The results before the last one; phases and certificates are not shown of them.
        "history": [{"status": "PASS", "message": "", "startedAt": 100.0, "duration": 0.25}],
    }
    json.dumps(data, allow_nan=False)  # plain JSON


def test_parse_tolerates_missing_optional_fields() -> None:
    data = {
        "version": FORMAT_VERSION,
        "probes": {
            "ns/p": {
                "c": {
                    "status": "ERROR",
                    "message": "x",
                    "startedAt": 1,
                    "duration": 2,
                    "consecutiveFailures": 5,
                }
            }
        },
    }
    states = parse(data)
    c = states[("ns", "p")]["c"]
    assert c.result is not None
    assert (c.result.status, c.result.started_at, c.consecutive_failures) == (Status.ERROR, 1.0, 5)
    assert c.last_success is None
    assert c.runs == dict.fromkeys(Status, 0)
    assert list(c.history) == [c.result]  # a file from before histories were kept


def test_missing_file_is_empty(tmp_path: Path) -> None:
    assert StateFile(tmp_path / "not-yet").load() == {}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        "[]",
        "null",
        '{"version": 99, "probes": {}}',
        '{"version": 1}',
        '{"version": 1, "probes": {"a/b": {"c": {"status": "BROKEN"}}}}',
        '{"version": 1, "probes": {"a/b": {"c": {"status": "PASS"}}}}',
        '{"version": 1, "probes": {"a/b": {"c": {"status": "PASS", "message": "", '
        '"startedAt": "soon", "duration": 1, "consecutiveFailures": 0}}}}',
        '{"version": 1, "probes": ["a/b"]}',
    ],
)
def test_broken_file_is_set_aside(tmp_path: Path, content: str) -> None:
    file = StateFile(tmp_path)
    file.path.write_text(content, encoding="utf-8")
    assert file.load() == {}
    assert not file.path.exists()
    aside = tmp_path / "results.broken"
    assert aside.read_text(encoding="utf-8") == content
    # and the next write starts afresh
    file.write(dump(filled_store()))
    assert len(file.load()) == 2


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    file = StateFile(tmp_path / "state")
    for _ in range(3):
        file.write(dump(filled_store()))
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["results.json"]
    assert json.loads(file.path.read_text(encoding="utf-8"))["version"] == FORMAT_VERSION


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    file = StateFile(tmp_path)
    file.write(dump(filled_store()))
    old = file.path.read_bytes()
    inode = file.path.stat().st_ino
    with pytest.raises(TypeError):
        file.write({"version": FORMAT_VERSION, "probes": {"x": object()}})
    assert file.path.read_bytes() == old
    assert file.path.stat().st_ino == inode
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_write_replaces_by_rename(tmp_path: Path) -> None:
    file = StateFile(tmp_path)
    file.write(dump(ResultStore()))
    first = file.path.stat().st_ino
    file.write(dump(filled_store()))
    # A new inode: the file was renamed over, never rewritten in place.
    assert file.path.stat().st_ino != first


async def test_restart_keeps_results(tmp_path: Path) -> None:
    """Run a probe, save, 'restart' with a fresh store: /status shows the old results."""
    probe = make_probe("web", (check("home", status=Status.ERROR, message="HTTP 500"),))
    store = ResultStore()
    scheduler = Scheduler(store, fakes.probers_map())
    scheduler.apply([probe])
    try:
        for _ in range(200):
            state = store.get(probe.key)
            if state is not None and state.duration is not None:
                break
            await asyncio.sleep(0.01)
    finally:
        await scheduler.stop()
    StateFile(tmp_path).write(dump(store))

    restarted = ResultStore()
    restarted.restore(StateFile(tmp_path).load())
    restarted.set_probes([probe])
    doc = status_document(restarted, AgentFacts(cluster="c", version="v"))
    (view,) = doc["clusters"][0]["probes"]
    (home,) = view["checks"]
    assert (home["status"], home["message"], home["consecutiveFailures"]) == (
        "ERROR",
        "HTTP 500",
        1,
    )
    assert home["lastRun"] is not None
    assert view["lastRun"] == home["lastRun"]
