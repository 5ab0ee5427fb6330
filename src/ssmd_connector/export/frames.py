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

from collections.abc import Iterator
from pathlib import Path

import msgspec

from ..archive.line import MAX_JSON_DEPTH, SHALLOW_BYTES, parse_line, within_depth
from ..archive.reading import Reader, one_value_per_line


class Msg(msgspec.Struct, gc=False):
    """The members of a Kalshi ``msg`` the tables use, for every market-data type at once."""

    market_ticker: str = ""
    market_id: str = ""
    ts_ms: int | None = None
    # orderbook_snapshot / orderbook_delta
    yes_dollars_fp: list[list[str]] | None = None
    no_dollars_fp: list[list[str]] | None = None
    price_dollars: str | None = None
    delta_fp: str = ""
    side: str = ""
    # trade
    trade_id: str | None = None
    yes_price_dollars: str | None = None
    no_price_dollars: str | None = None
    count_fp: str | None = None
    taker_side: str | None = None
    taker_outcome_side: str | None = None
    taker_book_side: str | None = None
    is_block_trade: bool | None = None
    # ticker
    yes_bid_dollars: str | None = None
    yes_ask_dollars: str | None = None
    yes_bid_size_fp: str | None = None
    yes_ask_size_fp: str | None = None
    last_trade_size_fp: str | None = None
    volume_fp: str | None = None
    open_interest_fp: str | None = None
    dollar_volume: int | None = None
    dollar_open_interest: int | None = None
    # lifecycle
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


class Frame(msgspec.Struct, gc=False):
    type: str = ""
    sid: int | None = None
    seq: int | None = None
    msg: Msg | None = None


class Line(msgspec.Struct, gc=False):
    """An archive line; ``data`` is a string for lines stored with ``enc`` (not JSON frames)."""

    ts: str
    data: Frame | str | None = None


_lines = msgspec.json.Decoder(Line)

BOOK_TYPES = frozenset({"orderbook_snapshot", "orderbook_delta"})
MALFORMED_BOOK = "(malformed order-book message)"
"""The type given to an order-book message not in the documented shape: its market's book is no
longer known (never silently left as it was)."""


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
        """Every archive line of ``path`` that decodes as a :class:`Line`, a block at a time, in order."""
        decode_lines = _lines.decode_lines
        self.path = path
        for first, block, count in self.reader.blocks(path):
            self._first = first
            try:
                lines: list[Line] | None = decode_lines(block)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                lines = None
            if lines is not None and one_value_per_line(block, count, len(lines)):
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

    def _one_by_one(self, path: Path, first: int, block: bytes) -> Iterator[Line]:
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
