"""The file writer: partitioning by receive date, rollover, torn-tail repair, failed writes."""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zstandard

from ssmd_connector.errors import WriteFailed
from ssmd_connector.message import Message
from ssmd_connector.writers import jsonl
from ssmd_connector.writers.jsonl import JsonlWriter


def read_all(raw: bytes, compression: str) -> bytes:
    """Streaming readers, as users must use them: every member, not just the first."""
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True).read()
    return gzip.decompress(raw)


def ns(*args: int) -> int:
    dt = datetime(*args).replace(tzinfo=UTC)  # type: ignore[arg-type]
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


async def test_lines_appended_in_order_under_the_receive_date(tmp_path: Path) -> None:
    w = JsonlWriter(tmp_path)
    t0 = ns(2026, 11, 24, 10, 0, 0)
    await w.write([Message(t0 + i * 1000, "kalshi", b'{"i":%d}' % i) for i in range(100)])
    await w.close()
    lines = (tmp_path / "2026-11-24" / "kalshi.jsonl").read_bytes().splitlines()
    assert [json.loads(x)["data"]["i"] for x in lines] == list(range(100))
    assert w.bytes_written == (tmp_path / "2026-11-24" / "kalshi.jsonl").stat().st_size


async def test_rollover_at_utc_midnight(tmp_path: Path) -> None:
    w = JsonlWriter(tmp_path)
    before = ns(2026, 11, 24, 23, 59, 59, 999999)
    after = ns(2026, 11, 25, 0, 0, 0)
    await w.write([Message(before, "kalshi", b'{"n":1}'), Message(after, "kalshi", b'{"n":2}')])
    await w.flush()
    await w.write([Message(after + 5, "kalshi", b'{"n":3}')])
    await w.close()
    day1 = (tmp_path / "2026-11-24" / "kalshi.jsonl").read_bytes().splitlines()
    day2 = (tmp_path / "2026-11-25" / "kalshi.jsonl").read_bytes().splitlines()
    assert [json.loads(x)["data"]["n"] for x in day1] == [1]
    assert [json.loads(x)["data"]["n"] for x in day2] == [2, 3]
    assert json.loads(day1[0])["ts"] == "2026-11-24T23:59:59.999999Z"
    assert json.loads(day2[0])["ts"] == "2026-11-25T00:00:00.000000Z"


async def test_torn_last_line_is_repaired_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "2026-11-24" / "kalshi.jsonl"
    path.parent.mkdir(parents=True)
    good = b'{"ts":"2026-11-24T10:00:00.000000Z","feed":"kalshi","data":{"a":1}}\n'
    torn = b'{"ts":"2026-11-24T10:00:01.000000Z","feed":"kalshi","data":{"a":'
    path.write_bytes(good + torn)
    w = JsonlWriter(tmp_path)
    await w.write([Message(ns(2026, 11, 24, 10, 0, 2), "kalshi", b'{"a":3}')])
    await w.close()
    lines = path.read_bytes().splitlines()
    assert [json.loads(x)["data"]["a"] for x in lines] == [1, 3]
    quarantined = list(path.parent.glob("kalshi.jsonl.torn-*"))
    assert len(quarantined) == 1
    assert quarantined[0].read_bytes() == torn


async def test_garbage_complete_last_line_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "2026-11-24" / "kalshi.jsonl"
    path.parent.mkdir(parents=True)
    good = b'{"ts":"x","feed":"kalshi","data":1}\n'
    path.write_bytes(good + b"\x00\x00\x00\n")  # e.g. zero-filled block after power loss
    w = JsonlWriter(tmp_path)
    await w.write([Message(ns(2026, 11, 24, 10, 0, 2), "kalshi", b"2")])
    await w.close()
    assert [json.loads(x)["data"] for x in path.read_bytes().splitlines()] == [1, 2]


async def test_clean_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "2026-11-24" / "kalshi.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"ts":"2026-11-24T10:00:01.000000Z","feed":"kalshi","data":{"a":1e400}}\n')
    w = JsonlWriter(tmp_path)
    await w.write([Message(ns(2026, 11, 24, 10, 0, 2), "kalshi", b"2")])
    await w.close()
    assert len(path.read_bytes().splitlines()) == 2
    assert not list(path.parent.glob("*.torn-*"))


