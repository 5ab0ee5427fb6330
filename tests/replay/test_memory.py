"""Replay streams: the server's memory does not grow with the archive's size.

Runs the benchmark's memory check as a user would (``python -m bench.replay --memory``): the real
``ssmd replay`` process serves a 2,000-frame archive and then a 150,000-frame one (~53 MB) as fast
as a checking client reads (every message of its subscriptions, seq gap-free, a normal close), and
its peak RSS may grow by at most 20 MB between the two — an archive read into memory would add
more than its own size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_replay_memory_does_not_grow_with_the_archive(tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    cmd = [sys.executable, "-m", "bench.replay", "--no-throughput", "--memory", "--memory-frames", "150000"]
    run = subprocess.run(
        [*cmd, "--memory-limit-mb", "20", "--out", str(out)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    mem = json.loads(out.read_text())["memory"]
    assert mem["large"]["archive_mb"] > 50
    assert mem["growth_mb"] < 20
