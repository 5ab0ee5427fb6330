"""The archive tools never crash on what they read or are given: damaged and odd archive files
are skipped with a warning naming file and line (exit 1 only with ``--strict``), odd arguments are
one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from .harness import SSMD, ssmd

DAY = "2026-11-24"


def _line(i: int, data: bytes) -> bytes:
    return b'{"ts":"2026-11-24T10:00:%02d.000000Z","feed":"kalshi","data":%s}' % (i, data)


def _archive(root: Path, *lines: bytes) -> Path:
    day = root / DAY
    day.mkdir(parents=True, exist_ok=True)
    (day / "kalshi.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    return root


ODD = [
    b'{"ts":"x","data":1,"enc":"base64"}',  # no feed, enc after data
    b'{"ts":"2026-11-24T10:00:00.000000Z","feed":"kalshi","enc":"base64","data":"QQ"}',  # bad padding
    b'{"data":{"a":1},"ts":"2026-11-24T10:00:00.000000Z"}',  # members out of order
    b'{"ts":"2026-11-24T10:00:00.000000Z","feed":"kalshi","data":1 ,"x":"}"}',  # data not last
    b'{"ts":"2026-11-24T10:00:00.000000Z","feed":"kalshi","enc":"base64","data":"!!!"}',
    b"[" * 5000 + b"]" * 5000,
]


def test_odd_lines_are_skipped_by_every_reader_with_file_and_line(tmp_path: Path) -> None:
    root = _archive(tmp_path, _line(1, b'{"type":"trade"}'), *ODD, _line(2, b'{"type":"trade"}'))
    for args in (["cat", "--data"], ["cat"], ["stats"], ["book", "--ticker", "A"]):
        proc = ssmd(args[0], str(root), *args[1:])
        assert "Traceback" not in proc.stderr, proc.stderr
        assert f"{DAY}/kalshi.jsonl:2: not an archive line" in proc.stderr
        assert proc.stderr.count("not an archive line") == len(ODD)
    assert ssmd("cat", str(root), "--data").stdout.splitlines() == ['{"type":"trade"}'] * 2
    assert ssmd("cat", str(root), "--strict").returncode == 1


def test_book_survives_numbers_that_are_not_prices(tmp_path: Path) -> None:
    snap = b'{"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{"market_ticker":"A","yes_dollars_fp":[["NaN","1"]]}}'
    good = b'{"type":"orderbook_snapshot","sid":1,"seq":2,"msg":{"market_ticker":"A","yes_dollars_fp":[["0.5","1"]]}}'
    delta = (
        b'{"type":"orderbook_delta","sid":1,"seq":3,"msg":{"market_ticker":"A","side":"yes",'
        b'"price_dollars":"0.5","delta_fp":"1e999999999"}}'
    )
    root = _archive(tmp_path, _line(1, snap), _line(2, good), _line(3, delta))
    proc = ssmd("book", str(root), "--ticker", "A")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "malformed orderbook_snapshot" in proc.stdout and "malformed orderbook_delta" in proc.stdout


def test_a_pipe_or_a_device_is_read_as_an_archive_file(tmp_path: Path) -> None:
    assert ssmd("cat", os.devnull).returncode == 0
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("wb") as f:
            f.write(_line(1, b"[1]") + b"\n")

    writer = threading.Thread(target=feed)
    writer.start()
    proc = ssmd("cat", str(fifo), "--data")
    writer.join()
    assert proc.returncode == 0 and proc.stdout == "[1]\n", proc.stderr


def test_a_time_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    proc = ssmd("cat", str(_archive(tmp_path)), "--from", "0001-01-01T00:00+14:00")
    assert proc.returncode == 2 and "time out of range" in proc.stderr and "Traceback" not in proc.stderr


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    root = _archive(
        tmp_path, *[_line(i % 60, b'{"type":"ticker","msg":{"market_ticker":"T%d"}}' % i) for i in range(5000)]
    )
    for tool in ("cat", "stats"):
        proc = subprocess.run(
            f"'{SSMD}' {tool} '{root}' | head -1", shell=True, capture_output=True, text=True, check=False
        )
        assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_a_stray_file_at_the_root_does_not_hide_the_days(tmp_path: Path) -> None:
    root = _archive(tmp_path, _line(1, b"[1]"), _line(2, b"[2]"))
    (root / "kalshi.jsonl").write_bytes(_line(3, b"[3]") + b"\n")
    assert "frames: 3" in ssmd("stats", str(root)).stdout


@pytest.mark.parametrize(
    "manifest",
    [{"feed": "kalshi", "segments": [1]}, {"feed": "kalshi", "segments": [], "gaps": 5}, ["not", "an", "object"]],
)
def test_verify_reports_odd_manifests_without_a_traceback(tmp_path: Path, manifest: object) -> None:
    day = tmp_path / DAY
    day.mkdir()
    (day / "kalshi.manifest.json").write_text(json.dumps(manifest))
    (day / ".kalshi-1000.jsonl.open").write_bytes(b"")
    proc = ssmd("verify", str(tmp_path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "FAILED" in proc.stdout


def test_verify_finds_a_stale_open_segment_in_a_day_without_a_manifest(tmp_path: Path) -> None:
    for day, files in ((DAY, ["kalshi.manifest.json"]), ("2026-11-25", [])):
        (tmp_path / day).mkdir()
        for name in files:
            (tmp_path / day / name).write_text('{"feed":"kalshi","segments":[]}')
    (tmp_path / "2026-11-25" / ".kalshi-0900.jsonl.open").write_bytes(b"")
    proc = ssmd("verify", str(tmp_path))
    assert proc.returncode == 1 and ".kalshi-0900.jsonl.open: FAILED: left open past its interval" in proc.stdout
