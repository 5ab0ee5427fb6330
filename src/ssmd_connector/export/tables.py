"""The tables' columns, their Arrow types, and how buffered Python values become Arrow arrays.

Exactness: prices and quantities are Parquet ``DECIMAL`` columns (Arrow ``decimal128``), built by
Arrow's own string-to-decimal cast from the exact text Kalshi sent, or from the books' exact
integer millionths (:mod:`.fixed`): never a float. The cast refuses a value that does not fit the column's scale instead
of rounding it; :class:`ValueTooPrecise` names it. Decimals, not strings, because DuckDB and polars
read ``DECIMAL`` as a number (sums, comparisons, ``ORDER BY`` work as-is), and no float ever
enters a query unless the user casts. Scales: Kalshi prices have at most 4 places (sub-penny
ticks), sizes 2 (fractional contracts); the columns keep 6 for both, room for finer ticks.

Times: the receive time (the archive's ``ts``, microseconds) as ``timestamp[us, UTC]``; the
exchange's own time (``ts_ms``) as ``timestamp[ms, UTC]``; lifecycle times (seconds) as
``timestamp[s, UTC]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .fixed import decimal, to_arrow

PRICE = pa.decimal128(18, 6)
SIZE = pa.decimal128(24, 6)
RECEIVED = pa.timestamp("us", tz="UTC")
EXCHANGE = pa.timestamp("ms", tz="UTC")
SECONDS = pa.timestamp("s", tz="UTC")
LEVEL = pa.struct([("price", PRICE), ("size", SIZE)])
LEVELS = pa.list_(LEVEL)


class NotExportable(ValueError):
    """A value no column can hold as it is: the export stops (never writes it changed)."""


class ValueTooPrecise(NotExportable):
    """A value with more decimal places than its column keeps (never rounded)."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: pa.DataType
    source: str
    """How the buffered values are given: ``ts`` (archive time text), ``ms`` / ``s`` (integers),
    ``dec`` (decimal text as Kalshi sent it, ``""`` or ``None`` for null), ``micros`` (integer
    millionths or ``None``: what the books computed), ``levels`` (lists of ``(price, size)``
    pairs in millionths), or ``plain`` (Python values of the column's type)."""


def _c(name: str, type_: pa.DataType, source: str = "plain") -> Column:
    return Column(name, type_, source)


_HEAD = [_c("ts", RECEIVED, "ts"), _c("exchange_ts", EXCHANGE, "ms"), _c("market", pa.string())]

TABLES: dict[str, list[Column]] = {
    "trades": [
        *_HEAD,
        _c("trade_id", pa.string()),
        _c("yes_price", PRICE, "dec"),
        _c("no_price", PRICE, "dec"),
        _c("count", SIZE, "dec"),
        _c("taker_side", pa.string()),
        _c("taker_outcome_side", pa.string()),
        _c("taker_book_side", pa.string()),
        _c("is_block_trade", pa.bool_()),
    ],
    "book_deltas": [
        *_HEAD,
        _c("side", pa.string()),
        _c("price", PRICE, "micros"),
        _c("change", SIZE, "micros"),
        _c("size_after", SIZE, "micros"),
        _c("is_snapshot", pa.bool_()),
        _c("book_known", pa.bool_()),
    ],
    "book_snapshots": [
        *_HEAD,
        _c("source", pa.string()),
        _c("yes_bids", LEVELS, "levels"),
        _c("no_bids", LEVELS, "levels"),
    ],
    "quotes": [
        *_HEAD,
        _c("book_known", pa.bool_()),
        _c("yes_bid", PRICE, "micros"),
        _c("yes_bid_size", SIZE, "micros"),
        _c("yes_ask", PRICE, "micros"),
        _c("yes_ask_size", SIZE, "micros"),
        _c("no_bid", PRICE, "micros"),
        _c("no_bid_size", SIZE, "micros"),
        _c("no_ask", PRICE, "micros"),
        _c("no_ask_size", SIZE, "micros"),
    ],
    "tickers": [
        *_HEAD,
        _c("price", PRICE, "dec"),
        _c("yes_bid", PRICE, "dec"),
        _c("yes_ask", PRICE, "dec"),
        _c("yes_bid_size", SIZE, "dec"),
        _c("yes_ask_size", SIZE, "dec"),
        _c("last_trade_size", SIZE, "dec"),
        _c("volume", SIZE, "dec"),
        _c("open_interest", SIZE, "dec"),
        _c("dollar_volume", pa.int64()),
        _c("dollar_open_interest", pa.int64()),
    ],
    "lifecycle": [
        *_HEAD,
        _c("type", pa.string()),
        _c("event_type", pa.string()),
        _c("event_ticker", pa.string()),
        _c("series_ticker", pa.string()),
        _c("title", pa.string()),
        _c("open_ts", SECONDS, "s"),
        _c("close_ts", SECONDS, "s"),
        _c("determination_ts", SECONDS, "s"),
        _c("settled_ts", SECONDS, "s"),
        _c("result", pa.string()),
        _c("settlement_value", PRICE, "dec"),
        _c("is_deactivated", pa.bool_()),
        _c("price_level_structure", pa.string()),
        _c("price_ranges", pa.string()),
        _c("additional_metadata", pa.string()),
    ],
    "coverage": [
        _c("market", pa.string()),
        _c("series", pa.string()),
        _c("kind", pa.string()),
        _c("start", RECEIVED, "ts"),
        _c("end", RECEIVED, "ts"),
        _c("created", RECEIVED, "ts"),
        _c("status", pa.string()),
        _c("gaps", pa.int64()),
        _c("disconnects", pa.int64()),
    ],
}
"""Every table's columns, in order. ``ts`` is always the receive time (``coverage``: ``start``)."""

