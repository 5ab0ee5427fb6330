"""The simulator's market model: order books, trades, tickers and lifecycle events.

Prices are integers in 1/10,000 dollar and sizes in 1/100 contract, formatted as Kalshi's
fixed-point strings (``"0.4800"``, ``"300.00"``) only when a message is built, so the model's
books are exact: a snapshot plus the deltas sent after it rebuild the true book to the cent.

Both sides of a Kalshi book are *bids*: YES bids below the mid, NO bids below one minus the mid.
A YES ask is one minus the best NO bid. A trade takes liquidity at the best opposite bid and
emits the matching negative delta, so trades and books stay consistent.

The universe lives when ``churn`` is set (:meth:`MarketModel.advance`): new events appear in the
series in turn (``event_lifecycle``, then ``created`` for each of their markets — some open at
once, some later at ``open_ts``, with no message, as on Kalshi), trade for ``lifetime`` seconds,
close, are ``determined`` (with ``result`` and ``settlement_value``) and ``settled``, and are
forgotten a while later. A market reactivated after a pause has its book cleared (Kalshi cancels
resting orders): the deltas that empty it are sent, so a book rebuilt from the wire stays exact.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..kalshi.wire import MARKET_LIFECYCLE_V2, ORDERBOOK_DELTA, TICKER, TRADE

ONE = 10_000  # $1.00 in price units
CENT = 100
SERIES = ("KXBTCD", "KXETHD", "KXHIGHNY", "KXINXD", "KXFED")


def price_str(p: int) -> str:
    return f"{p // ONE}.{p % ONE:04d}"


def size_str(s: int) -> str:
    sign = "-" if s < 0 else ""
    s = abs(s)
    return f"{sign}{s // 100}.{s % 100:02d}"


STATUS_IN_RESPONSES = {
    "unopened": "initialized",
    "open": "active",
    "paused": "inactive",
    "closed": "closed",
    "determined": "determined",
    "settled": "finalized",
}
"""REST answers in a vocabulary of its own (``GET /markets?status=`` takes the keys)."""


@dataclass
class Market:
    ticker: str
    event_ticker: str
    series: str
    market_id: str
    status: str  # filter vocabulary: unopened | open | closed | determined | settled
    mid: int
    open_ts: int
    close_ts: int
    title: str
    yes: dict[int, int] = field(default_factory=dict)
    no: dict[int, int] = field(default_factory=dict)
    last_price: int = 0
    last_trade_size: int = 0
    volume: int = 0
    open_interest: int = 0
    dollar_volume: int = 0
    paused: bool = False
    created_ts: float = 0.0
    settled_ts: float = 0.0
    result: str = ""
    lives: bool = False
    """Created by the living universe: it closes at ``close_ts`` and settles."""
    tick: int = CENT
    """Price increment: a cent (``linear_cent``) or a tenth of one (``deci_cent``, sub-penny)."""

    @property
    def structure(self) -> dict[str, Any]:
        """``price_level_structure`` and ``price_ranges``, as lifecycle and REST carry them."""
        name = "linear_cent" if self.tick == CENT else "deci_cent"
        return {
            "price_level_structure": name,
            "price_ranges": [{"start": "0.0000", "end": "1.0000", "step": price_str(self.tick)}],
        }

    def side(self, side: str) -> dict[int, int]:
        return self.yes if side == "yes" else self.no

    def best(self, side: str) -> tuple[int, int]:
        book = self.side(side)
        if not book:
            return 0, 0
        p = max(book)
        return p, book[p]

    def max_price(self, side: str) -> int:
        """Highest bid allowed on a side without crossing the other side's best bid."""
        other, _ = self.best("no" if side == "yes" else "yes")
        tick = self.tick
        limit = ONE - other - tick if other else (self.mid if side == "yes" else ONE - self.mid) - tick
        return max(tick, min(limit, ONE - tick))


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


