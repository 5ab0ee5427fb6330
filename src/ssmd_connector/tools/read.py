"""``ssmd cat`` and ``ssmd stats``: read archives (plain or compressed, days or segments), filtered."""

from __future__ import annotations

import statistics
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..archive import Reader, archive_files
from ..archive.line import frame_of, json_object
from ..clock import TimestampFormatter


def normalize_ts(text: str | None) -> str | None:
    """A user's time (``2026-11-24T10:00``, ``...Z``, with offset) → the archive's ``ts`` format."""
    if text is None:
        return None
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    try:
        dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"time out of range: {text!r}") from None
    ns = int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
    return TimestampFormatter().format(ns).decode()


@dataclass
class Filter:
    start: str | None = None
    end: str | None = None
    kind: str | None = None
    ticker: str | None = None

    def matches(self, obj: dict[str, Any]) -> bool:
        ts = obj.get("ts", "")
        if (self.start and ts < self.start) or (self.end and ts >= self.end):
            return False
        data = obj.get("data")
        if self.kind is not None and not (isinstance(data, dict) and data.get("type") == self.kind):
            return False
        if self.ticker is not None:
            msg = data.get("msg") if isinstance(data, dict) else None
            return isinstance(msg, dict) and self.ticker in (msg.get("market_ticker"), msg.get("ticker"))
        return True


def records(
    path: Path, flt: Filter, reader: Reader | None = None, feed: str | None = None
) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """Archive lines under ``path`` that pass ``flt``, in time order; unreadable lines are
    skipped and reported by ``reader``."""
    reader = reader or Reader()
    for file in archive_files(path, feed):
        for line, obj in reader.records(file):
            if flt.matches(obj):
                yield line, obj


def outcome(reader: Reader, strict: bool) -> int:
    """Exit status: 0, or 1 with ``--strict`` when lines had to be skipped."""
    if reader.problems:
        print(f"{reader.problems} unreadable line(s) skipped", file=sys.stderr)
    return 1 if strict and reader.problems else 0


def cat(path: Path, flt: Filter, data_only: bool, strict: bool = False) -> int:
    out = sys.stdout.buffer
    reader = Reader()
    try:
        for line, obj in records(path, flt, reader):
            out.write((frame_of(line, obj) if data_only else line) + b"\n")
    except BrokenPipeError:  # e.g. | head
        return 0
    return outcome(reader, strict)


def stats(path: Path, flt: Filter, strict: bool = False) -> int:
    by_type: Counter[str] = Counter()
    by_ticker: Counter[str] = Counter()
    per_minute: Counter[str] = Counter()
    total = 0
    first = last = ""
    reader = Reader()
    for _, obj in records(path, flt, reader):
        total += 1
        ts = obj["ts"]
        first = first or ts
        last = ts
        per_minute[ts[:16]] += 1
        data = obj.get("data")
        if isinstance(data, dict):
            by_type[str(data.get("type", "?"))] += 1
            msg = data.get("msg")
            if isinstance(msg, dict) and isinstance(msg.get("market_ticker"), str):
                by_ticker[msg["market_ticker"]] += 1
        else:
            by_type["(not JSON)" if obj.get("enc") else "(other)"] += 1
    print(f"frames: {total:,}  from {first or '-'} to {last or '-'}")
    print("by type: " + ", ".join(f"{k} {v:,}" for k, v in by_type.most_common()))
    if by_ticker:
        print(f"tickers: {len(by_ticker)}; busiest: " + ", ".join(f"{k} {v:,}" for k, v in by_ticker.most_common(10)))
    if per_minute:
        rates = list(per_minute.values())
        print(
            f"per minute: {len(rates)} minutes, min {min(rates):,}, median {statistics.median(rates):,.0f}, "
            f"max {max(rates):,}"
        )
    gaps = list(_gaps(path, flt, reader))
    print(f"gaps: {len(gaps)}")
    for gap in gaps:
        print(
            f"  {gap['ts']} {gap.get('shard')} sid {gap.get('sid')} ({gap.get('channel')}): "
            f"expected {gap.get('expected')}, got {gap.get('got')}"
        )
    return outcome(reader, strict)


def _gaps(path: Path, flt: Filter, reader: Reader) -> Iterator[dict[str, Any]]:
    ledgers = [path] if path.is_file() else sorted(path.glob("*.events.jsonl")) + sorted(path.glob("*/*.events.jsonl"))
    for ledger in ledgers:
        if not ledger.name.endswith(".events.jsonl"):
            continue
        for number, line in reader.lines(ledger):
            ev = json_object(line)
            if ev is None:
                reader.report(ledger, number, "not a ledger event (corrupt or torn)")
            elif ev.get("event") == "gap" and isinstance(ev.get("ts"), str) and Filter(flt.start, flt.end).matches(ev):
                yield ev