async def test_failed_write_keeps_data_and_succeeds_on_retry(tmp_path: Path) -> None:
    blocker = tmp_path / "2026-11-24"
    blocker.write_text("a file where the date directory should be")
    w = JsonlWriter(tmp_path)
    await w.write([Message(ns(2026, 11, 24, 10, 0, i), "kalshi", b'{"i":%d}' % i) for i in range(3)])
    with pytest.raises(WriteFailed, match="cannot write archive file"):
        await w.flush()
    await w.write([Message(ns(2026, 11, 24, 10, 0, 9), "kalshi", b'{"i":9}')])
    blocker.unlink()
    await w.close()
    lines = (tmp_path / "2026-11-24" / "kalshi.jsonl").read_bytes().splitlines()
    assert [json.loads(x)["data"]["i"] for x in lines] == [0, 1, 2, 9]


async def test_while_writes_fail_the_backlog_is_counted_and_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jsonl, "MAX_BACKLOG", 50_000)
    (tmp_path / "2026-11-24").write_text("a file where the date directory should be")
    w = JsonlWriter(tmp_path)
    t0 = ns(2026, 11, 24, 10, 0, 0)
    sizes = []
    for start in range(0, 1000, 100):
        await w.write([Message(t0 + i, "kalshi", b'{"pad":"%s"}' % (b"x" * 100)) for i in range(start, start + 100)])
        with pytest.raises(WriteFailed):
            await w.flush()
        sizes.append(w.backlog_bytes)
    assert sizes == sorted(sizes) and sizes[0] > 0  # held, not dropped
    assert w.backlog_full and not JsonlWriter(tmp_path / "other").backlog_full


async def test_large_batches_flush_early_to_keep_memory_flat(tmp_path: Path) -> None:
    w = JsonlWriter(tmp_path, flush_bytes=10_000)
    t0 = ns(2026, 11, 24, 10, 0, 0)
    await w.write([Message(t0 + i, "kalshi", b'{"pad":"%s"}' % (b"x" * 100)) for i in range(200)])
    assert w.bytes_written > 0  # flushed without an explicit flush()
    await w.close()


@pytest.mark.parametrize(("compression", "suffix"), [("zstd", ".zst"), ("gzip", ".gz")])
async def test_compressed_archive_reads_back_with_streaming_readers(
    tmp_path: Path, compression: str, suffix: str
) -> None:
    w = JsonlWriter(tmp_path, compression=compression, flush_bytes=2_000)
    t0 = ns(2026, 11, 24, 10, 0, 0)
    for k in range(5):  # several flushes: several independent members in one file
        await w.write([Message(t0 + (k * 50 + i) * 1000, "kalshi", b'{"i":%d}' % (k * 50 + i)) for i in range(50)])
        await w.flush()
    await w.close()
    path = tmp_path / "2026-11-24" / f"kalshi.jsonl{suffix}"
    raw = path.read_bytes()
    text = read_all(raw, compression)
    if compression == "zstd":
        assert len(zstandard.ZstdDecompressor().decompress(raw)) < len(text)  # one-shot stops at frame 1
    assert [json.loads(x)["data"]["i"] for x in text.splitlines()] == list(range(250))
    assert w.bytes_written == len(raw)


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
async def test_torn_compressed_member_is_cut_on_reopen(tmp_path: Path, compression: str) -> None:
    t0 = ns(2026, 11, 24, 10, 0, 0)
    w = JsonlWriter(tmp_path, compression=compression)
    await w.write([Message(t0, "kalshi", b'{"a":1}')])
    await w.close()
    path = next((tmp_path / "2026-11-24").iterdir())
    good = path.read_bytes()
    member = JsonlWriter(tmp_path, compression=compression)._codec.compress(b'{"ts":"x","data":2}\n' * 50)
    path.write_bytes(good + member[: len(member) // 2])  # a crash mid-write
    w2 = JsonlWriter(tmp_path, compression=compression)
    await w2.write([Message(t0 + 1000, "kalshi", b'{"a":3}')])
    await w2.close()
    raw = path.read_bytes()
    assert raw.startswith(good)
    text = read_all(raw, compression)
    assert [json.loads(x)["data"]["a"] for x in text.splitlines()] == [1, 3]
    (side,) = path.parent.glob(f"{path.name}.torn-*")
    assert side.read_bytes() == member[: len(member) // 2]
