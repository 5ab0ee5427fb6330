"""The coverage ledger's writer on its own: line format, day files, buffering, torn tails, failed writes."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ssmd_connector.archive.ledger import is_event, summary
from ssmd_connector.ledger import Ledger


def ns(*args: int) -> int:
    dt = datetime(*args).replace(tzinfo=UTC)  # type: ignore[arg-type]
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


T0 = ns(2026, 11, 24, 10, 30, 0, 123456)
DAY = "2026-11-24"


class Clock:
    """An injected ``now_ns`` that tests move by hand."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def lines(path: Path) -> list[dict[str, Any]]:
    """The file's events; every line must be a complete event by the archive's own rule."""
    raw = path.read_bytes().splitlines(keepends=True)
    assert all(is_event(line) for line in raw)
    return [json.loads(line) for line in raw]


async def eventually(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_each_event_is_one_json_line_under_the_clocks_day(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, "kalshi", now_ns=Clock())
    ledger.record("connect", "kalshi-0")
    ledger.record("gap", "kalshi-0", {"sid": 2, "channel": "orderbook_delta", "expected": 1043, "got": 1045})
    await ledger.close()
    path = tmp_path / DAY / "kalshi.events.jsonl"
    assert ledger.path_for(T0) == path
    assert lines(path) == [
        {"ts": "2026-11-24T10:30:00.123456Z", "feed": "kalshi", "shard": "kalshi-0", "event": "connect"},
        {
            "ts": "2026-11-24T10:30:00.123456Z",
            "feed": "kalshi",
            "shard": "kalshi-0",
            "event": "gap",
            "sid": 2,
            "channel": "orderbook_delta",
            "expected": 1043,
            "got": 1045,
        },
    ]


async def test_events_after_utc_midnight_go_to_the_next_days_file(tmp_path: Path) -> None:
    clock = Clock(ns(2026, 11, 24, 23, 59, 59, 999999))
    ledger = Ledger(tmp_path, "kalshi", now_ns=clock)
    ledger.record("connect", "kalshi-0")
    clock.now = ns(2026, 11, 25, 0, 0, 0)
    ledger.record("disconnect", "kalshi-0", {"reason": "eof"})
    await ledger.close()
    day1 = lines(tmp_path / "2026-11-24" / "kalshi.events.jsonl")
    day2 = lines(tmp_path / "2026-11-25" / "kalshi.events.jsonl")
    assert [(e["event"], e["ts"]) for e in day1] == [("connect", "2026-11-24T23:59:59.999999Z")]
    assert [(e["event"], e["ts"]) for e in day2] == [("disconnect", "2026-11-25T00:00:00.000000Z")]


def test_events_are_counted_by_kind_as_they_are_recorded(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, "kalshi", now_ns=Clock())
    for event in ("connect", "command", "command", "gap"):
        ledger.record(event, "kalshi-0")
    assert ledger.events == {"connect": 1, "command": 2, "gap": 1}


async def test_nothing_is_on_disk_before_the_flush_delay_and_all_of_it_after_close(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, "kalshi", now_ns=Clock(), flush_delay=60)
    path = tmp_path / DAY / "kalshi.events.jsonl"
    ledger.record("connect", "kalshi-0")
    ledger.record("subscribed", "kalshi-0", {"sid": 1})
    await asyncio.sleep(0.05)
    assert not path.exists()
    await ledger.close()
    assert [e["event"] for e in lines(path)] == ["connect", "subscribed"]


async def test_buffered_events_reach_disk_within_the_flush_delay_without_close(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, "kalshi", now_ns=Clock(), flush_delay=0.01)
    path = tmp_path / DAY / "kalshi.events.jsonl"
    ledger.record("connect", "kalshi-0")
    await eventually(path.exists)
    ledger.record("disconnect", "kalshi-0")
    await eventually(lambda: len(lines(path)) == 2)
    await ledger.close()
    assert [e["event"] for e in lines(path)] == ["connect", "disconnect"]


def test_events_recorded_without_an_event_loop_are_written_by_close(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, "kalshi", now_ns=Clock())
    ledger.record("connect", "kalshi-0")
    assert not (tmp_path / DAY).exists()
    asyncio.run(ledger.close())
    assert [e["event"] for e in lines(tmp_path / DAY / "kalshi.events.jsonl")] == ["connect"]


async def test_a_torn_tail_is_set_aside_before_the_first_append(tmp_path: Path) -> None:
    path = tmp_path / DAY / "kalshi.events.jsonl"
    path.parent.mkdir()
    whole = b'{"ts":"2026-11-24T09:00:00.000000Z","feed":"kalshi","shard":"kalshi-0","event":"connect"}\n'
    torn = b'{"ts":"2026-11-24T09:00:01.000000Z","feed":"kal'
    path.write_bytes(whole + torn)
    ledger = Ledger(tmp_path, "kalshi", now_ns=Clock())
    ledger.record("connect", "kalshi-0")
    await ledger.close()
    assert [e["ts"] for e in lines(path)] == ["2026-11-24T09:00:00.000000Z", "2026-11-24T10:30:00.123456Z"]
    (side,) = path.parent.glob("kalshi.events.jsonl.torn-*")
    assert side.read_bytes() == torn


async def test_a_complete_but_unparsable_last_line_is_set_aside_too(tmp_path: Path) -> None:
    path = tmp_path / DAY / "kalshi.events.jsonl"
    path.parent.mkdir()
    path.write_bytes(b"\x00\x00\x00garbage\n")
    ledger = Ledger(tmp_path, "kalshi", now_ns=Clock())
    ledger.record("connect", "kalshi-0")
    await ledger.close()
    assert [e["event"] for e in lines(path)] == ["connect"]
    (side,) = path.parent.glob("kalshi.events.jsonl.torn-*")
    assert side.read_bytes() == b"\x00\x00\x00garbage\n"


async def test_a_failed_flush_keeps_the_events_and_writes_them_once_storage_is_back(tmp_path: Path) -> None:
    blocker = tmp_path / DAY
    blocker.write_bytes(b"")  # a file where the day directory must go: every write fails
    ledger = Ledger(tmp_path, "kalshi", now_ns=Clock(), flush_delay=0.01)
    ledger.record("connect", "kalshi-0")
    ledger.record("gap", "kalshi-0", {"sid": 1})
    await asyncio.sleep(0.1)  # several failed attempts
    blocker.unlink()
    path = tmp_path / DAY / "kalshi.events.jsonl"
    await eventually(path.exists)
    ledger.record("disconnect", "kalshi-0")
    await ledger.close()
    assert [e["event"] for e in lines(path)] == ["connect", "gap", "disconnect"]


async def test_close_raises_when_the_ledger_cannot_be_written(tmp_path: Path) -> None:
    """close reports the failure (the recorder logs its OSError) instead of returning as if written."""
    (tmp_path / DAY).write_bytes(b"")
    ledger = Ledger(tmp_path, "kalshi", now_ns=Clock(), flush_delay=60)
    ledger.record("connect", "kalshi-0")
    with pytest.raises(OSError):
        await ledger.close()


async def test_a_flush_failing_on_one_day_does_not_duplicate_the_other_days_lines(tmp_path: Path) -> None:
    clock = Clock(ns(2026, 11, 24, 23, 59, 59))
    blocker = tmp_path / "2026-11-25"
    blocker.write_bytes(b"")  # the new day's directory cannot be made; the old day's file is fine
    ledger = Ledger(tmp_path, "kalshi", now_ns=clock, flush_delay=0.01)
    ledger.record("connect", "kalshi-0")
    clock.now = ns(2026, 11, 25, 0, 0, 1)
    ledger.record("disconnect", "kalshi-0")
    day1 = tmp_path / "2026-11-24" / "kalshi.events.jsonl"
    await eventually(lambda: day1.exists() and day1.stat().st_size > 0)  # the first flush got this far
    await asyncio.sleep(0.05)  # ... and failed on the next day
    blocker.unlink()
    await ledger.close()
    assert [e["event"] for e in lines(day1)] == ["connect"]
    assert [e["event"] for e in lines(tmp_path / "2026-11-25" / "kalshi.events.jsonl")] == ["disconnect"]


async def test_the_archive_reader_summarises_what_the_ledger_wrote(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, "kalshi", now_ns=Clock())
    gap = {"sid": 2, "channel": "orderbook_delta", "expected": 1043, "got": 1045, "missing": 2}
    ledger.record("gap", "kalshi-0", gap)
    ledger.record("disconnect", "kalshi-0", {"reason": "eof"})
    ledger.record("disconnect", "kalshi-1", {"reason": "stop", "requested": True})
    await ledger.close()
    assert summary(tmp_path / DAY, "kalshi") == {
        "gaps": [{"ts": "2026-11-24T10:30:00.123456Z", "shard": "kalshi-0", **gap}],
        "disconnects": 1,
    }


async def test_a_long_outage_drops_whole_old_lines_never_the_rest_of_a_cut_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the bound the oldest lines go — counted and said — but the unwritten rest of a line a
    write cut short is kept and written first: the file never holds a torn line in its middle."""
    import ssmd_connector.ledger as module  # noqa: PLC0415

    real_write, calls = os.write, {"n": 0}

    def cut_then_fail(fd: int, data: memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:10]))  # the disk fills in the middle of a line
        if calls["n"] <= 4:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", cut_then_fail)
    monkeypatch.setattr(module, "MAX_PENDING", 3)
    said: list[str | None] = []
    ledger = Ledger(tmp_path, "kalshi", now_ns=Clock(), flush_delay=0.01)
    ledger.on_trouble = said.append
    for i in range(3):
        ledger.record("command", "kalshi-0", {"i": i})
    await eventually(lambda: calls["n"] >= 2)
    for i in range(3, 8):
        ledger.record("command", "kalshi-0", {"i": i})
    await eventually(lambda: said[-1:] == [None])
    await ledger.close()
    raw = (tmp_path / DAY / "kalshi.events.jsonl").read_bytes().splitlines()
    assert all(is_event(x) for x in raw), raw
    kept = [json.loads(x)["i"] for x in raw]
    assert kept[0] == 0 and kept == sorted(kept) and len(kept) + ledger.lost == 8  # lost = dropped, said
    assert ledger.lost > 0 and any(m and "dropped at the 3-line bound" in m for m in said)


def test_fields_may_not_pass_for_what_every_line_has(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, "kalshi", now_ns=Clock())
    with pytest.raises(ValueError, match=r"may not be named \['event', 'shard'\]"):
        ledger.record("gap", "kalshi-0", {"shard": "other", "event": "fake", "sid": 1})
    assert ledger.events == {}
