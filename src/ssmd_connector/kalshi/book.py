"""One market's Kalshi order book, rebuilt exactly from ``orderbook_snapshot`` and ``orderbook_delta``.

Why one model: ``ssmd book``, the replay server and the dataset export all rebuild books from
recorded messages, and the hard parts are the same everywhere — prices and sizes are fixed-point
strings (sub-penny ticks, fractional counts) that must never pass through a float, both sides are
*bids* (YES bids and NO bids; a YES ask is one minus the best NO bid), and a subscription made with
``use_yes_price: true`` prices the NO side in YES terms. Sans I/O: messages in, levels out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, DecimalException
from typing import Any, Generic, TypeVar

SIDES = ("yes", "no")

N = TypeVar("N", Decimal, int)
"""A book's number: ``Decimal``, or an ``int`` count of a fixed fraction (the export's columns'
scale, :mod:`ssmd_connector.export.fixed`) — both exact."""

Levels = dict[Decimal, Decimal]
"""price → size, both exact."""


class BookError(ValueError):
    """A message whose fields are not what Kalshi documents (missing, not a decimal string, an
    unknown side)."""


class TooPrecise(BookError):
    """A price or size with more decimal places than any Kalshi sends (:data:`MAX_EXPONENT`): not
    a book a decimal column could hold exactly (the export refuses it, never rounds it)."""


MAX_EXPONENT = 18
"""Kalshi's prices are below one dollar and its counts below 10^12, with a few decimal places: a
value whose magnitude is beyond 10^±18, or with more than 18 decimal places, is not one of them —
and would overflow exact arithmetic (and a 128-bit decimal column: Arrow writes a value of more
than 38 digits as 0). Within these bounds every sum of such values has at most 37 digits."""

_SEEN: dict[object, Decimal] = {}
"""Texts already read (prices and sizes repeat endlessly): a lookup instead of a parse."""
_SEEN_MAX = 1 << 14


def dec(text: object) -> Decimal:
    """An exact price or size from Kalshi's fixed-point string; ``NaN``, infinities and
    non-strings are refused."""
    value = _SEEN.get(text) if type(text) is str else None
    if value is not None:
        return value
    value = _parse(text)
    if len(_SEEN) >= _SEEN_MAX:
        _SEEN.clear()
    _SEEN[text] = value
    return value


def _parse(text: object) -> Decimal:
    if not isinstance(text, str):
        raise BookError(f"expected a decimal string, got {text!r}")
    try:
        value = Decimal(text)
    except DecimalException:
        raise BookError(f"not a decimal: {text!r}") from None
    if not value.is_finite():
        raise BookError(f"not a finite number: {text!r}")
    if value and not -MAX_EXPONENT <= value.adjusted() <= MAX_EXPONENT:
        raise BookError(f"out of range for a price or size: {text!r}")
    dot = text.find(".")
    if (dot >= 0 and len(text) - dot > MAX_EXPONENT + 1) or "e" in text or "E" in text:  # (as_tuple is slow)
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -MAX_EXPONENT:
            raise TooPrecise(f"more than {MAX_EXPONENT} decimal places for a price or size: {text!r}")
    return value


def price_text(p: Decimal) -> str:
    """A price as Kalshi writes it (dollars, four places; more if the value needs them)."""
    text = f"{p:.4f}"
    return text if Decimal(text) == p else format(p, "f")


def size_text(q: Decimal) -> str:
    """A size as Kalshi writes it (contracts, two places; more if the value needs them)."""
    text = f"{q:.2f}"
    return text if Decimal(text) == q else format(q, "f")


@dataclass(slots=True)
class Book(Generic[N]):
    """YES bids and NO bids of one market, in any exact number type: the rules every book follows
    (both sides are bids; a level changes by an exact amount and is gone at exactly zero)."""

    market_id: str = ""
    yes: dict[N, N] = field(default_factory=dict)
    no: dict[N, N] = field(default_factory=dict)

    def side(self, side: object) -> dict[N, N]:
        if side == "yes":
            return self.yes
        if side == "no":
            return self.no
        raise BookError(f"side: expected 'yes' or 'no', got {side!r}")

    def change(self, side: object, price: N, delta: N) -> N:
        """Change one level by an exact amount and return its size after; a level at exactly zero
        is removed. Already-parsed values: the export's hot path parses each price once."""
        level = self.yes if side == "yes" else self.side(side)  # (the common case without a call)
        size = level.get(price, 0) + delta
        if size:
            level[price] = size
        else:
            level.pop(price, None)
        return size

    def best(self, side: object) -> tuple[N, N] | None:
        """The best (highest) bid of a side with its size, or ``None`` for an empty side."""
        levels = self.side(side)
        if not levels:
            return None
        p = max(levels)
        return p, levels[p]

    def top(self, side: object, depth: int) -> list[tuple[N, N]]:
        """A side's best ``depth`` levels, best first."""
        return sorted(self.side(side).items(), reverse=True)[:depth]


