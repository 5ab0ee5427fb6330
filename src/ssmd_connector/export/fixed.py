"""The books' numbers: exact integers of millionths, the decimal columns' own scale.

Why integers: every book value ends in a ``DECIMAL(p, 6)`` column, so a price or size with more
than six decimal places could never be written exactly — it is refused as it is read (never
rounded), and what remains is an integer count of millionths. Integers add, compare and hash
several times faster than ``Decimal``, and they become Arrow decimals without a conversion per
value: the column's unscaled integers *are* these integers (:func:`to_arrow`).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Context, Decimal

import pyarrow as pa
import pyarrow.compute as pc

from ..kalshi.book import TooPrecise, dec

SCALE = 6
"""Decimal places kept (the columns' scale, :mod:`.tables`)."""
ONE = 10**SCALE
"""One dollar, or one contract."""

_CONTEXT = Context(prec=80)
"""Room for every value :func:`~ssmd_connector.kalshi.book.dec` accepts (at most 37 digits):
scaling never rounds, whatever the caller's decimal context."""


class _Read(dict[str, int]):
    """Texts already read → their millionths (prices and sizes repeat endlessly): a hit is one
    dict lookup, with no Python call; a miss reads the text (:meth:`__missing__`). At most
    :data:`_SEEN_MAX` texts, then it starts again: a table small enough to stay in the core's
    cache (4,096 texts measured 9 % faster than 65,536, whose lookups went to memory, for all
    the misses a long tail of sizes brings)."""

    def __missing__(self, text: str) -> int:
        if type(text) is not str:
            return _parsed(text)
        # Kalshi's own form ("-12.37": digits, a point, at most six places) read as the integer
        # it spells; anything else is read by ``dec``, which knows every form and every refusal.
        whole, _, places = text.partition(".")
        digits = whole[1:] if whole[:1] == "-" else whole
        if (
            len(places) <= SCALE
            and len(digits) <= _FAST_DIGITS
            and places.isdigit()
            and digits.isdigit()
            and text.isascii()
        ):
            value = int(whole + places + _ZEROS[len(places)])
        else:
            value = _parsed(text)
        if len(self) >= _SEEN_MAX:
            self.clear()
        self[text] = value
        return value


MICROS = _Read()
"""``MICROS[text]``: a Kalshi fixed-point string as an exact count of millionths — the hot path's
:func:`micros`."""
_SEEN_MAX = 1 << 12


def micros(text: object) -> int:
    """A Kalshi fixed-point string as an exact count of millionths. What
    :func:`~ssmd_connector.kalshi.book.dec` refuses is refused (:class:`BookError`), and so is a
    value finer than a millionth (:class:`TooPrecise`: no column could keep it)."""
    return MICROS[text] if type(text) is str else _parsed(text)


_FAST_DIGITS = 18
_ZEROS = ["0" * (SCALE - n) for n in range(SCALE + 1)]


def _parsed(text: object) -> int:
    exact = _CONTEXT.scaleb(dec(text), SCALE)
    whole = int(exact)
    if whole != exact:
        raise TooPrecise(f"{text!r} is not a decimal that fits the book columns (at most {SCALE} decimal places)")
    return whole


def decimal(value: int) -> Decimal:
    """Millionths as the exact ``Decimal`` they stand for."""
    return _CONTEXT.scaleb(Decimal(value), -SCALE)


_UNSCALED = pa.decimal128(38, 0)
_INT64_MAX = 2**63 - 1


def to_arrow(values: Sequence[int | None], type_: pa.Decimal128Type) -> pa.Array:
    """Millionths (or ``None``) as an Arrow decimal array of scale 6: the integers become the
    column's unscaled values as they are. ``OverflowError`` for a value the type cannot hold (the
    caller names it)."""
    ints = pa.array(values, pa.int64())  # (OverflowError past 64 bits)
    limit = 10**type_.precision - 1
    if limit < _INT64_MAX and len(ints) > ints.null_count:
        lo_hi = pc.min_max(ints)
        if lo_hi["min"].as_py() < -limit or lo_hi["max"].as_py() > limit:
            raise OverflowError(f"a value has more than {type_.precision} digits")
    return ints.cast(_UNSCALED).view(type_)
