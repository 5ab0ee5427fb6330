"""A benchmark that cannot lie: a run that saw a disconnect, a gap or the wrong frame count fails
instead of printing a figure. (The firehose used to corrupt its own stream — replies written into
the middle of frames — and the run still reported a 0.29 ratio with reconnects and re-sent frames.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _firehose(frames: int, fault: str | None) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "bench.firehose", "--frames", str(frames)] + (["--fault", fault] if fault else [])
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = json.loads(proc.stdout.readline())["port"]
    return proc, f"ws://127.0.0.1:{port}/trade-api/ws/v2"


def _client(kind: str, url: str, frames: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "bench.clients", kind, "--url", url, "--frames", str(frames), "--dir", str(tmp_path)]
    cmd += ["--stall", "3"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.parametrize(
    ("kind", "fault"),
    [
        ("bare", "drop"),
        ("bare", "disconnect"),
        ("bare", "corrupt"),
        ("recorder", "drop"),
        ("recorder", "gap"),  # the frame count is right: only the sequence tracking sees it
        ("recorder", "disconnect"),
        ("recorder", "corrupt"),
    ],
)
def test_a_broken_run_fails_without_a_figure(tmp_path: Path, kind: str, fault: str) -> None:
    frames = 5000
    firehose, url = _firehose(frames, fault)
    try:
        proc = _client(kind, url, frames, tmp_path)
    finally:
        assert firehose.stdin is not None
        firehose.stdin.close()
        firehose.wait(10)
    assert proc.returncode != 0, proc.stdout
    assert "invalid benchmark run" in proc.stderr, proc.stderr[-2000:]
    assert "fps" not in proc.stdout and "seconds" not in proc.stdout


def test_a_clean_run_reports(tmp_path: Path) -> None:
    firehose, url = _firehose(5000, None)
    try:
        proc = _client("recorder", url, 5000, tmp_path)
    finally:
        assert firehose.stdin is not None
        firehose.stdin.close()
        firehose.wait(10)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["gaps"] == 0 and result["seconds"] > 0
