"""``book_deltas``, ``quotes`` and ``book_snapshots``: the exact books, rebuilt as the archive is read.

Why here and not in SQL: a book is state — levels added and removed, a best bid that must be found
again when its level empties — and it is exact only if every change is applied once, in order, as
a decimal. The model is the project's one :class:`~ssmd_connector.kalshi.book.OrderBook`; this
module keeps, per market, whether that book is *known*. It is not before the market's first
snapshot, after a sequence gap or a disconnect that names it (until the next snapshot), after an
order-book message that is not in the documented shape, or once a level went negative (a desync
the book cannot explain). A delta while the book is unknown is written with ``book_known = false``
and no ``size_after``, and is not applied: no row ever comes from a wrong book.

Prices are kept in Kalshi's default terms (NO levels priced as NO): messages of ``use_yes_price``
subscriptions are turned back first. The best bid of each side is kept incrementally (a new level
above it, or its own level changing), so finding the top costs a comparison, not a scan.

Numbers are exact integer millionths (:mod:`.fixed`); rows are buffered flat (a row's values one
after another, :data:`~.tables.WIDTH` per row), so no object outlives a row but its values.
"""

from __future__ import annotations

from ..kalshi.book import Book, BookError, fill, no_prices
from .fixed import MICROS, ONE, micros
from .frames import DeltaMsg, SnapshotMsg
from .tables import ValueTooPrecise

SIDES = frozenset({"yes", "no"})


class _Market:
    __slots__ = ("best", "book", "dirty", "held_back")

    def __init__(self) -> None:
        self.book: Book[int] | None = None
        self.best: dict[str, int | None] = {"yes": None, "no": None}
        """Each side's best bid, kept as deltas arrive."""
        self.dirty = False
        self.held_back: ValueTooPrecise | None = None
        """A value finer than the columns came before ``--from``: the refusal, if this book is
        still not replaced by a snapshot when the window opens."""


