"""``ssmd book PATH --ticker T [--at TS]``: rebuild one market's order book from the archive.

Snapshots reset the book; deltas change a level by an exact fixed-point amount (``Decimal``).
Inconsistencies are reported: a delta before any snapshot, a level driven negative, a message
whose fields are not what Kalshi documents.

Price convention: by default Kalshi prices NO-side levels as NO (``use_yes_price: false``); a
subscription with ``use_yes_price: true`` prices them as YES (one minus the NO price). The
ledger records every subscription's parameters; the book reads them and shows NO bids in NO
prices either way. An archive whose order-book subscriptions disagree needs ``--yes-price`` /
``--no-price`` to say which applies; one from before the parameters were recorded is read with
Kalshi's default.
"""

from __future__ import annotations

from decimal import Decimal, DecimalException
from pathlib import Path
from typing import Any

from ..archive import Reader
from ..archive.line import json_object
from .coverage import ledger_files
from .read import Filter, outcome, records

Book = dict[str, dict[Decimal, Decimal]]


def convention(path: Path, reader: Reader) -> set[bool]:
    """The ``use_yes_price`` values the archive's order-book subscriptions were made with
    (``False`` for those that did not say: Kalshi's default)."""
    seen: set[bool] = set()
    for ledger in ledger_files(path):
        for _, line in reader.lines(ledger):
            ev = json_object(line)
            if ev is None or ev.get("event") != "subscribed" or ev.get("channel") != "orderbook_delta":
                continue
            params = ev.get("params")
            seen.add(bool(params.get("use_yes_price")) if isinstance(params, dict) else False)
    return seen


def book(path: Path, ticker: str, at: str | None, strict: bool = False, yes_price: bool | None = None) -> int:
    reader = Reader()
    if yes_price is None:
        found = convention(path, reader)
        if len(found) > 1:
            print(
                f"ssmd book: {path}: order books were subscribed both with and without use_yes_price: "
                "say which prices the NO side carries with --yes-price or --no-price"
            )
            return 2
        yes_price = found == {True}
    print(f"NO-side prices as recorded: {'YES prices (use_yes_price: true), shown here as NO' if yes_price else 'NO'}")
    sides: Book | None = None
    problems = 0
    snapshots = deltas = 0
    last_ts = ""
    for _, obj in records(path, Filter(end=at, ticker=ticker), reader):
        data = obj["data"]
        kind = data.get("type")
        msg = data.get("msg", {})
        try:
            if yes_price and isinstance(msg, dict):
                msg = _no_prices(msg)
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


def _no_prices(msg: dict[str, Any]) -> dict[str, Any]:
    """A message whose NO-side prices are YES prices, with NO prices (1 - p) instead."""
    out = dict(msg)
    if isinstance(levels := msg.get("no_dollars_fp"), list):
        out["no_dollars_fp"] = [[str(1 - _dec(p)), q] for p, q in levels]
    if msg.get("side") == "no" and "price_dollars" in msg:
        out["price_dollars"] = str(1 - _dec(msg["price_dollars"]))
    return out


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