def fill(book: Book[N], msg: Mapping[str, Any], parse: Callable[[object], N]) -> None:
    """Set ``book``'s levels to what an ``orderbook_snapshot`` message states (a missing side key
    is an empty side), each price and size read by ``parse``."""
    for side in SIDES:
        levels = msg.get(f"{side}_dollars_fp") or []
        if not isinstance(levels, list):
            raise BookError(f"{side}_dollars_fp: expected a list of [price, size], got {levels!r}")
        target = book.side(side)
        target.clear()
        for level in levels:
            if not isinstance(level, list) or len(level) != 2:
                raise BookError(f"{side}_dollars_fp: expected [price, size], got {level!r}")
            size = parse(level[1])
            if size:
                target[parse(level[0])] = size


@dataclass(slots=True)
class OrderBook(Book[Decimal]):
    """A book in ``Decimal``, read from and written as Kalshi's messages."""

    @classmethod
    def from_snapshot(cls, msg: Mapping[str, Any]) -> OrderBook:
        """The book an ``orderbook_snapshot`` message states (a missing side key is an empty side)."""
        book = cls(market_id=str(msg.get("market_id", "")))
        fill(book, msg, dec)
        return book

    def apply_delta(self, msg: Mapping[str, Any]) -> str | None:
        """Change one level by the delta's exact amount. Returns a problem to report — a level
        driven below zero (kept, so the inconsistency stays visible) — or ``None``."""
        return self.apply_fields(msg.get("side"), msg.get("price_dollars"), msg.get("delta_fp"))

    def apply_fields(self, side: object, price_dollars: object, delta_fp: object) -> str | None:
        """:meth:`apply_delta` from the delta's three fields, for callers that decoded them."""
        price = dec(price_dollars)
        size = self.change(side, price, dec(delta_fp))
        return f"{side} {price} went negative ({size})" if size < 0 else None

    def snapshot_msg(self, ticker: str) -> dict[str, Any]:
        """The ``msg`` of an ``orderbook_snapshot`` stating this book, in Kalshi's format."""
        msg: dict[str, Any] = {"market_ticker": ticker, "market_id": self.market_id}
        for side in SIDES:
            levels = self.side(side)
            if levels:  # a side key is omitted when that side is empty, as Kalshi does
                msg[f"{side}_dollars_fp"] = [[price_text(p), size_text(q)] for p, q in sorted(levels.items())]
        return msg


def yes_prices(msg: Mapping[str, Any]) -> dict[str, Any]:
    """An order-book message in Kalshi's default terms, with its NO-side prices given as YES prices
    (one minus the NO price) — what a ``use_yes_price: true`` subscription receives. The inverse of
    :func:`no_prices` (the conversion is its own inverse)."""
    return no_prices(msg)


def no_prices(msg: Mapping[str, Any]) -> dict[str, Any]:
    """A message from a ``use_yes_price: true`` subscription, with its NO-side prices turned back
    into NO prices (one minus the YES price), so every book is kept in Kalshi's default terms."""
    out = dict(msg)
    levels = msg.get("no_dollars_fp")
    if isinstance(levels, list):
        out["no_dollars_fp"] = [[price_text(1 - dec(p)), q] for p, q in levels]
    if msg.get("side") == "no" and "price_dollars" in msg:
        out["price_dollars"] = price_text(1 - dec(msg["price_dollars"]))
    return out
