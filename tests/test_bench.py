"""The benchmark still runs end to end (tiny configuration; figures are not checked here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m <module> <args>`` from the repository root, as a user runs it."""
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = bench(
        "bench",
        "--frames",
        "20000",
        "--repeat",
        "1",
        "--paced",
        "2000",
        "--paced-seconds",
        "1",
        "--rss-frames",
        "30000",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    t = result["throughput"]
    for kind in ("bare", "minimal", "recorder"):
        assert t[kind]["fps"] > 0 and t[kind]["cpu_us_per_frame"] > 0
    assert t["ratio_to_minimal"] > 0 and 0 < t["ratio_to_bare"] < 1
    assert t["recorder"]["bytes_per_s"] > 0
    (paced,) = result["paced"]
    assert paced["rate"] == 2000 and "p99" in paced["latency_s"]
    assert result["memory"]["rss_at_mb"]
    assert "recorder / minimal" in proc.stdout


def test_scaleout_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "scaleout.json"
    proc = bench(
        "bench.scaleout",
        "--frames",
        "5000",
        "--repeat",
        "1",
        "--sample",
        "3000",
        "--levels",
        "1,3",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert [row["level"] for row in result["compression"]] == [1, 3]
    assert all(row["ratio"] > 1 for row in result["compression"])
    for kind in (
        "recorder-file",
        "recorder-file+jetstream",
        "archiver",
        "jetstream-writer-alone",
        "jetstream-writer-alone-per-message-acks",
        "end-to-end",
    ):
        assert result["pipeline"][kind]["fps"] > 0
