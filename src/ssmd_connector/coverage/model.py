"""Per market, what the archive holds — the model behind ``ssmd coverage`` and the export's
``coverage`` table: the ledger's events and the archive's frames in, intervals out.

For every market the archive knows of (a ``created`` lifecycle message, a ledger ``market_added``, a
subscription, or a frame): when it was created and added, the intervals it was subscribed, the gaps
and disconnects inside them, its first and last frame, and its last lifecycle status.

Intervals follow what Kalshi confirmed, not what the recorder decided: a market joins with a
``subscribed`` or ``markets_changed`` (add) line and leaves with ``markets_changed`` (delete),
``unsubscribed``, its connection's ``disconnect`` — or the connection's next ``connect`` or the
recorder's next start, when a crash wrote no disconnect (counted as one). On sids whose markets
cannot be removed one by one (trades), it leaves with its ``market_removed``: the sid still names
it, but nothing more will come. The whole ledger is replayed; ``--from``/``--to`` clip the result. A
market that was created in a series the recorder was told to discover (the ledger's ``discovered``
lines name them) but never subscribed is listed as such: that is a loss, and this is where it shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..kalshi.universe import series_of
from ..kalshi.wire import DOCUMENTED_UPDATABLE, EVENT_LIFECYCLE, MARKET_LIFECYCLE_V2, MULTIVARIATE_MARKET_LIFECYCLE, Ev

LIFECYCLE = frozenset({MARKET_LIFECYCLE_V2, MULTIVARIATE_MARKET_LIFECYCLE})


@dataclass
class MarketCoverage:
    ticker: str
    series: str
    created: str | None = None
    """Receive time of its ``created`` lifecycle message."""
    added: str | None = None
    added_reason: str | None = None
    removed: str | None = None
    removed_reason: str | None = None
    intervals: list[list[str | None]] = field(default_factory=list)
    """``[start, end]`` it was subscribed; ``end`` is ``None`` when still subscribed at the archive's end."""
    gaps: int = 0
    disconnects: int = 0
    first_frame: str | None = None
    last_frame: str | None = None
    frames: int = 0
    status: str = ""
    """Its last lifecycle event (``created``, ``determined``, ``settled``…), if any was archived."""
    matched: bool = False
    """Added by the recorder, or created in a series it was discovering."""

    @property
    def recorded(self) -> bool:
        return bool(self.intervals)


