"""``ssmd book PATH --ticker T [--at TS]``: rebuild one market's order book from the archive.

Snapshots reset the book; deltas change a level by an exact fixed-point amount (``Decimal``).
Inconsistencies are reported: a delta before any snapshot, a level driven negative.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from .read import Filter, records


def book(path: Path, ticker: str, at: str | None) -> int:
    sides: dict[str, dict[Decimal, Decimal]] | None = None
    problems = 0
    snapshots = deltas = 0
    last_ts = ""
    for _, obj in records(path, Filter(end=at, ticker=ticker)):
        data = obj["data"]
        kind = data.get("type")
        msg = data.get("msg", {})
        if kind == "orderbook_snapshot":
            sides = {s: {Decimal(p): Decimal(q) for p, q in msg.get(f"{s}_dollars_fp", [])} for s in ("yes", "no")}
            snapshots += 1
        elif kind == "orderbook_delta":
            deltas += 1
            if sides is None:
                problems += 1
                print(f"{obj['ts']}: delta before any snapshot (sid {data.get('sid')}, seq {data.get('seq')})")
                continue
            level = sides[msg["side"]]
            price = Decimal(msg["price_dollars"])
            size = level.get(price, Decimal(0)) + Decimal(msg["delta_fp"])
            if size < 0:
                problems += 1
                print(f"{obj['ts']}: {msg['side']} {price} went negative ({size}) at seq {data.get('seq')}")
            if size:
                level[price] = size
            else:
                level.pop(price, None)
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
    return 1 if problems else 0
