"""``trades``, ``tickers`` and ``lifecycle``: one row per message, typed, values as Kalshi sent them.

No derivation here, so nothing to get wrong: the exact decimal text goes to a decimal column as
is. Lifecycle messages carry open sets (event types, metadata): the documented members become
columns, ``price_ranges`` and ``additional_metadata`` stay JSON text, byte for byte.
"""

from __future__ import annotations

import msgspec

from .frames import LifecycleMsg, TickerMsg, TradeMsg


def _json(raw: msgspec.Raw) -> str | None:
    """A member's JSON text as sent; ``None`` when absent or ``null``."""
    text = bytes(raw).decode()
    return None if not text or text == "null" else text


class Messages:
    """Rows of the three message tables (flat: a row's values one after another, in column order),
    read and emptied by the caller."""

    def __init__(self) -> None:
        self.trades: list[object] = []
        self.tickers: list[object] = []
        self.lifecycle: list[object] = []

    def trade(self, ts: str, m: TradeMsg) -> None:
        self.trades += (
            ts,
            m.ts_ms,
            m.market_ticker,
            m.trade_id,
            m.yes_price_dollars,
            m.no_price_dollars,
            m.count_fp,
            m.taker_side,
            m.taker_outcome_side,
            m.taker_book_side,
            m.is_block_trade,
        )

    def ticker(self, ts: str, m: TickerMsg) -> None:
        self.tickers += (
            ts,
            m.ts_ms,
            m.market_ticker,
            m.price_dollars,
            m.yes_bid_dollars,
            m.yes_ask_dollars,
            m.yes_bid_size_fp,
            m.yes_ask_size_fp,
            m.last_trade_size_fp,
            m.volume_fp,
            m.open_interest_fp,
            m.dollar_volume,
            m.dollar_open_interest,
        )

    def lifecycle_event(self, ts: str, kind: str, m: LifecycleMsg) -> None:
        self.lifecycle += (
            ts,
            m.ts_ms,
            m.market_ticker or None,
            kind,
            m.event_type,
            m.event_ticker,
            m.series_ticker,
            m.title,
            m.open_ts,
            m.close_ts,
            m.determination_ts,
            m.settled_ts,
            m.result,
            m.settlement_value,
            m.is_deactivated,
            m.price_level_structure,
            _json(m.price_ranges),
            _json(m.additional_metadata),
        )
