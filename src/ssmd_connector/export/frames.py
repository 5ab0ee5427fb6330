"""Archive lines decoded a block at a time into typed structs, one struct per message type.

Why typed and batched: the export reads every line of an archive, so the cost per line is the
export's speed. msgspec decodes a whole block of lines in one call (``decode_lines``) straight
into a tagged union of structs — each market-data type's holding only the members its table uses
(unknown members are skipped without being built; a struct of every member for every type cost a
third more to decode and free).

A block the union does not take whole — a frame of a type without a table (another channel's), a
reply whose ``msg`` is an array, a member not in the documented type, a torn or corrupt line — is
read again with each frame's ``msg`` left as raw JSON, then each frame of a known type decoded by
*the same* struct (so whether a message is kept never depends on the lines around it), and other
types passed over; if even that fails, line by line. A market-data message not in its documented
shape is reported with file and line number, like every line that is not an archive line at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar, get_args, get_type_hints

import msgspec

from ..archive.line import (
    MAX_JSON_DEPTH,
    SHALLOW_BYTES,
    TS_WIDTH,
    json_object,
    parse_line,
    within_depth,
    written_ts,
)
from ..archive.reading import Reader, one_value_per_line
from ..kalshi.wire import (
    ERROR,
    EVENT_LIFECYCLE,
    MARKET_LIFECYCLE_V2,
    MULTIVARIATE_MARKET_LIFECYCLE,
    OK,
    ORDERBOOK_DELTA,
    ORDERBOOK_SNAPSHOT,
    SUBSCRIBED,
    TICKER,
    TRADE,
    UNSUBSCRIBED,
)


class DeltaMsg(msgspec.Struct, gc=False):
    market_ticker: str = ""
    ts_ms: int | None = None
    price_dollars: str | None = None
    delta_fp: str = ""
    side: str = ""


class SnapshotMsg(msgspec.Struct, gc=False):
    market_ticker: str = ""
    market_id: str = ""
    ts_ms: int | None = None
    yes_dollars_fp: list[list[str]] | None = None
    no_dollars_fp: list[list[str]] | None = None


class TradeMsg(msgspec.Struct, gc=False):
    market_ticker: str = ""
    ts_ms: int | None = None
    trade_id: str | None = None
    yes_price_dollars: str | None = None
    no_price_dollars: str | None = None
    count_fp: str | None = None
    taker_side: str | None = None
    taker_outcome_side: str | None = None
    taker_book_side: str | None = None
    is_block_trade: bool | None = None


class TickerMsg(msgspec.Struct, gc=False):
    market_ticker: str = ""
    ts_ms: int | None = None
    price_dollars: str | None = None
    yes_bid_dollars: str | None = None
    yes_ask_dollars: str | None = None
    yes_bid_size_fp: str | None = None
    yes_ask_size_fp: str | None = None
    last_trade_size_fp: str | None = None
    volume_fp: str | None = None
    open_interest_fp: str | None = None
    dollar_volume: int | None = None
    dollar_open_interest: int | None = None


class LifecycleMsg(msgspec.Struct, gc=False):
    market_ticker: str = ""
    ts_ms: int | None = None
    event_type: str | None = None
    event_ticker: str | None = None
    series_ticker: str | None = None
    title: str | None = None
    open_ts: int | None = None
    close_ts: int | None = None
    determination_ts: int | None = None
    settled_ts: int | None = None
    result: str | None = None
    settlement_value: str | None = None
    is_deactivated: bool | None = None
    price_level_structure: str | None = None
    # JSON kept as sent. Plain ``Raw`` with an empty default: msgspec (0.23) reads ``Raw | None`` as
    # "null only", which refused every message carrying them (every ``created``).
    price_ranges: msgspec.Raw = msgspec.Raw()
    additional_metadata: msgspec.Raw = msgspec.Raw()


# Each market-data type's frame holds only its own members.
class _Tagged(msgspec.Struct, gc=False, tag_field="type"):
    sid: int | None = None
    seq: int | None = None
    kind: ClassVar[str] = ""
    """The frame's ``type``: its tag (set below, for every frame struct)."""


class DeltaFrame(_Tagged, tag=ORDERBOOK_DELTA):
    msg: DeltaMsg | None = None


class SnapshotFrame(_Tagged, tag=ORDERBOOK_SNAPSHOT):
    msg: SnapshotMsg | None = None


class TradeFrame(_Tagged, tag=TRADE):
    msg: TradeMsg | None = None


class TickerFrame(_Tagged, tag=TICKER):
    msg: TickerMsg | None = None