class Coverage:
    """Builds :class:`MarketCoverage` from ledger events (in order) and archive frames."""

    def __init__(self) -> None:
        self.markets: dict[str, MarketCoverage] = {}
        self._sids: dict[str, dict[int, set[str]]] = {}
        """shard → sid → the markets on it now."""
        self._channel: dict[tuple[str, int], str] = {}
        self._event_series: dict[str, str] = {}
        self._present: dict[str, int] = {}
        """ticker → how many sids carry it now."""
        self.series: set[str] = set()
        self.discovering_all = False

    def market(self, ticker: str) -> MarketCoverage:
        m = self.markets.get(ticker)
        if m is None:
            m = self.markets[ticker] = MarketCoverage(ticker, series_of(ticker))
        return m

    # -- the ledger ----------------------------------------------------------------------------
    def event(self, ev: dict[str, Any]) -> None:
        kind, ts, shard = ev.get("event"), str(ev.get("ts", "")), str(ev.get("shard", ""))
        if kind == Ev.RECORDER_STARTED:  # a crash wrote no disconnect: nothing is subscribed any more
            for label in list(self._sids):
                self._drop_connection(label, ts)
            return
        sids = self._sids.setdefault(shard, {})
        if kind == Ev.CONNECT:
            self._drop_connection(shard, ts)
        elif kind == Ev.DISCOVERED:
            named = ev.get("series")
            series: list[Any] = named if isinstance(named, list) else []
            self.series.update(s for s in series if isinstance(s, str))
            self.discovering_all |= not series
        elif kind == Ev.MARKET_ADDED and isinstance(t := ev.get("ticker"), str):
            m = self.market(t)
            m.matched = True
            if m.added is None:
                m.added, m.added_reason = ts, ev.get("reason")
        elif kind == Ev.MARKET_REMOVED and isinstance(t := ev.get("ticker"), str):
            m = self.market(t)
            if ev.get("reason") != "rebalance":
                m.removed, m.removed_reason = ts, ev.get("reason")
            for number, on in sids.items():
                if t in on and self._channel.get((shard, number)) not in DOCUMENTED_UPDATABLE:
                    self._leave(t, ts)
                    on.discard(t)
        elif kind == Ev.SUBSCRIBED and isinstance(sid := ev.get("sid"), int):
            on = sids.setdefault(sid, set())
            for t in _tickers(ev):
                if t not in on:
                    on.add(t)
                    self._join(t, ts)
            self._channel[shard, sid] = str(ev.get("channel"))
        elif kind == Ev.MARKETS_CHANGED and isinstance(sid := ev.get("sid"), int):
            on = sids.setdefault(sid, set())
            for t in _tickers(ev):
                if ev.get("action") == "add_markets" and t not in on:
                    on.add(t)
                    self._join(t, ts)
                elif ev.get("action") == "delete_markets" and t in on:
                    on.discard(t)
                    self._leave(t, ts)
        elif kind == Ev.UNSUBSCRIBED and isinstance(sid := ev.get("sid"), int):
            for t in sids.pop(sid, set()):
                self._leave(t, ts)
        elif kind == Ev.DISCONNECT:
            self._drop_connection(shard, ts)
        elif kind == Ev.GAP:
            for t in _tickers(ev):
                if self._present.get(t):
                    self.market(t).gaps += 1

    def _drop_connection(self, shard: str, ts: str) -> None:
        sids = self._sids.get(shard, {})
        for t in {t for on in sids.values() for t in on}:
            self.market(t).disconnects += 1
        for on in sids.values():
            for t in on:
                self._leave(t, ts)
        sids.clear()

    def _join(self, ticker: str, ts: str) -> None:
        n = self._present.get(ticker, 0)
        self._present[ticker] = n + 1
        if not n:
            self.market(ticker).intervals.append([ts, None])

    def _leave(self, ticker: str, ts: str) -> None:
        n = self._present.get(ticker, 0)
        if n <= 1:
            self._present.pop(ticker, None)
            m = self.market(ticker)
            if n and m.intervals and m.intervals[-1][1] is None:
                m.intervals[-1][1] = ts
        else:
            self._present[ticker] = n - 1

    # -- the frames ----------------------------------------------------------------------------
    def frame(self, ts: str, data: Any) -> None:
        if not isinstance(data, dict):
            return
        msg = data.get("msg")
        if not isinstance(msg, dict):
            return
        kind = data.get("type") if isinstance(data.get("type"), str) else ""
        if kind == EVENT_LIFECYCLE:  # the series of an event, authoritative over the naming convention
            event, series = msg.get("event_ticker"), msg.get("series_ticker")
            if isinstance(event, str) and isinstance(series, str) and series:
                self._event_series[event] = series
            return
        ticker = msg.get("market_ticker")
        if not isinstance(ticker, str) or not ticker:
            return
        m = self.market(ticker)
        if kind in LIFECYCLE:
            event_type = msg.get("event_type")
            if isinstance(event_type, str):
                m.status = event_type
                if event_type == "created":
                    m.created = m.created or ts
                    meta = msg.get("additional_metadata")
                    event = meta.get("event_ticker") if isinstance(meta, dict) else None
                    if isinstance(event, str) and event:
                        m.series = self._event_series.get(event) or series_of(event)
            return
        m.frames += 1
        m.first_frame = m.first_frame or ts
        m.last_frame = ts

    def finish(self, start: str | None = None, end: str | None = None) -> list[MarketCoverage]:
        """Every market, with intervals clipped to ``[start, end)``; one with nothing in the window
        (no interval, no frame, not created in it) is left out."""
        out = []
        for m in self.markets.values():
            if not m.matched and m.created and (self.discovering_all or m.series in self.series):
                m.matched = True
            if start or end:
                m.intervals = _clip(m.intervals, start, end)
                created_in = m.created is not None and _in_window(m.created, start, end)
                if not (m.intervals or m.frames or created_in):
                    continue
            out.append(m)
        return sorted(out, key=lambda m: m.ticker)


def _tickers(ev: dict[str, Any]) -> Iterable[str]:
    tickers = ev.get("tickers")
    return [t for t in tickers if isinstance(t, str)] if isinstance(tickers, list) else []


def _clip(intervals: list[list[str | None]], start: str | None, end: str | None) -> list[list[str | None]]:
    out: list[list[str | None]] = []
    for a, b in intervals:
        if (start and b is not None and b <= start) or (end and a is not None and a >= end):
            continue
        out.append([max(a, start) if a and start else a, b])
    return out


def _in_window(ts: str, start: str | None, end: str | None) -> bool:
    return not ((start and ts < start) or (end and ts >= end))
