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

from pathlib import Path

from ..archive import Reader
from ..archive.layout import ledger_files
from ..archive.line import json_object
from ..kalshi.book import BookError, OrderBook, no_prices
from .read import Filter, outcome, records


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
    sides: OrderBook | None = None
    problems = 0
    snapshots = deltas = 0
    last_ts = ""
    for _, obj in records(path, Filter(end=at, ticker=ticker), reader):
        data = obj["data"]
        kind = data.get("type")
        msg = data.get("msg", {})
        try:
            if yes_price and isinstance(msg, dict):
                msg = no_prices(msg)
            if kind == "orderbook_snapshot":
                sides = OrderBook.from_snapshot(msg)
                snapshots += 1
            elif kind == "orderbook_delta":
                deltas += 1
                if sides is None:
                    problems += 1
                    print(f"{obj['ts']}: delta before any snapshot (sid {data.get('sid')}, seq {data.get('seq')})")
                    continue
                problem = sides.apply_delta(msg)
                if problem:
                    problems += 1
                    print(f"{obj['ts']}: {problem} at seq {data.get('seq')}")
        except (BookError, AttributeError) as exc:
            problems += 1
            print(f"{obj['ts']}: malformed {kind} message ({type(exc).__name__}: {exc}) at seq {data.get('seq')}")
        last_ts = obj["ts"]
    print(f"{ticker}: {snapshots} snapshot(s), {deltas} delta(s), as of {last_ts or '-'}")
    if sides is not None:
        for side in ("yes", "no"):
            levels = sides.top(side, 10)
            print(f"  {side} bids: " + (", ".join(f"{p}x{q}" for p, q in levels) or "(empty)"))
        yes, no = sides.best("yes"), sides.best("no")
        if yes and no:
            print(f"  best yes bid {yes[0]}, yes ask {1 - no[0]} (1 - best no bid)")
    print(f"{problems} inconsistenc{'y' if problems == 1 else 'ies'}")
    return 1 if problems else outcome(reader, strict)
