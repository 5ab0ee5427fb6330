"""Order books at the replay clock, rebuilt from the archive's snapshots and deltas exactly.

Why: a client that subscribes to ``orderbook_delta`` at replay time *t* must first get the book as
it was at *t* — as Kalshi sends a snapshot on subscribe — and ``get_snapshot`` must answer the
same way. Levels are kept as the archive's fixed-point strings' exact values (``Decimal``) and
written back in Kalshi's format, so a client rebuilding from the replay gets the recorded book.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..kalshi.book import BookError, OrderBook, dec
from .source import Recorded


class Books:
    """Every market's book as of the last message applied."""

    def __init__(self) -> None:
        self._books: dict[str, OrderBook] = {}
        self.problems = 0
        """Messages that could not be applied (malformed, a delta before any snapshot, a level
        driven negative)."""

    def apply(self, m: Recorded) -> None:
        """Apply an archived message, if it is an order-book one; a delta uses the fields
        :mod:`.source` already decoded."""
        kind = m.kind
        if kind == "orderbook_delta":
            head = m.head
            book = self._books.get(head.market_ticker)
            if book is None:
                self.problems += 1
                return
            try:
                if book.change(head.side, dec(head.price_dollars), dec(head.delta_fp)) < 0:
                    self.problems += 1
            except BookError:
                self.problems += 1
        elif kind == "orderbook_snapshot" and m.head.market_ticker:
            try:
                body = msgspec.json.decode(m.msg)
                if not isinstance(body, dict):
                    raise BookError("not an object")  # noqa: TRY301
                self._books[m.head.market_ticker] = OrderBook.from_snapshot(body)
            except (msgspec.DecodeError, BookError):
                self.problems += 1

    def snapshot(self, ticker: str) -> dict[str, Any] | None:
        """The ``msg`` of an ``orderbook_snapshot`` for ``ticker`` now; ``None`` for a market the
        archive has no book of yet."""
        book = self._books.get(ticker)
        return None if book is None else book.snapshot_msg(ticker)
