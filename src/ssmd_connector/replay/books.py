"""Order books at the replay clock, rebuilt from the archive's snapshots and deltas exactly.

Why: a client that subscribes to ``orderbook_delta`` at replay time *t* must first get the book as
it was at *t* — as Kalshi sends a snapshot on subscribe — and ``get_snapshot`` must answer the
same way. Levels are kept as the archive's fixed-point strings' exact values (``Decimal``) and
written back in Kalshi's format, so a client rebuilding from the replay gets the recorded book.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

Side = dict[Decimal, Decimal]


class Books:
    """Every market's book as of the last message applied."""

    def __init__(self) -> None:
        self._books: dict[str, tuple[str, Side, Side]] = {}
        """ticker → (market_id, yes bids, no bids)."""
        self.problems = 0
        """Messages that could not be applied (malformed, or a delta before any snapshot)."""

    def apply(self, kind: str, ticker: str, msg: bytes) -> None:
        if kind not in ("orderbook_snapshot", "orderbook_delta") or not ticker:
            return
        try:
            body = msgspec.json.decode(msg)
            if kind == "orderbook_snapshot":
                self._books[ticker] = (
                    str(body.get("market_id", "")),
                    _levels(body.get("yes_dollars_fp")),
                    _levels(body.get("no_dollars_fp")),
                )
                return
            book = self._books.get(ticker)
            if book is None:
                self.problems += 1
                return
            side = {"yes": book[1], "no": book[2]}[body["side"]]
            price = Decimal(body["price_dollars"])
            size = side.get(price, Decimal(0)) + Decimal(body["delta_fp"])
            if size > 0:
                side[price] = size
            else:
                side.pop(price, None)
        except (msgspec.DecodeError, KeyError, TypeError, InvalidOperation, AttributeError, IndexError, ValueError):
            self.problems += 1

    def snapshot(self, ticker: str) -> dict[str, Any] | None:
        """The ``msg`` of an ``orderbook_snapshot`` for ``ticker`` now; ``None`` for a market the
        archive has no book of yet."""
        book = self._books.get(ticker)
        if book is None:
            return None
        market_id, yes, no = book
        msg: dict[str, Any] = {"market_ticker": ticker, "market_id": market_id}
        for name, side in (("yes", yes), ("no", no)):
            if side:  # a side key is omitted when that side is empty, as Kalshi does
                msg[f"{name}_dollars_fp"] = [[_price(p), _size(q)] for p, q in sorted(side.items())]
        return msg


def _levels(levels: object) -> Side:
    out: Side = {}
    if isinstance(levels, list):
        for level in levels:
            price, size = Decimal(level[0]), Decimal(level[1])
            if size > 0:
                out[price] = size
    return out


def _price(p: Decimal) -> str:
    return f"{p:.4f}"


def _size(q: Decimal) -> str:
    return f"{q:.2f}"
