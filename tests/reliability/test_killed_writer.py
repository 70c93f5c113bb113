"""An agent killed mid-write leaves a valid state file holding every write it finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from kubeprober.exporter.persist import StateFile

# Writes the state file as the agent does, bigger each time (so writes take a while), and says
# the number of each write once it returned: what the agent had recorded.
_WRITER = """
import sys
from pathlib import Path
from kubeprober.exporter.persist import StateFile
state = StateFile(Path(sys.argv[1]))
i = 0
while True:
    i += 1
    state.write({"version": 1, "probes": {}, "n": i, "pad": "x" * (i * 4096)})
    print(i, flush=True)
"""


def test_sigkill_mid_write_keeps_the_last_finished_write(tmp_path: Path) -> None:
    for _ in range(3):  # killed at a different moment each time
        with subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        ) as writer:
            assert writer.stdout is not None
            acknowledged = 0
            for line in writer.stdout:
                acknowledged = int(line)
                if acknowledged >= 20:
                    break
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait()
        data = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
        assert data["n"] >= acknowledged  # nothing recorded before the kill is lost
        assert data["pad"] == "x" * (data["n"] * 4096)  # and nothing half-written
        assert StateFile(tmp_path).load() == {}
        assert not (tmp_path / "results.broken").exists()