SCHEMAS = {name: pa.schema([(c.name, c.type) for c in cols]) for name, cols in TABLES.items()}
WIDTH = {name: len(cols) for name, cols in TABLES.items()}
"""Values per row: rows are buffered flat, a row's values one after another (no tuple per row)."""


def _decimals(values: Sequence[Any], type_: pa.DataType, column: str) -> pa.Array:
    text = pa.array(values, pa.string())
    if text.null_count < len(text):  # Kalshi sends "" for a price never set (a market never traded)
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
        longest = pc.max(pc.utf8_length(text)).as_py()  # (None: every text was "")
        if (longest or 0) > _SHORT or _has_exponent(text):
            _check_digits(values, type_, column)  # (rare: one text at a time, only then)
    try:
        return text.cast(type_)
    except pa.ArrowInvalid:
        _name_refused(values, type_, column, lambda v: pa.array([v], pa.string()).cast(type_))
        raise


_SHORT = 40
"""A decimal text this short, without an exponent, has at most 38 digits."""


def _has_exponent(text: pa.StringArray) -> bool:
    """Whether any text may have an exponent: an ``e`` or ``E`` anywhere in the array's characters
    (one byte search over them all; bytes outside the array only make the answer a careful yes)."""
    data = text.buffers()[2]
    raw = data.to_pybytes() if data is not None else b""
    return b"e" in raw or b"E" in raw


def _check_digits(values: Sequence[Any], type_: pa.DataType, column: str) -> None:
    """Refuse a text of more than 38 digits, or scaled past 38 places: Arrow's cast
    writes such a value as 0 instead of refusing it (pyarrow 26, measured)."""
    for value in values:
        if not value:
            continue
        try:
            digits = Decimal(value).as_tuple()
        except ArithmeticError:
            continue  # (not a number: the cast refuses it)
        if isinstance(digits.exponent, int) and (len(digits.digits) > 38 or digits.exponent < -38):
            raise _refused(value, type_, column)


def _micros(values: Sequence[int | None], type_: pa.Decimal128Type, column: str) -> pa.Array:
    """The books' millionths into Arrow as they are (:func:`.fixed.to_arrow`); one too large for
    the column is named (every input is bounded by :func:`~ssmd_connector.kalshi.book.dec`, but a
    sum can pass a column's digits)."""
    try:
        return to_arrow(values, type_)
    except OverflowError:
        exact = [None if v is None else decimal(v) for v in values]
    try:  # (rare: a value past 64 bits, or past the column's digits)
        return pa.array(exact, type_)
    except pa.ArrowInvalid:
        _name_refused(exact, type_, column, lambda v: pa.array([v], type_))
        raise


def _name_refused(values: Sequence[Any], type_: pa.DataType, column: str, one: Callable[[Any], object]) -> None:
    """After Arrow refused a column: the value it refuses, one at a time, named (a zero, empty or
    null value always fits)."""
    for value in values:
        if value:
            try:
                one(value)
            except pa.ArrowInvalid:
                raise _refused(value, type_, column) from None


def _refused(value: object, type_: pa.DataType, column: str) -> ValueTooPrecise:
    return ValueTooPrecise(f"{column}: {str(value)!r} is not a decimal that fits {type_} (never rounded)")


def _is_time(text: object) -> bool:
    try:
        pa.scalar(text, pa.string()).cast(RECEIVED)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True


def _levels(rows: Sequence[Sequence[tuple[Any, Any]] | None], column: str) -> pa.Array:
    offsets = [0]
    prices: list[Any] = []
    sizes: list[Any] = []
    for levels in rows:
        for p, q in levels or ():
            prices.append(p)
            sizes.append(q)
        offsets.append(len(prices))
    inner = pa.StructArray.from_arrays(
        [_micros(prices, PRICE, column), _micros(sizes, SIZE, column)], fields=list(LEVEL)
    )
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), inner, type=LEVELS)


def array(column: Column, values: Sequence[Any]) -> pa.Array:
    """Buffered values → one Arrow array of the column's type."""
    source = column.source
    if source == "ts":
        try:
            return pa.array(values, pa.string()).cast(column.type)
        except pa.ArrowInvalid:  # (the reader lets only archive-format times through: never seen)
            bad = next(v for v in values if v is not None and not _is_time(v))
            raise NotExportable(f"{column.name}: {bad!r} is not a receive time") from None
    if source in ("ms", "s"):
        return pa.array(values, pa.int64()).cast(column.type)
    if source == "micros":
        return _micros(values, column.type, column.name)
    if source == "dec":
        return _decimals(values, column.type, column.name)
    if source == "levels":
        return _levels(values, column.name)
    return pa.array(values, column.type)


def batch(table: str, buffers: Sequence[Sequence[Any]]) -> pa.RecordBatch:
    """One record batch of ``table`` from its buffered columns (in :data:`TABLES` order)."""
    cols = TABLES[table]
    return pa.RecordBatch.from_arrays([array(c, v) for c, v in zip(cols, buffers, strict=True)], schema=SCHEMAS[table])