MarketEvent = tuple[str, str, str, dict[str, Any]]
"""(channel, market ticker, message type, msg payload)."""


class MarketModel:
    """N markets, seeded and reproducible. ``step()`` yields the next exchange events."""

    def __init__(
        self,
        markets: int = 50,
        seed: int = 1,
        *,
        now: float | None = None,
        churn: float = 0.0,
        lifetime: float = 60.0,
        markets_per_event: int = 4,
    ) -> None:
        self.churn = churn
        """New markets per second (0: the universe does not change)."""
        self.lifetime = lifetime
        """Seconds a new market trades before it closes."""
        self.markets_per_event = markets_per_event
        self.created = 0
        self.settled = 0
        self._owed = 0.0
        self._events = 0
        self._closing: list[Market] = []
        self.rng = random.Random(seed)
        self.now = now if now is not None else datetime.now(UTC).timestamp()
        self.markets: dict[str, Market] = {}
        day = datetime.fromtimestamp(self.now, UTC).strftime("%y%b%d").upper()
        for i in range(markets):
            series = SERIES[i % len(SERIES)]
            strike = 90_000 + 250 * i if series in ("KXBTCD", "KXETHD") else 40 + i // len(SERIES)
            ticker = f"{series}-{day}-B{strike}.5" if series == "KXHIGHNY" else f"{series}-{day}-T{strike}"
            status = "open" if i % 10 != 9 else ("closed" if i % 20 == 9 else "settled")
            m = Market(
                ticker=ticker,
                event_ticker=f"{series}-{day}",
                series=series,
                market_id=str(uuid.uuid5(uuid.NAMESPACE_URL, ticker)),
                status=status,
                mid=self.rng.randrange(10, 90) * CENT,
                open_ts=int(self.now) - 86_400,
                close_ts=int(self.now) + 86_400,
                title=f"{series} above {strike} on {day}?",
                created_ts=self.now - 86_400 * 2,
            )
            for side in ("yes", "no"):
                top = m.max_price(side)
                for k in range(self.rng.randrange(5, 15)):
                    p = top - k * CENT
                    if p >= CENT:
                        m.side(side)[p] = self.rng.randrange(1, 500) * 100
            m.last_price = m.mid
            self.markets[ticker] = m
        self.open_tickers = [t for t, m in self.markets.items() if m.status == "open"]
        self._unopened: list[Market] = []

    # -- messages -----------------------------------------------------------------------------
    def snapshot_for(self, ticker: str) -> dict[str, Any] | None:
        """The snapshot of a market's book, or ``None`` for a market this model does not have."""
        return self.snapshot_msg(ticker) if ticker in self.markets else None

    def snapshot_msg(self, ticker: str) -> dict[str, Any]:
        m = self.markets[ticker]
        msg: dict[str, Any] = {"market_ticker": m.ticker, "market_id": m.market_id}
        for side in ("yes", "no"):
            book = m.side(side)
            if book:  # a side key is omitted when that side is empty
                msg[f"{side}_dollars_fp"] = [[price_str(p), size_str(book[p])] for p in sorted(book)]
        return msg

    def ticker_msg(self, m: Market, ts: float) -> dict[str, Any]:
        yes_bid, yes_bid_size = m.best("yes")
        no_bid, no_bid_size = m.best("no")
        return {
            "market_id": m.market_id,
            "market_ticker": m.ticker,
            "price_dollars": price_str(m.last_price),
            "yes_bid_dollars": price_str(yes_bid),
            "yes_ask_dollars": price_str(ONE - no_bid if no_bid else ONE),
            "volume_fp": size_str(m.volume),
            "open_interest_fp": size_str(m.open_interest),
            "dollar_volume": m.dollar_volume,
            "dollar_open_interest": m.open_interest * m.last_price // (100 * ONE),
            "yes_bid_size_fp": size_str(yes_bid_size),
            "yes_ask_size_fp": size_str(no_bid_size),
            "last_trade_size_fp": size_str(m.last_trade_size),
            "ts": int(ts),
            "ts_ms": int(ts * 1000),
            "time": _rfc3339(ts),
        }

    def market_json(self, ticker: str) -> dict[str, Any]:
        """The REST ``Market`` object (status in the response vocabulary)."""
        m = self.markets[ticker]
        yes_bid, _ = m.best("yes")
        no_bid, _ = m.best("no")
        return {
            "ticker": m.ticker,
            "event_ticker": m.event_ticker,
            "market_type": "binary",
            "title": m.title,
            "status": STATUS_IN_RESPONSES[m.status],
            "created_time": _rfc3339(m.created_ts),
            "open_time": _rfc3339(m.open_ts),
            "close_time": _rfc3339(m.close_ts),
            "latest_expiration_time": _rfc3339(m.close_ts + 3600),
            "yes_bid_dollars": price_str(yes_bid),
            "yes_ask_dollars": price_str(ONE - no_bid if no_bid else ONE),
            "no_bid_dollars": price_str(no_bid),
            "no_ask_dollars": price_str(ONE - yes_bid if yes_bid else ONE),
            "last_price_dollars": price_str(m.last_price),
            "volume_fp": size_str(m.volume),
            "volume_24h_fp": size_str(m.volume),
            "open_interest_fp": size_str(m.open_interest),
            "result": m.result,
            **m.structure,
            "fractional_trading_enabled": True,
        }

    # -- dynamics -----------------------------------------------------------------------------
    def step(self, ts: float) -> list[MarketEvent]:
        """One exchange event (a trade also moves the book, so it yields two)."""
        rng = self.rng
        if not self.open_tickers:
            return []
        m = self.markets[rng.choice(self.open_tickers)]
        r = rng.random()
        if m.paused:  # a paused market trades nothing; it is reactivated after a while
            return self._lifecycle(m, ts) if r < 0.05 else []
        if r < 0.72:
            return [self._delta(m, ts)]
        if r < 0.82:
            return self._trade(m, ts)
        if r < 0.995:
            return [(TICKER, m.ticker, "ticker", self.ticker_msg(m, ts))]
        return self._lifecycle(m, ts)

    def _delta(
        self,
        m: Market,
        ts: float,
        side: str | None = None,
        price: int | None = None,
        delta: int | None = None,
    ) -> MarketEvent:
        rng = self.rng
        side = side or rng.choice(("yes", "no"))
        book = m.side(side)
        if price is None:
            if book and rng.random() < 0.7:
                price = rng.choice(list(book))
            else:
                price = rng.randrange(1, m.max_price(side) // m.tick + 1) * m.tick
        if delta is None:
            current = book.get(price, 0)
            if current and rng.random() < 0.45:
                delta = -current if rng.random() < 0.3 else -rng.randrange(1, current + 1)
            else:
                delta = rng.randrange(1, 500) * 100 + (rng.randrange(100) if rng.random() < 0.1 else 0)
        size = book.get(price, 0) + delta
        if size:
            book[price] = size
        else:
            book.pop(price, None)
        msg = {
            "market_ticker": m.ticker,
            "market_id": m.market_id,
            "price_dollars": price_str(price),
            "delta_fp": size_str(delta),
            "side": side,
            "ts": datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "ts_ms": int(ts * 1000),
        }
        return (ORDERBOOK_DELTA, m.ticker, "orderbook_delta", msg)

    def _trade(self, m: Market, ts: float) -> list[MarketEvent]:
        rng = self.rng
        taker = rng.choice(("yes", "no"))
        maker_side = "no" if taker == "yes" else "yes"
        best, size = m.best(maker_side)
        if not size:
            return [self._delta(m, ts)]
        count = min(size, rng.randrange(1, 100) * 100)
        yes_price = ONE - best if taker == "yes" else best
        m.last_price = yes_price
        m.last_trade_size = count
        m.volume += count
        m.open_interest += count // 2
        m.dollar_volume += count * yes_price // (100 * ONE)
        trade = {
            "trade_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "market_ticker": m.ticker,
            "yes_price_dollars": price_str(yes_price),
            "no_price_dollars": price_str(ONE - yes_price),
            "count_fp": size_str(count),
            "taker_side": taker,
            "taker_outcome_side": taker,
            "taker_book_side": "bid" if taker == "yes" else "ask",
            "is_block_trade": False,
            "ts": int(ts),
            "ts_ms": int(ts * 1000),
        }
        consumed = self._delta(m, ts, side=maker_side, price=best, delta=-count)
        return [(TRADE, m.ticker, "trade", trade), consumed]

    def _lifecycle(self, m: Market, ts: float) -> list[MarketEvent]:
        rng = self.rng
        r = rng.random()
        if m.lives and r < 0.15:  # Kalshi's newer lifecycle messages, on markets of the living universe
            return [(MARKET_LIFECYCLE_V2, m.ticker, "market_lifecycle_v2", self._update_msg(m))]
        if not m.paused and r < 0.7:
            m.close_ts += 1 if m.lives else 3600
            msg: dict[str, Any] = {
                "market_ticker": m.ticker,
                "event_type": "close_date_updated",
                "close_ts": m.close_ts,
            }
        else:
            m.paused = not m.paused
            msg = {
                "market_ticker": m.ticker,
                "event_type": "deactivated" if m.paused else "activated",
                "is_deactivated": m.paused,
            }
            if not m.paused:  # reactivated: resting orders were cancelled, the book starts empty
                cleared = [
                    self._delta(m, ts, side=side, price=p, delta=-m.side(side)[p])
                    for side in ("yes", "no")
                    for p in sorted(m.side(side))
                ]
                return [(MARKET_LIFECYCLE_V2, m.ticker, "market_lifecycle_v2", msg), *cleared]
        return [(MARKET_LIFECYCLE_V2, m.ticker, "market_lifecycle_v2", msg)]

    def created_msg(self, ticker: str) -> dict[str, Any]:
        """A ``created`` lifecycle event (sent for every open market when lifecycle is subscribed)."""
        m = self.markets[ticker]
        return {
            "market_ticker": m.ticker,
            "event_type": "created",
            "exchange_index": 0,
            "open_ts": m.open_ts,
            "close_ts": m.close_ts,
            **m.structure,
            "additional_metadata": {
                "name": m.title,
                "title": m.title,
                "yes_sub_title": "Yes",
                "no_sub_title": "No",
                "rules_primary": f"Resolves Yes if {m.title}",
                "rules_secondary": "",
                "can_close_early": False,
                "event_ticker": m.event_ticker,
                "expected_expiration_ts": m.close_ts + 3600,
            },
        }

    # -- the living universe ----------------------------------------------------------------
    def advance(self, ts: float, dt: float) -> list[MarketEvent]:
        """What the passing of ``dt`` seconds up to ``ts`` brings: new events and markets, markets
        opening (silently), closing, determined, settled — and settled ones forgotten."""
        out: list[MarketEvent] = []
        if self.churn:
            self._owed += self.churn * dt
            while self._owed >= self.markets_per_event:
                self._owed -= self.markets_per_event
                out += self._new_event(ts)
        for m in [m for m in self._unopened if ts >= m.open_ts]:
            self._unopened.remove(m)
            m.status = "open"
            self.open_tickers.append(m.ticker)
        for m in [m for m in self._closing if m.status in ("open", "paused") and ts >= m.close_ts]:
            m.status = "closed"
            m.paused = False
            if m.ticker in self.open_tickers:
                self.open_tickers.remove(m.ticker)
        for m in [m for m in self._closing if m.status == "closed" and ts >= m.close_ts + 1]:
            m.status = "determined"
            m.result = "yes" if m.last_price >= ONE // 2 else "no"
            msg = {
                "market_ticker": m.ticker,
                "event_type": "determined",
                "result": m.result,
                "determination_ts": int(ts),
                "settlement_value": price_str(ONE if m.result == "yes" else 0),
            }
            out.append((MARKET_LIFECYCLE_V2, m.ticker, "market_lifecycle_v2", msg))
        for m in [m for m in self._closing if m.status == "determined" and ts >= m.close_ts + 2]:
            m.status = "settled"
            m.settled_ts = ts
            self.settled += 1
            msg = {"market_ticker": m.ticker, "event_type": "settled", "settled_ts": int(ts)}
            out.append((MARKET_LIFECYCLE_V2, m.ticker, "market_lifecycle_v2", msg))
        for m in [m for m in self._closing if m.status == "settled" and ts >= m.settled_ts + 600]:
            self._closing.remove(m)
            del self.markets[m.ticker]
        return out

    def _new_event(self, ts: float) -> list[MarketEvent]:
        rng = self.rng
        series = SERIES[self._events % len(SERIES)]
        self._events += 1
        stamp = datetime.fromtimestamp(ts, UTC).strftime("%y%b%d%H").upper()
        event_ticker = f"{series}-{stamp}{self._events:05d}"
        title = f"{series} at {stamp}"
        out: list[MarketEvent] = [
            (
                MARKET_LIFECYCLE_V2,
                "",
                "event_lifecycle",
                {
                    "event_ticker": event_ticker,
                    "exchange_index": 0,
                    "title": title,
                    "subtitle": "",
                    "collateral_return_type": "MECNET",
                    "series_ticker": series,
                    "strike_date": int(ts + self.lifetime),
                },
            )
        ]
        for k in range(self.markets_per_event):
            ticker = f"{event_ticker}-T{100 + k}"
            later = rng.random() < 0.3  # some open a little later, without a message
            open_ts = int(ts) + (rng.randrange(1, 4) if later else 0)
            m = Market(
                ticker=ticker,
                event_ticker=event_ticker,
                series=series,
                market_id=str(uuid.uuid5(uuid.NAMESPACE_URL, ticker)),
                status="unopened" if later else "open",
                mid=rng.randrange(10, 90) * CENT,
                open_ts=open_ts,
                close_ts=int(open_ts + self.lifetime),
                title=f"{title}: above {100 + k}?",
                created_ts=ts,
                lives=True,
                tick=CENT // 10 if k == self.markets_per_event - 1 else CENT,  # one in each event sub-penny
            )
            for side in ("yes", "no"):
                top = m.max_price(side)
                for j in range(rng.randrange(3, 8)):
                    if (p := top - j * m.tick) >= m.tick:
                        m.side(side)[p] = rng.randrange(1, 500) * 100
            m.last_price = m.mid
            self.markets[ticker] = m
            self._closing.append(m)
            if later:
                self._unopened.append(m)
            else:
                self.open_tickers.append(ticker)
            self.created += 1
            out.append((MARKET_LIFECYCLE_V2, ticker, "market_lifecycle_v2", self.created_msg(ticker)))
        return out

    def _update_msg(self, m: Market) -> dict[str, Any]:
        """``metadata_updated`` (a new subtitle and strike) or ``price_level_structure_updated``
        (the market moves to sub-penny ticks: its later prices use them)."""
        if m.tick == CENT and self.rng.random() < 0.5:
            m.tick = CENT // 10
            return {"market_ticker": m.ticker, "event_type": "price_level_structure_updated", **m.structure}
        strike = self.rng.randrange(100, 200)
        return {
            "market_ticker": m.ticker,
            "event_type": "metadata_updated",
            "strike_type": "greater",
            "floor_strike": strike,
            "yes_sub_title": f"Above {strike}",
        }