class Books:
    """Per market: the book and its top. Rows (flat, in the tables' column order; prices and sizes
    in exact millionths) go to lists the caller reads and empties."""

    def __init__(self, depth: int, yes_price: bool) -> None:
        self.depth = depth
        self.yes_price = yes_price
        self.markets: dict[str, _Market] = {}
        self.emit = True
        """False before the window opens: books are kept, no row is written."""
        self.deltas: list[object] = []
        self.quotes: list[object] = []
        self.snapshots: list[object] = []
        self.unknown_deltas = 0
        self.negative = 0

    def _market(self, ticker: str) -> _Market:
        st = self.markets.get(ticker)
        if st is None:
            st = self.markets[ticker] = _Market()
        return st

    # -- messages --------------------------------------------------------------------------
    def snapshot(self, ts: str, m: SnapshotMsg) -> None:
        """An exchange snapshot: the book is known from here, whatever came before."""
        msg = {"yes_dollars_fp": m.yes_dollars_fp, "no_dollars_fp": m.no_dollars_fp}
        book = Book[int](m.market_id)
        fill(book, no_prices(msg) if self.yes_price else msg, micros)
        st = self._market(m.market_ticker)
        st.book = book
        st.held_back = None
        st.best["yes"] = max(book.yes) if book.yes else None
        st.best["no"] = max(book.no) if book.no else None
        st.dirty = False
        if self.emit:
            self._state(ts, m.ts_ms, m.market_ticker, "exchange", st)

    def open_window(self, ts: str) -> None:
        """``--from``: every book's state at ``ts`` — a known one as snapshot rows (``book_deltas``,
        a ``window`` row in ``book_snapshots``, a quote), an unknown one as its marker rows — so the
        window's tables need nothing from before it."""
        self.emit = True
        for ticker, st in self.markets.items():
            if st.held_back is not None:
                raise ValueTooPrecise(f"{st.held_back}, in the book at --from {ts}") from None
            if st.book is None:
                self._unknown_rows(ts, ticker)
            else:
                self._state(ts, None, ticker, "window", st)

    def _state(self, ts: str, ms: int | None, t: str, source: str, st: _Market) -> None:
        """A whole book as ``book_deltas`` snapshot rows, a ``book_snapshots`` row and a quote."""
        book = st.book
        assert book is not None
        d = self.deltas
        rows = 0
        for side in ("yes", "no"):
            for price, size in sorted(book.side(side).items()):
                d += (ts, ms, t, side, price, size, size, True, True)
                rows += 1
        if not rows:  # an empty book: one row says so, or the table alone could not reset it
            d += (ts, ms, t, None, None, None, None, True, True)
        self._snapshot_row(ts, ms, t, source, book)
        self._quote(ts, ms, t, st)

    def delta(self, ts: str, m: DeltaMsg) -> None:
        """A delta, applied if the book is known. :class:`BookError` for one not in the documented
        shape (a price or size that is not a finite decimal, an unknown side): nothing is changed."""
        t = m.market_ticker
        st = self.markets.get(t)
        if st is None:
            st = self._market(t)
        book = st.book
        side = m.side
        if side not in SIDES:
            raise BookError(f"side: expected 'yes' or 'no', got {side!r}")
        price = MICROS[m.price_dollars or ""]  # (a lookup: prices repeat endlessly)
        if self.yes_price and side == "no":
            price = ONE - price
        change = MICROS[m.delta_fp]
        if book is None:
            self.unknown_deltas += 1
            if self.emit:
                self.deltas += (ts, m.ts_ms, t, side, price, change, None, False, False)
            return
        size = book.change(side, price, change)
        if size < 0:  # the book cannot explain this: it is no longer known
            self.negative += 1
            self.invalidate(ts, t)
            self.unknown_deltas += 1
            if self.emit:
                self.deltas += (ts, m.ts_ms, t, side, price, change, None, False, False)
            return
        st.dirty = True
        if self.emit:
            self.deltas += (ts, m.ts_ms, t, side, price, change, size, False, True)
        best = st.best[side]
        if best is None or price > best:
            if not size:
                return
            st.best[side] = price
        elif price == best:
            if not size:
                levels = book.side(side)
                st.best[side] = max(levels) if levels else None
            elif not change:
                return
        else:
            return
        if self.emit:
            self._quote(ts, m.ts_ms, t, st)

    def hold_back(self, ts: str, ticker: str, refusal: ValueTooPrecise) -> None:
        """Before ``--from``: a message with a value finer than the columns keep. The market's book
        is not known from here; if no snapshot replaces it before the window opens, ``refusal`` is
        raised then (its rows would need that value) — a book it never reaches is no error."""
        self.invalidate(ts, ticker)
        self._market(ticker).held_back = refusal

    def invalidate(self, ts: str, ticker: str) -> None:
        """The market's book is not known from ``ts`` until its next snapshot: a ``quotes`` row and a
        ``book_deltas`` marker row (no side, not a snapshot, ``book_known`` false) say so."""
        st = self.markets.get(ticker)
        if st is None or st.book is None:
            return
        st.book = None
        st.best["yes"] = st.best["no"] = None
        st.dirty = False
        if self.emit:
            self._unknown_rows(ts, ticker)

    def _unknown_rows(self, ts: str, ticker: str) -> None:
        self.quotes += (ts, None, ticker, False, None, None, None, None, None, None, None, None)
        self.deltas += (ts, None, ticker, None, None, None, None, False, False)

    def tick(self, ts: str) -> None:
        """A ``book_snapshots`` row at ``ts`` for every known book that changed since its last row."""
        for ticker, st in self.markets.items():
            if st.dirty and st.book is not None:
                st.dirty = False
                if self.emit:
                    self._snapshot_row(ts, None, ticker, "interval", st.book)

    # -- rows ------------------------------------------------------------------------------
    def _snapshot_row(self, ts: str, ms: int | None, ticker: str, source: str, book: Book[int]) -> None:
        depth = self.depth
        self.snapshots += (ts, ms, ticker, source, book.top("yes", depth), book.top("no", depth))

    def _quote(self, ts: str, ms: int | None, ticker: str, st: _Market) -> None:
        book = st.book
        assert book is not None
        yb, nb = st.best["yes"], st.best["no"]
        ybs = book.yes[yb] if yb is not None else None
        nbs = book.no[nb] if nb is not None else None
        self.quotes += (
            ts,
            ms,
            ticker,
            True,
            yb,
            ybs,
            None if nb is None else ONE - nb,  # a YES ask is one minus the best NO bid
            nbs,
            nb,
            nbs,
            None if yb is None else ONE - yb,
            ybs,
        )
