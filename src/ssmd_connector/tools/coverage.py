"""``ssmd coverage``: per market, what the archive holds — answered from the archive alone.

For every market the archive knows of (a ``created`` lifecycle message, a ledger ``market_added``,
a subscription, or a frame): when it was created and added, the intervals it was subscribed
(from ``subscribed`` / ``markets_changed`` / ``unsubscribed`` / ``market_removed`` /
``disconnect`` in the ledger), the gaps and disconnects inside them, its first and last frame,
and its last lifecycle status. A market that was created in a series the recorder was told to
discover (the ledger's ``discovered`` lines name them) but never subscribed is listed as such:
that is a loss, and this is where it shows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..archive.line import json_object
from ..archive.reading import Reader
from ..kalshi.universe import series_of
from ..kalshi.wire import EVENT_LIFECYCLE, MARKET_LIFECYCLE_V2, MULTIVARIATE_MARKET_LIFECYCLE, Ev
from .read import Filter, outcome, records

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
        sids = self._sids.setdefault(shard, {})
        if kind == Ev.DISCOVERED:
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
            for on in sids.values():
                if t in on:
                    self._leave(t, ts)
                    on.discard(t)
        elif kind == Ev.SUBSCRIBED and isinstance(sid := ev.get("sid"), int):
            for t in _tickers(ev):
                self._join(t, ts)
            sids[sid] = set(_tickers(ev))
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
            gone = {t for on in sids.values() for t in on}
            for t in gone:
                self.market(t).disconnects += 1
            for on in sids.values():
                for t in on:
                    self._leave(t, ts)
            sids.clear()
        elif kind == Ev.GAP:
            for t in _tickers(ev):
                if self._present.get(t):
                    self.market(t).gaps += 1

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
        ticker = msg.get("market_ticker")
        if not isinstance(ticker, str) or not ticker or kind == EVENT_LIFECYCLE:
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
                        m.series = series_of(event)
            return
        m.frames += 1
        m.first_frame = m.first_frame or ts
        m.last_frame = ts

    def finish(self) -> list[MarketCoverage]:
        for m in self.markets.values():
            if not m.matched and m.created and (self.discovering_all or m.series in self.series):
                m.matched = True
        return sorted(self.markets.values(), key=lambda m: m.ticker)


def _tickers(ev: dict[str, Any]) -> Iterable[str]:
    tickers = ev.get("tickers")
    return [t for t in tickers if isinstance(t, str)] if isinstance(tickers, list) else []


def ledger_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.name.endswith(".events.jsonl") else []
    return sorted(path.glob("*.events.jsonl")) + sorted(path.glob("*/*.events.jsonl"))


def build(path: Path, flt: Filter, reader: Reader) -> list[MarketCoverage]:
    cov = Coverage()
    for ledger in ledger_files(path):
        for _, line in reader.lines(ledger):
            ev = json_object(line)
            if ev is not None and _in_window(str(ev.get("ts", "")), flt):
                cov.event(ev)
    window = Filter(flt.start, flt.end)
    for _, obj in records(path, window, reader):
        cov.frame(obj["ts"], obj.get("data"))
    return cov.finish()


def _in_window(ts: str, flt: Filter) -> bool:
    return not ((flt.start and ts < flt.start) or (flt.end and ts >= flt.end))


def select(markets: Iterable[MarketCoverage], ticker: str | None, series: str | None) -> Iterator[MarketCoverage]:
    for m in markets:
        if (ticker is None or m.ticker == ticker) and (series is None or m.series == series):
            yield m


def coverage(path: Path, flt: Filter, series: str | None, as_json: bool, strict: bool = False) -> int:
    reader = Reader()
    markets = list(select(build(path, flt, reader), flt.ticker, series))
    if as_json:
        for m in markets:
            sys.stdout.write(json.dumps({**asdict(m), "recorded": m.recorded}) + "\n")
        return outcome(reader, strict)
    print(f"{'market':<34} {'created':<20} {'subscribed from':<20} {'to':<20} {'frames':>8} {'gaps':>4} status")
    for m in markets:
        start = m.intervals[0][0] if m.intervals else None
        end = m.intervals[-1][1] if m.intervals else None
        note = "" if m.recorded or not m.matched else "  NEVER RECORDED"
        print(
            f"{m.ticker:<34} {_short(m.created):<20} {_short(start):<20} {_short(end, 'end'):<20} "
            f"{m.frames:>8} {m.gaps:>4} {m.status or '-'}{note}"
        )
    missed = sum(1 for m in markets if m.matched and not m.recorded)
    recorded = sum(1 for m in markets if m.recorded)
    print(f"{len(markets)} markets: {recorded} recorded, {missed} matched but never recorded")
    code = outcome(reader, strict)
    return 1 if missed and code == 0 and strict else code


def _short(ts: str | None, none: str = "-") -> str:
    return ts[:19] if ts else none