class _Lifecycle(_Tagged):
    msg: LifecycleMsg | None = None


class MarketLifecycleFrame(_Lifecycle, tag=MARKET_LIFECYCLE_V2):
    """A market created, opened, closed, determined, settled, deactivated, its metadata changed."""


class MultivariateLifecycleFrame(_Lifecycle, tag=MULTIVARIATE_MARKET_LIFECYCLE):
    """The same, for a combination (multivariate) market."""


class EventLifecycleFrame(_Lifecycle, tag=EVENT_LIFECYCLE):
    """A new event, with its series."""


class FeeUpdateFrame(_Lifecycle, tag="event_fee_update"):
    """An event's fee changed."""


class _Reply(_Tagged):
    """A reply to a command: not market data (its ``msg``, of any shape, is passed over)."""

    msg: ClassVar[None] = None


class SubscribedFrame(_Reply, tag=SUBSCRIBED):
    """A subscription made."""


class UnsubscribedFrame(_Reply, tag=UNSUBSCRIBED):
    """A subscription ended."""


class OkFrame(_Reply, tag=OK):
    """A command done (``list_subscriptions``' carries an array)."""


class ErrorFrame(_Reply, tag=ERROR):
    """A command refused."""


DataFrame = (
    DeltaFrame
    | SnapshotFrame
    | TradeFrame
    | TickerFrame
    | MarketLifecycleFrame
    | MultivariateLifecycleFrame
    | EventLifecycleFrame
    | FeeUpdateFrame
)
AnyFrame = DataFrame | SubscribedFrame | UnsubscribedFrame | OkFrame | ErrorFrame
for _frame in get_args(AnyFrame):
    _frame.kind = _frame.__struct_config__.tag
LIFECYCLE_TYPES = frozenset(f.kind for f in get_args(DataFrame) if issubclass(f, _Lifecycle))
"""Lifecycle message types: a market's, a combination market's, an event's, an event's fees."""


ArchiveTime = Annotated[str, msgspec.Meta(min_length=TS_WIDTH, max_length=TS_WIDTH)]
"""A line's receive time as the writer writes it (the export compares times as text): a line with
a time of another length is read again line by line, its time put in that form
(:func:`~ssmd_connector.archive.line.written_ts`)."""


class Line(msgspec.Struct, gc=False):
    """An archive line; ``data`` is a string for lines stored with ``enc`` (not JSON frames)."""

    ts: ArchiveTime
    data: AnyFrame | str | None = None


MALFORMED_BOOK = "(malformed order-book message)"
"""The type given to an order-book message not in the documented shape: its market's book is no
longer known (never silently left as it was)."""


class MalformedBook(msgspec.Struct, gc=False):
    """Stands for an order-book message not in the documented shape (never decoded from JSON)."""

    msg: DeltaMsg
    kind: ClassVar[str] = MALFORMED_BOOK
    sid: ClassVar[None] = None
    seq: ClassVar[None] = None


BOOK_TYPES = frozenset({ORDERBOOK_SNAPSHOT, ORDERBOOK_DELTA})


class _RawFrame(msgspec.Struct, gc=False):
    kind: str = msgspec.field(name="type", default="")
    sid: int | None = None
    seq: int | None = None
    msg: msgspec.Raw = msgspec.Raw()


class _RawLine(msgspec.Struct, gc=False):
    """A line with its frame's ``msg`` not yet decoded (a block the union refused)."""

    ts: ArchiveTime
    data: _RawFrame | str | None = None


_TYPED: dict[str, tuple[type[DataFrame], msgspec.json.Decoder[Any]]] = {
    f.kind: (f, msgspec.json.Decoder(get_type_hints(f)["msg"])) for f in get_args(DataFrame)
}
"""Market-data types: the frame and the decoder of its ``msg`` (the same struct as the union's)."""

CHUNK = 1 << 16
"""Bytes read at a time: a block stays in the core's own cache while it is counted, checked and
decoded (1 MiB blocks did not: with two jobs side by side that cost each a third more; 64 KiB
measured a few per cent faster than 256 KiB)."""

_tagged = msgspec.json.Decoder(Line)
_raw = msgspec.json.Decoder(_RawLine)


def _whole(decoder: msgspec.json.Decoder[_L], block: bytes, count: int) -> list[_L] | None:
    """A block of ``count`` lines decoded in one call, or ``None`` if that is not one line each."""
    try:
        lines = decoder.decode_lines(block)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    return lines if one_value_per_line(block, count, len(lines)) else None


_L = TypeVar("_L", Line, _RawLine)


