"""Small archives written by hand (archive lines and ledger events at chosen receive times), and
an export read back — for the export's and replay's tests."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.dataset as ds

from ssmd_connector.clock import TimestampFormatter

T0_NS = 1_795_600_800_000_000_000  # 2026-11-25T07:20:00Z
_fmt = TimestampFormatter()


def ts(ns: int) -> str:
    return _fmt.format(ns).decode()


def write_archive(root: Path, frames: list[tuple[int, dict[str, Any]]], ledger: list[dict[str, Any]] = ()) -> Path:  # type: ignore[assignment]
    """``(receive ns, frame)`` pairs as archive lines of feed ``kalshi`` (one day file per day),
    and ledger events; returns ``root``."""
    for ns, frame in frames:
        day = root / ts(ns)[:10]
        day.mkdir(parents=True, exist_ok=True)
        line = b'{"ts":"' + ts(ns).encode() + b'","feed":"kalshi","data":' + msgspec.json.encode(frame) + b"}\n"
        with (day / "kalshi.jsonl").open("ab") as f:
            f.write(line)
    for ev in ledger:
        day = root / str(ev["ts"])[:10]
        day.mkdir(parents=True, exist_ok=True)
        with (day / "kalshi.events.jsonl").open("ab") as f:
            f.write(msgspec.json.encode({"feed": "kalshi", "shard": "kalshi-0", **ev}) + b"\n")
    return root


def rows(out: Path, table: str) -> list[dict[str, Any]]:
    """Every row of an exported table, in file order (``date`` from the partition directory)."""
    if not (out / table).exists():
        return []
    data = ds.dataset(out / table, format="parquet", partitioning="hive").to_table()
    return list(data.to_pylist())


def levels(book: list[dict[str, Decimal]] | None) -> list[tuple[Decimal, Decimal]]:
    return [(lv["price"], lv["size"]) for lv in book or []]
