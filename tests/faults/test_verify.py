"""``ssmd verify``'s blind spots: a truncated last zstd frame, ``.open`` segments left behind,
duplicated lines. Each archive below passed ``ssmd verify`` before."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zstandard

from ssmd_connector.archive.compression import decompress
from ssmd_connector.message import Message
from ssmd_connector.writers.jsonl import JsonlWriter

from .harness import ssmd

T0 = int(datetime(2026, 11, 24, 10, 0, tzinfo=UTC).timestamp()) * 1_000_000_000


def _delta(seq: int) -> bytes:
    return b'{"type":"orderbook_delta","sid":1,"seq":%d,"msg":{"market_ticker":"A-1","price_dollars":"0.5"}}' % seq


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two minutes of sequenced frames in 1-minute zstd segments, each written in several flushes
    (so each segment is several zstd frames), sealed, with a manifest."""
    root = tmp_path_factory.mktemp("archive")

    clock = [T0]

    async def write() -> None:
        w = JsonlWriter(root, compression="zstd", rotation=60, now_ns=lambda: clock[0])
        for seq in range(1, 1201):
            ns = clock[0] = T0 + seq * 100_000_000  # 10 frames a second
            await w.write([Message(ns, "kalshi", _delta(seq), False, True, "orderbook_delta")])
            if seq % 100 == 0:
                await w.flush()
        await w.close()

    asyncio.run(write())
    assert ssmd("verify", str(root)).returncode == 0
    return root


def _copy(archive: Path, tmp_path: Path) -> tuple[Path, Path, dict[str, object]]:
    root = tmp_path / "copy"
    shutil.copytree(archive, root)
    day = root / "2026-11-24"
    return root, day, json.loads((day / "kalshi.manifest.json").read_text())


def _rewrite_entry(day: Path, manifest: dict[str, object], name: str) -> None:
    """Make the manifest agree with the file as a lenient reader sees it (what verify trusted)."""
    path = day / name
    raw = path.read_bytes()
    # zstandard's stream reader, as DuckDB and the old verify read: silent on a truncated last frame
    lines = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True).read().splitlines()
    segments = manifest["segments"]
    assert isinstance(segments, list)
    entry = next(s for s in segments if s["name"] == name)
    entry.update(
        bytes=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        lines=len(lines),
        first_ts=json.loads(lines[0])["ts"],
        last_ts=json.loads(lines[-1])["ts"],
        types={"orderbook_delta": len(lines)},
    )
    (day / "kalshi.manifest.json").write_text(json.dumps(manifest))


def test_a_truncated_last_zstd_frame_is_a_problem(archive: Path, tmp_path: Path) -> None:
    root, day, manifest = _copy(archive, tmp_path)
    segment = day / "kalshi-1000.jsonl.zst"
    segment.write_bytes(segment.read_bytes()[:-20])
    _rewrite_entry(day, manifest, segment.name)
    proc = ssmd("verify", str(root))
    assert proc.returncode == 1, proc.stdout
    assert "kalshi-1000.jsonl.zst" in proc.stdout and "the last member is cut short" in proc.stdout
    assert "Traceback" not in proc.stderr
    # The other readers see the truncation too, instead of silently returning fewer lines.
    cat = ssmd("cat", str(segment), "--strict")
    assert cat.returncode == 1 and "cut short" in cat.stderr


def test_an_open_segment_left_past_its_interval_is_a_problem(archive: Path, tmp_path: Path) -> None:
    root, day, _ = _copy(archive, tmp_path)
    (day / ".kalshi-1002.jsonl.zst.open").write_bytes(b"")
    proc = ssmd("verify", str(root))
    assert proc.returncode == 1
    assert ".kalshi-1002.jsonl.zst.open: FAILED: left open past its interval" in proc.stdout


def test_an_open_segment_still_being_written_is_not_a_problem(archive: Path, tmp_path: Path) -> None:
    root, _, _ = _copy(archive, tmp_path)
    today = datetime.now(UTC)
    live = root / today.strftime("%Y-%m-%d")
    live.mkdir()
    (live / "kalshi.manifest.json").write_text(json.dumps({"feed": "kalshi", "segments": [], "rotation_seconds": 3600}))
    (live / f".kalshi-{today.strftime('%H')}00.jsonl.zst.open").write_bytes(b"")
    proc = ssmd("verify", str(root))
    assert proc.returncode == 0, proc.stdout
    assert "open (being written" in proc.stdout


def test_a_sequenced_line_stored_twice_is_a_problem(archive: Path, tmp_path: Path) -> None:
    root, day, manifest = _copy(archive, tmp_path)
    segment = day / "kalshi-1001.jsonl.zst"
    first_line = decompress(segment.read_bytes(), "zstd").splitlines()[0]
    with segment.open("ab") as f:  # the same line again, as a new complete frame
        f.write(zstandard.ZstdCompressor().compress(first_line + b"\n"))
    _rewrite_entry(day, manifest, segment.name)
    proc = ssmd("verify", str(root))
    assert proc.returncode == 1, proc.stdout
    assert "1 duplicated line(s) of sequenced data" in proc.stdout


def test_repeated_lines_without_a_sequence_number_are_listed_not_failed(archive: Path, tmp_path: Path) -> None:
    root, day, manifest = _copy(archive, tmp_path)
    segment = day / "kalshi-1001.jsonl.zst"
    ticker = b'{"ts":"2026-11-24T10:01:30.000000Z","feed":"kalshi","data":{"type":"ticker","sid":2,"msg":{}}}\n'
    with segment.open("ab") as f:
        f.write(zstandard.ZstdCompressor().compress(ticker + ticker))
    _rewrite_entry(day, manifest, segment.name)
    entry = next(s for s in manifest["segments"] if s["name"] == segment.name)  # type: ignore[attr-defined]
    entry["types"] = {"orderbook_delta": entry["lines"] - 2, "ticker": 2}
    (day / "kalshi.manifest.json").write_text(json.dumps(manifest))
    proc = ssmd("verify", str(root))
    assert proc.returncode == 0, proc.stdout
    assert "1 repeated line(s) without a sequence number" in proc.stdout