class Source:
    """Reads archive files as blocks of :class:`Line`; counts what it had to pass over."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.malformed = 0
        """Market-data messages not in the documented shape (reported)."""
        self.path = Path()
        self._first = 0
        self._numbers: list[int] | None = None

    def batches(self, path: Path) -> Iterator[list[Line]]:
        """Every archive line of ``path`` that decodes, a block at a time, in order."""
        self.path = path
        for first, block, count in self.reader.blocks(path, CHUNK):
            self._first = first
            lines = _whole(_tagged, block, count)
            if lines is not None:
                self._numbers = None
                yield lines
                continue
            lines, numbers = [], []
            raw = _whole(_raw, block, count)
            for number, item in enumerate(raw, first) if raw is not None else self._one_by_one(path, first, block):
                typed = item if item.__class__ is Line else self._typed(path, number, item)  # type: ignore[arg-type]
                if typed is not None:
                    lines.append(typed)
                    numbers.append(number)
            self._numbers = numbers
            yield lines

    def number(self, index: int) -> int:
        """The line number of line ``index`` of the block last yielded."""
        if self._numbers is not None:
            return self._numbers[index]
        return self._first + index  # (a block decoded whole: a value per line)

    def report(self, index: int, reason: str) -> None:
        """Report a problem with line ``index`` of the block last yielded (found after decoding)."""
        self.reader.report(self.path, self.number(index), reason)

    def _typed(self, path: Path, number: int, line: _RawLine) -> Line | None:
        """A line read with its ``msg`` raw, typed as the union types it; ``None`` for a frame of
        another type (or a reply), and for a market-data message not in its type's shape (reported;
        an order-book one stands for itself, :class:`MalformedBook`)."""
        frame = line.data
        if not isinstance(frame, _RawFrame):
            return Line(line.ts, frame)  # (text, or nothing)
        known = _TYPED.get(frame.kind)
        if known is None:
            return None  # a type without a table, or a reply to a command
        cls, decoder = known
        try:
            msg = decoder.decode(frame.msg) if len(frame.msg) else None
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
            return self._malformed(path, number, line.ts, frame.kind, json_object(bytes(frame.msg)), exc)
        return Line(line.ts, cls(sid=frame.sid, seq=frame.seq, msg=msg))

    def _malformed(
        self, path: Path, number: int, ts: str, kind: str, msg: dict[str, Any] | None, exc: Exception
    ) -> Line | None:
        """A market-data message not in its type's documented shape: reported; an order-book one's
        market no longer has a known book (:class:`MalformedBook`)."""
        self.malformed += 1
        self.reader.report(path, number, f"{kind} message not in Kalshi's documented shape ({exc})")
        ticker = msg.get("market_ticker") if msg is not None else None
        if kind not in BOOK_TYPES or not isinstance(ticker, str):
            return None
        return Line(ts, MalformedBook(DeltaMsg(market_ticker=ticker)))  # type: ignore[arg-type]

    def _one_by_one(self, path: Path, first: int, block: bytes) -> Iterator[tuple[int, _RawLine | Line]]:
        """Each line of a block that does not decode whole, with its number — raw, or already
        typed as a malformed order-book message; what is not an archive line is reported and
        passed over, as is a line of another type."""
        decode = _raw.decode
        for number, line in enumerate(block.split(b"\n")[:-1], first):
            if len(line) > SHALLOW_BYTES and not within_depth(line, MAX_JSON_DEPTH + 2):
                self.reader.report(path, number, "not an archive line (nested too deep)")
                continue
            try:
                yield number, decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                error: Exception = exc
                obj = parse_line(line)
                if obj is None:
                    self.reader.report(path, number, "not an archive line (corrupt or torn)")
                    continue
                ts = obj["ts"]
                written = written_ts(ts)
                if written != ts:
                    if written is None:
                        self.reader.report(path, number, f"not an archive line (receive time {ts!r} is not one)")
                        continue
                    obj["ts"] = written  # (a time in another form, read as the replay reads it)
                    try:
                        yield number, decode(msgspec.json.encode(obj))
                        continue
                    except (msgspec.DecodeError, msgspec.ValidationError) as again:
                        error = again
                data = obj.get("data")
                kind = data.get("type") if isinstance(data, dict) else None
                if not isinstance(kind, str) or kind not in _TYPED:
                    continue  # not market data (a reply to a command, another channel's frame)
                msg = data.get("msg") if isinstance(data, dict) else None
                typed = self._malformed(
                    path, number, str(obj["ts"]), kind, msg if isinstance(msg, dict) else None, error
                )
                if typed is not None:
                    yield number, typed
