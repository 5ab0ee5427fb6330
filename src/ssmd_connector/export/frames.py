"""Archive lines decoded a block at a time into typed structs.

Why typed and batched: the export reads every line of an archive, so the cost per line is the
export's speed. msgspec decodes a whole block of lines in one call (``decode_lines``) straight
into structs holding only the members the tables use; unknown members are skipped without being
built. A block that does not decode as a whole (a torn or corrupt line, a frame whose ``msg`` is
not the documented object — e.g. ``list_subscriptions``' array, or a price sent as a number) is
decoded again line by line: archive lines that are not Kalshi market data are skipped, lines that
are not archive lines at all are reported, with file and line number, like every other reader.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar, TypeVar

import msgspec

from ..archive.line import MAX_JSON_DEPTH, SHALLOW_BYTES, parse_line, within_depth
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


class Msg(msgspec.Struct, gc=False):
    """Every member the tables use, for every type at once: what a frame of a type the tagged
    decoding does not know is read into (see :class:`Frame`)."""

    market_ticker: str = ""
    market_id: str = ""
    ts_ms: int | None = None
    yes_dollars_fp: list[list[str]] | None = None
    no_dollars_fp: list[list[str]] | None = None
    price_dollars: str | None = None
    delta_fp: str = ""
    side: str = ""
    trade_id: str | None = None
    yes_price_dollars: str | None = None
    no_price_dollars: str | None = None
    count_fp: str | None = None
    taker_side: str | None = None
    taker_outcome_side: str | None = None
    taker_book_side: str | None = None
    is_block_trade: bool | None = None
    yes_bid_dollars: str | None = None
    yes_ask_dollars: str | None = None
    yes_bid_size_fp: str | None = None
    yes_ask_size_fp: str | None = None
    last_trade_size_fp: str | None = None
    volume_fp: str | None = None
    open_interest_fp: str | None = None
    dollar_volume: int | None = None
    dollar_open_interest: int | None = None
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
    price_ranges: msgspec.Raw = msgspec.Raw()
    additional_metadata: msgspec.Raw = msgspec.Raw()


# Each market-data type's frame holds only its own members: decoding and freeing a line costs a
# third less than one struct with every member. A block holding a type this union does not know
# (a channel the export has no table for) is decoded again with :class:`Frame`.
class _Tagged(msgspec.Struct, gc=False, tag_field="type"):
    sid: int | None = None
    seq: int | None = None


class DeltaFrame(_Tagged, tag=ORDERBOOK_DELTA):
    kind: ClassVar[str] = ORDERBOOK_DELTA
    msg: DeltaMsg | None = None


class SnapshotFrame(_Tagged, tag=ORDERBOOK_SNAPSHOT):
    kind: ClassVar[str] = ORDERBOOK_SNAPSHOT
    msg: SnapshotMsg | None = None


class TradeFrame(_Tagged, tag=TRADE):
    kind: ClassVar[str] = TRADE
    msg: TradeMsg | None = None


class TickerFrame(_Tagged, tag=TICKER):
    kind: ClassVar[str] = TICKER
    msg: TickerMsg | None = None


class _Lifecycle(_Tagged):
    msg: LifecycleMsg | None = None


class MarketLifecycleFrame(_Lifecycle, tag=MARKET_LIFECYCLE_V2):
    kind: ClassVar[str] = MARKET_LIFECYCLE_V2


class MultivariateLifecycleFrame(_Lifecycle, tag=MULTIVARIATE_MARKET_LIFECYCLE):
    kind: ClassVar[str] = MULTIVARIATE_MARKET_LIFECYCLE


class EventLifecycleFrame(_Lifecycle, tag=EVENT_LIFECYCLE):
    kind: ClassVar[str] = EVENT_LIFECYCLE


EVENT_FEE_UPDATE = "event_fee_update"


class FeeUpdateFrame(_Lifecycle, tag=EVENT_FEE_UPDATE):
    kind: ClassVar[str] = EVENT_FEE_UPDATE


class _Reply(_Tagged):
    """A reply to a command: not market data (its ``msg``, of any shape, is passed over)."""

    msg: ClassVar[None] = None


class SubscribedFrame(_Reply, tag=SUBSCRIBED):
    kind: ClassVar[str] = SUBSCRIBED


class UnsubscribedFrame(_Reply, tag=UNSUBSCRIBED):
    kind: ClassVar[str] = UNSUBSCRIBED


class OkFrame(_Reply, tag=OK):
    kind: ClassVar[str] = OK


class ErrorFrame(_Reply, tag=ERROR):
    kind: ClassVar[str] = ERROR


class Frame(msgspec.Struct, gc=False):
    """A frame of any type, every member read into one :class:`Msg`."""

    kind: str = msgspec.field(name="type", default="")
    sid: int | None = None
    seq: int | None = None
    msg: Msg | None = None


AnyFrame = (
    DeltaFrame
    | SnapshotFrame
    | TradeFrame
    | TickerFrame
    | MarketLifecycleFrame
    | MultivariateLifecycleFrame
    | EventLifecycleFrame
    | FeeUpdateFrame
    | SubscribedFrame
    | UnsubscribedFrame
    | OkFrame
    | ErrorFrame
    | Frame
)
FRAMES = frozenset(AnyFrame.__args__)
"""What a :class:`Line`'s ``data`` is when it is a frame (not text, not absent)."""


