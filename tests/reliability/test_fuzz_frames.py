"""Runs the atheris frame-header target for a few seconds: it must find nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TARGET = Path(__file__).with_name("fuzz_frames.py")


def test_frame_header_fuzzing_finds_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(TARGET), "-max_total_time=2", "-max_len=64", "-seed=1"],
        cwd=tmp_path,  # crash-* files, if any, land here
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Done" in done.stderr, done.stderr[-2000:]  # it ran its time, not zero inputs
    assert not list(tmp_path.glob("crash-*"))
