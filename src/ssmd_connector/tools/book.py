"""``ssmd book PATH --ticker T [--at TS]``: rebuild one market's order book from the archive.

Snapshots reset the book; deltas change a level by an exact fixed-point amount (``Decimal``).
Inconsistencies are reported: a delta before any snapshot, a level driven negative, a message
whose fields are not what Kalshi documents.
"""

from __future__ import annotations

from decimal import Decimal, DecimalException
from pathlib import Path
from typing import Any

from ..archive import Reader
from .read import Filter, outcome, records

Book = dict[str, dict[Decimal, Decimal]]


def book(path: Path, ticker: str, at: str | None, strict: bool = False) -> int:
    sides: Book | None = None
    problems = 0
    snapshots = deltas = 0
    last_ts = ""
    reader = Reader()
    for _, obj in records(path, Filter(end=at, ticker=ticker), reader):
        data = obj["data"]
        kind = data.get("type")
        msg = data.get("msg", {})
        try:
            if kind == "orderbook_snapshot":
                sides = _snapshot(msg)
                snapshots += 1
            elif kind == "orderbook_delta":
                deltas += 1
                if sides is None:
                    problems += 1
                    print(f"{obj['ts']}: delta before any snapshot (sid {data.get('sid')}, seq {data.get('seq')})")
                    continue
                problem = _apply(sides, msg)
                if problem:
                    problems += 1
                    print(f"{obj['ts']}: {problem} at seq {data.get('seq')}")
        except (KeyError, TypeError, ValueError, DecimalException) as exc:
            problems += 1
            print(f"{obj['ts']}: malformed {kind} message ({type(exc).__name__}: {exc}) at seq {data.get('seq')}")
        last_ts = obj["ts"]
    print(f"{ticker}: {snapshots} snapshot(s), {deltas} delta(s), as of {last_ts or '-'}")
    if sides is not None:
        for side in ("yes", "no"):
            levels = sorted(sides[side].items(), reverse=True)
            print(f"  {side} bids: " + (", ".join(f"{p}x{q}" for p, q in levels[:10]) or "(empty)"))
        yes, no = sides["yes"], sides["no"]
        if yes and no:
            print(f"  best yes bid {max(yes)}, yes ask {1 - max(no)} (1 - best no bid)")
    print(f"{problems} inconsistenc{'y' if problems == 1 else 'ies'}")
    return 1 if problems else outcome(reader, strict)


def _dec(text: object) -> Decimal:
    """An exact price or size; ``NaN``, infinities and non-strings are not."""
    if not isinstance(text, str):
        raise TypeError(f"expected a decimal string, got {text!r}")
    value = Decimal(text)
    if not value.is_finite():
        raise ValueError(f"not a finite number: {text!r}")
    return value


def _snapshot(msg: dict[str, Any]) -> Book:
    return {s: {_dec(p): _dec(q) for p, q in msg.get(f"{s}_dollars_fp") or []} for s in ("yes", "no")}


def _apply(sides: Book, msg: dict[str, Any]) -> str | None:
    """Apply one delta; returns a problem to report, if any."""
    side = msg["side"]
    if side not in sides:
        raise ValueError(f"side {side!r}")
    level = sides[side]
    price = _dec(msg["price_dollars"])
    size = level.get(price, Decimal(0)) + _dec(msg["delta_fp"])
    if size:
        level[price] = size
    else:
        level.pop(price, None)
    return f"{side} {price} went negative ({size})" if size < 0 else None