class TaggedLine(msgspec.Struct, gc=False):
    ts: str
    data: (
        DeltaFrame
        | SnapshotFrame
        | TradeFrame
        | TickerFrame
        | MarketLifecycleFrame
        | MultivariateLifecycleFrame
        | EventLifecycleFrame
        | FeeUpdateFrame
        | SubscribedFrame
        | UnsubscribedFrame
        | OkFrame
        | ErrorFrame
        | str
        | None
    ) = None


class Line(msgspec.Struct, gc=False):
    """An archive line; ``data`` is a string for lines stored with ``enc`` (not JSON frames)."""

    ts: str
    data: Frame | str | None = None


AnyLine = TaggedLine | Line
_tagged = msgspec.json.Decoder(TaggedLine)
_lines = msgspec.json.Decoder(Line)

BOOK_TYPES = frozenset({ORDERBOOK_SNAPSHOT, ORDERBOOK_DELTA})
MALFORMED_BOOK = "(malformed order-book message)"
"""The type given to an order-book message not in the documented shape: its market's book is no
longer known (never silently left as it was)."""


def _whole(decoder: msgspec.json.Decoder[_L], block: bytes, count: int) -> Sequence[_L] | None:
    """A block of ``count`` lines decoded in one call, or ``None`` if that is not one line each."""
    try:
        lines = decoder.decode_lines(block)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    return lines if one_value_per_line(block, count, len(lines)) else None


_L = TypeVar("_L", TaggedLine, Line)


class Source:
    """Reads archive files as blocks of :class:`Line`; counts what it had to pass over."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.malformed = 0
        """Market-data messages not in the documented shape (reported)."""
        self.path = Path()
        self._first = 0
        self._numbers: list[int] | None = None

    def batches(self, path: Path) -> Iterator[Sequence[AnyLine]]:
        """Every archive line of ``path`` that decodes, a block at a time, in order."""
        self.path = path
        for first, block, count in self.reader.blocks(path):
            self._first = first
            lines: Sequence[AnyLine] | None = _whole(_tagged, block, count)
            if lines is None:
                lines = _whole(_lines, block, count)
            if lines is not None:
                self._numbers = None
            else:
                self._numbers = []
                lines = list(self._one_by_one(path, first, block))
            yield lines

    def number(self, index: int) -> int:
        """The line number of line ``index`` of the block last yielded."""
        if self._numbers is not None:
            return self._numbers[index]
        return self._first + index  # (a block decoded whole: a value per line)

    def report(self, index: int, reason: str) -> None:
        """Report a problem with line ``index`` of the block last yielded (found after decoding)."""
        self.reader.report(self.path, self.number(index), reason)

    def _one_by_one(self, path: Path, first: int, block: bytes) -> Iterator[AnyLine]:
        decode = _lines.decode
        numbers = self._numbers
        assert numbers is not None
        for number, line in enumerate(block.split(b"\n")[:-1], first):
            if len(line) > SHALLOW_BYTES and not within_depth(line, MAX_JSON_DEPTH + 2):
                self.reader.report(path, number, "not an archive line (nested too deep)")
                continue
            try:
                yield decode(line)
                numbers.append(number)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                obj = parse_line(line)
                if obj is None:
                    self.reader.report(path, number, "not an archive line (corrupt or torn)")
                    continue
                data = obj.get("data")
                kind = data.get("type") if isinstance(data, dict) else None
                if kind in ("ok", "subscribed", "unsubscribed", "error", None):
                    continue  # replies to commands (``ok`` may carry an array): not market data
                self.malformed += 1
                self.reader.report(path, number, f"{kind} message not in Kalshi's documented shape ({exc})")
                msg = data.get("msg") if isinstance(data, dict) else None
                ticker = msg.get("market_ticker") if isinstance(msg, dict) else None
                if kind in BOOK_TYPES and isinstance(ticker, str):
                    yield Line(str(obj["ts"]), Frame(MALFORMED_BOOK, msg=Msg(market_ticker=ticker)))
                    numbers.append(number)
