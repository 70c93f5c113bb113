"""File mode's probe set: what a reload keeps, drops and reports, file by file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kubeprober.exporter.probe_files import ConfigError, ProbeFiles
from kubeprober.probers.probe import MAX_FILE_BYTES, Probe


def manifest(name: str, port: int = 80) -> str:
    """One Probe with one tcp check."""
    return (
        f"apiVersion: kubeprober.io/v1\nkind: Probe\nmetadata: {{name: {name}}}\n"
        "spec:\n  layer: application\n  interval: 30s\n  checks:\n"
        f"  - {{name: c, prober: tcp, with: {{host: 127.0.0.1, port: {port}}}}}\n"
    )


def names(probes: list[Probe] | None) -> list[str]:
    """The names of a reload's probes."""
    assert probes is not None, "expected a reload"
    return sorted(p.name for p in probes)


def test_a_missing_file_in_file_mode_keeps_its_probes(tmp_path: Path) -> None:
    file = tmp_path / "probes.yaml"
    file.write_text(manifest("a") + "---\n" + manifest("b"))
    files = ProbeFiles(file, max_bytes=MAX_FILE_BYTES)
    assert names(files.reload()) == ["a", "b"]
    assert files.files_ok == {str(file): True}

    file.unlink()  # an editor's save, half done
    assert names(files.reload()) == ["a", "b"]
    kept = (("default", "a"), ("default", "b"))
    assert files.errors == (ConfigError(str(file), "cannot read: No such file or directory", kept),)
    assert files.files_ok == {str(file): False}
    assert files.reload() is None  # nothing changed since

    file.write_text(manifest("a"))
    assert names(files.reload()) == ["a"]
    assert files.errors == ()


def test_a_removed_file_in_a_directory_removes_its_probes(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(manifest("a"))
    broken = tmp_path / "b.yaml"
    broken.write_text(manifest("b"))
    files = ProbeFiles(tmp_path, max_bytes=MAX_FILE_BYTES)
    assert names(files.reload()) == ["a", "b"]
    broken.write_text("spec: [")
    assert names(files.reload()) == ["a", "b"]
    broken.unlink()  # deliberate: the Probes go, and so does the error
    assert names(files.reload()) == ["a"]
    assert files.errors == ()
    assert files.files_ok == {str(tmp_path / "a.yaml"): True}


def test_only_changed_files_are_read_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n---\n"
    (tmp_path / "a.yaml").write_text(other + manifest("a"))
    b = tmp_path / "b.yaml"
    b.write_text(manifest("b"))
    files = ProbeFiles(tmp_path, max_bytes=MAX_FILE_BYTES)
    with caplog.at_level(logging.WARNING):
        files.reload()
        b.write_text(manifest("b", port=81))
        assert names(files.reload()) == ["a", "b"]
    # a.yaml's warning was logged when it was read, and it was read once.
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert skipped == [
        f'{tmp_path / "a.yaml"}: document 1: skipped "v1" "ConfigMap" "cfg": '
        "not a kubeprober.io Probe"
    ]


def test_a_new_invalid_probe_is_reported_without_running(tmp_path: Path) -> None:
    file = tmp_path / "probes.yaml"
    file.write_text(manifest("a") + "---\n" + manifest("b", port=0))
    files = ProbeFiles(file, max_bytes=MAX_FILE_BYTES)
    assert names(files.reload()) == ["a"]
    (error,) = files.errors
    assert error.message.startswith("b: spec.checks[0].with.port: expected integer 1-65535")
    assert error.kept == ()
    assert files.files_ok == {str(file): False}
