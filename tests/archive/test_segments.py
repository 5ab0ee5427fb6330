"""Sealed, rotated, compressed segments and their manifest."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ssmd_connector.archive.compression import codec, decompress
from ssmd_connector.archive.layout import parse_rotation, time_order
from ssmd_connector.archive.segments import SEAL_GRACE_NS
from ssmd_connector.message import Message
from ssmd_connector.writers.jsonl import JsonlWriter


def ns(h: int, m: int, s: int, us: int = 0) -> int:
    return int(datetime(2026, 11, 24, h, m, s, tzinfo=UTC).timestamp()) * 10**9 + us * 1000


def msg(t: int, i: int, kind: str = "orderbook_delta") -> Message:
    frame = b'{"type":"%s","sid":1,"seq":%d,"msg":{}}' % (kind.encode(), i)
    return Message(t, "kalshi", frame, json_valid=True, kind=kind)


def lines_of(path: Path, compression: str) -> list[dict[str, object]]:
    return [json.loads(x) for x in decompress(path.read_bytes(), compression).splitlines()]


def test_rotation_parsing() -> None:
    assert parse_rotation("15m") == 900 and parse_rotation("1h") == 3600
    for bad in ("7m", "30s", "1d", "5h", "x"):
        with pytest.raises(ValueError, match=r"rotation|duration"):
            parse_rotation(bad)


@pytest.mark.parametrize(("compression", "suffix"), [("none", ""), ("zstd", ".zst"), ("gzip", ".gz")])
async def test_hour_segments_are_sealed_with_a_manifest(tmp_path: Path, compression: str, suffix: str) -> None:
    w = JsonlWriter(tmp_path, compression=compression, rotation=3600, now_ns=lambda: ns(11, 0, 5))
    await w.write([msg(ns(10, 59, 59, 900_000), 1), msg(ns(10, 59, 59, 950_000), 2, "trade")])
    await w.write([msg(ns(11, 0, 0, 100_000), 3)])
    await w.flush()
    day = tmp_path / "2026-11-24"
    first = day / f"kalshi-1000.jsonl{suffix}"
    assert first.exists()  # sealed as soon as the next hour began
    assert (day / f".kalshi-1100.jsonl{suffix}.open").exists()  # the current hour is still open
    await w.close()
    second = day / f"kalshi-1100.jsonl{suffix}"
    assert not list(day.glob(".*.open"))
    assert [x["data"]["seq"] for x in lines_of(first, compression)] == [1, 2]  # type: ignore[index]
    assert [x["data"]["seq"] for x in lines_of(second, compression)] == [3]  # type: ignore[index]
    manifest = json.loads((day / "kalshi.manifest.json").read_text())
    assert [s["name"] for s in manifest["segments"]] == [first.name, second.name]
    seg = manifest["segments"][0]
    assert seg["lines"] == 2 and seg["types"] == {"orderbook_delta": 1, "trade": 1}
    assert seg["first_ts"] == "2026-11-24T10:59:59.900000Z" and seg["last_ts"] == "2026-11-24T10:59:59.950000Z"
    assert seg["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert seg["bytes"] == first.stat().st_size
    assert manifest["gaps"] == [] and manifest["date"] == "2026-11-24"


async def test_idle_segment_is_sealed_on_time_and_late_frames_get_a_part(tmp_path: Path) -> None:
    clock = [ns(10, 30, 0)]
    w = JsonlWriter(tmp_path, rotation=3600, now_ns=lambda: clock[0])
    await w.write([msg(ns(10, 30, 0), 1)])
    await w.flush()
    day = tmp_path / "2026-11-24"
    assert not (day / "kalshi-1000.jsonl").exists()
    clock[0] = ns(11, 0, 0) + SEAL_GRACE_NS  # the hour is over and nothing more came
    await w.flush()
    assert (day / "kalshi-1000.jsonl").exists()
    await w.write([msg(ns(10, 59, 59), 2)])  # a frame of that hour, very late
    await w.close()
    assert [x["data"]["seq"] for x in lines_of(day / "kalshi-1000.1.jsonl", "none")] == [2]  # type: ignore[index]
    assert [x["data"]["seq"] for x in lines_of(day / "kalshi-1000.jsonl", "none")] == [1]  # type: ignore[index]
    names = [s["name"] for s in json.loads((day / "kalshi.manifest.json").read_text())["segments"]]
    assert names == ["kalshi-1000.jsonl", "kalshi-1000.1.jsonl"]  # time order


@pytest.mark.parametrize("compression", ["none", "zstd"])
async def test_open_segment_left_by_a_crash_is_repaired_and_sealed(tmp_path: Path, compression: str) -> None:
    day = tmp_path / "2026-11-24"
    day.mkdir()
    c = codec(compression)
    good = b"".join(
        b'{"ts":"2026-11-24T10:00:0%d.000000Z","feed":"kalshi","data":{"type":"trade","seq":%d}}\n' % (i, i)
        for i in range(3)
    )
    torn_member = c.compress(b'{"ts":"2026-11-24T10:00:09.000000Z","feed":"kalshi","data":{"seq":9}}\n')
    torn = torn_member[: len(torn_member) // 2] if compression != "none" else b'{"ts":"2026-11-24T10:0'
    suffix = f".jsonl{c.suffix}"
    (day / f".kalshi-1000{suffix}.open").write_bytes(c.compress(good) + torn)
    w = JsonlWriter(tmp_path, compression=compression, rotation=3600, now_ns=lambda: ns(10, 20, 0))
    await w.write([msg(ns(10, 20, 0), 7)])
    await w.close()
    recovered = day / f"kalshi-1000{suffix}"
    assert [x["data"]["seq"] for x in lines_of(recovered, compression)] == [0, 1, 2]  # type: ignore[index]
    assert [x["data"]["seq"] for x in lines_of(day / f"kalshi-1000.1{suffix}", compression)] == [7]  # type: ignore[index]
    assert list(day.glob(f".kalshi-1000{suffix}.open.torn-*"))
    manifest = json.loads((day / "kalshi.manifest.json").read_text())
    entry = next(s for s in manifest["segments"] if s["name"] == recovered.name)
    assert entry["lines"] == 3 and entry["types"] == {"trade": 3}
    assert entry["sha256"] == hashlib.sha256(recovered.read_bytes()).hexdigest()


async def test_crash_between_seal_and_manifest_is_reconciled(tmp_path: Path) -> None:
    w = JsonlWriter(tmp_path, rotation=3600, now_ns=lambda: ns(10, 5, 0))
    await w.write([msg(ns(10, 0, 0), 1)])
    await w.close()
    day = tmp_path / "2026-11-24"
    (day / "kalshi.manifest.json").unlink()  # as if the process died right after the rename
    w2 = JsonlWriter(tmp_path, rotation=3600, now_ns=lambda: ns(10, 6, 0))
    await w2.write([msg(ns(10, 6, 0), 2)])
    await w2.close()
    names = [s["name"] for s in json.loads((day / "kalshi.manifest.json").read_text())["segments"]]
    assert names == ["kalshi-1000.jsonl", "kalshi-1000.1.jsonl"]  # time order


def test_segment_names_sort_in_time_order() -> None:
    names = [
        "kalshi-1000.10.jsonl.zst",
        "kalshi-1100.jsonl.zst",
        "kalshi-1000.2.jsonl.zst",
        "kalshi-1000.jsonl.zst",
        "kalshi-1000.1.jsonl.zst",
        "kalshi-0900.jsonl.zst",
    ]
    assert sorted(names, key=time_order) == [
        "kalshi-0900.jsonl.zst",
        "kalshi-1000.jsonl.zst",
        "kalshi-1000.1.jsonl.zst",
        "kalshi-1000.2.jsonl.zst",
        "kalshi-1000.10.jsonl.zst",
        "kalshi-1100.jsonl.zst",
    ]
