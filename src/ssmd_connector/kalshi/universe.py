"""Which markets should be recorded now, and on which connection — sans I/O.

Why this exists: Kalshi lists new markets all day and settles others. A recorder that discovers
once at start-up is, within hours, subscribed to dead markets and blind to new ones, with no
error anywhere. :class:`Universe` follows the market list as it changes, from two sources:

* lifecycle messages (``market_lifecycle_v2``, ``multivariate_market_lifecycle``,
  ``event_lifecycle``): ``created`` adds a matching market — keyed on ``created``, since an
  unopened market opens at ``open_ts`` without a message — and ``settled`` releases it;
* REST listings (start-up and every ``discover.refresh`` seconds): what lifecycle messages were
  missed (e.g. while disconnected). Each market's own ``status`` is trusted over the listing's
  filter (Kalshi's ``status=open`` listing lags settlements by ~30 s), and a released market is
  never added again while it is remembered (:attr:`Universe.remember` seconds).

It also places each market on a connection (:class:`Placement`): the first with room, a new one when
all are full; an emptied connection is retired, and when more connections would be open than
``⌈markets / per connection⌉ + 1`` the last one's markets move to the others (added there first,
released from it after). A connection being retired takes no new market until the I/O layer says
it is closed (:meth:`Universe.retired`): at once for an emptied one, after the overlap for one
whose markets moved.

Every decision comes back as :class:`Change` values for the I/O layer to carry out and write to the
ledger. Nothing is kept for a released market but its ticker, and only for ``remember`` seconds:
memory follows the live universe, not its history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .wire import EVENT_LIFECYCLE

STATUS_ANSWERS: Final = {
    "unopened": frozenset({"unopened", "initialized"}),
    "open": frozenset({"open", "active"}),
    "paused": frozenset({"paused", "inactive"}),
    "closed": frozenset({"closed", "determined", "disputed", "amended"}),
    "settled": frozenset(),
}
"""A ``status`` filter value → the statuses REST answers with for it (its response vocabulary
differs). Settled markets are never added, whatever the filter: nothing more will come."""
RELEASE_STATUSES: Final = frozenset({"settled", "finalized"})
"""Market statuses after which nothing more will come: released."""
RELEASE_EVENTS: Final = frozenset({"settled"})
"""Lifecycle ``event_type`` values that release a market."""
COMBO_PREFIX: Final = "KXMVE"
"""Series of Kalshi's combo ("multivariate") markets."""


def series_of(event_ticker: str) -> str:
    """The series of an event (or market) ticker: Kalshi's convention is the part before the first ``-``."""
    return event_ticker.split("-", 1)[0]


@dataclass(frozen=True)
class MarketFilter:
    """Which markets to follow (``subscription.discover``)."""

    series: frozenset[str] = frozenset()
    """Empty: every series."""
    statuses: tuple[str, ...] = ("unopened", "open")
    combos: bool = False

    def wants(self, status: str) -> bool:
        """A market in this REST status is recorded (no status filter: any that is not over)."""
        if not self.statuses:
            return status not in RELEASE_STATUSES
        return any(status in STATUS_ANSWERS.get(s, ()) for s in self.statuses)

    def matches(self, series: str) -> bool:
        if not self.combos and series.startswith(COMBO_PREFIX):
            return False
        return not self.series or series in self.series


@dataclass(frozen=True)
class Change:
    """One decision: ``ticker`` is added to / removed from connection ``shard`` because of ``reason``
    (``lifecycle``, ``rest``, ``configured``, ``settled``, ``rebalance``)."""

    action: str
    """``add`` or ``remove``."""
    ticker: str
    shard: int
    reason: str


@dataclass
class Placement:
    """Markets per connection: first fit, new connections when all are full."""

    per_connection: int
    shards: dict[int, set[str]] = field(default_factory=lambda: {0: set()})
    where: dict[str, int] = field(default_factory=dict)
    draining: set[int] = field(default_factory=set)
    """Connections being retired: no new markets; still open until :meth:`Universe.retired`."""
    caps: dict[int, int] = field(default_factory=dict)
    """Connections Kalshi would not give more markets (error 26): held at what they have."""
    next_index: int = 1
    """Connection numbers are never reused: a new connection is never mistaken for one still closing
    (and the ledger never mixes the two)."""

    def place(self, ticker: str) -> int:
        for index in sorted(self.shards):
            if index not in self.draining and len(self.shards[index]) < self.caps.get(index, self.per_connection):
                break
        else:
            index, self.next_index = self.next_index, self.next_index + 1
            self.shards[index] = set()
        self.shards[index].add(ticker)
        self.where[ticker] = index
        return index

    def release(self, ticker: str) -> int | None:
        index = self.where.pop(ticker, None)
        if index is not None:
            self.shards[index].discard(ticker)
        return index

    def needed(self) -> int:
        """Connections the markets need (the first one always stays: it carries the global channels)."""
        return max(1, -(-len(self.where) // self.per_connection))

    def tickers(self, shard: int) -> list[str]:
        return sorted(self.shards.get(shard, ()))


class Universe:
    """The markets being recorded, how they are spread over connections, and what was released."""

    def __init__(self, market_filter: MarketFilter, per_connection: int, *, remember: float = 3600.0) -> None:
        self.filter = market_filter
        self.placement = Placement(per_connection)
        self.remember = remember
        self.configured: set[str] = set()
        """Markets named in ``subscription.markets``: recorded whatever discovery says, never released."""
        self._released: dict[str, float] = {}
        """Ticker → when it was released (forgotten after ``remember`` seconds)."""
        self._event_series: dict[str, str] = {}
        """Event ticker → series, from ``event_lifecycle`` (authoritative over the naming convention)."""
        self._forgot_at = 0.0

    # -- what is recorded ----------------------------------------------------------------------
    @property
    def markets(self) -> Mapping[str, int]:
        """Ticker → connection index, for every market recorded now."""
        return self.placement.where

    def shards(self) -> list[int]:
        """Connections that carry markets (or may): every open one but those being retired."""
        return sorted(i for i in self.placement.shards if i not in self.placement.draining)

    def retiring(self) -> list[int]:
        return sorted(self.placement.draining)

    def retired(self, shard: int) -> None:
        """The I/O layer closed a retiring connection."""
        self.placement.draining.discard(shard)
        self.placement.shards.pop(shard, None)
        self.placement.caps.pop(shard, None)

    def limited(self, shard: int, tickers: Iterable[str]) -> list[Change]:
        """Kalshi refused these markets on ``shard`` (error 26): it keeps what it has, and they go
        to another connection (a new one if need be)."""
        p = self.placement
        refused = [t for t in tickers if p.where.get(t) == shard]
        for ticker in refused:
            p.release(ticker)
        p.caps[shard] = len(p.shards.get(shard, ()))
        moves = [Change("remove", t, shard, "market_limit") for t in refused]
        return moves + [Change("add", t, p.place(t), "market_limit") for t in refused]

    def tickers(self, shard: int) -> list[str]:
        return self.placement.tickers(shard)

    def released(self, ticker: str) -> bool:
        return ticker in self._released

    # -- inputs --------------------------------------------------------------------------------
    def configure(self, tickers: Iterable[str]) -> list[Change]:
        """Markets the configuration names: placed first, kept for good."""
        changes = []
        for ticker in dict.fromkeys(tickers):
            self.configured.add(ticker)
            if ticker not in self.placement.where:
                changes.append(Change("add", ticker, self.placement.place(ticker), "configured"))
        return changes

    def listed(self, markets: Iterable[Mapping[str, Any]], now: float, reason: str = "rest") -> list[Change]:
        """Markets from a REST listing (Kalshi's ``Market`` objects): each one's own status decides."""
        changes: list[Change] = []
        self._forget(now)
        for market in markets:
            ticker = market.get("ticker")
            if not isinstance(ticker, str) or not ticker:
                continue
            status = market.get("status")
            event = market.get("event_ticker")
            series = self._series(event if isinstance(event, str) and event else ticker)
            if not isinstance(status, str):
                continue  # a market without a status says nothing we could act on
            if status in RELEASE_STATUSES:
                changes += self._release(ticker, now, "settled", series)
            elif self.filter.wants(status) and self.filter.matches(series):
                changes += self._add(ticker, reason)
        return changes + self._rebalance()

    def lifecycle(self, kind: str, msg: Mapping[str, Any], now: float) -> list[Change]:
        """A lifecycle message's ``msg`` (``kind``: its ``type``)."""
        if kind == EVENT_LIFECYCLE:
            event, series = msg.get("event_ticker"), msg.get("series_ticker")
            if isinstance(event, str) and isinstance(series, str) and series:
                if len(self._event_series) >= 100_000:
                    self._event_series.clear()
                self._event_series[event] = series
            return []
        ticker = msg.get("market_ticker")
        event_type = msg.get("event_type")
        if not isinstance(ticker, str) or not ticker or not isinstance(event_type, str):
            return []
        if now - self._forgot_at > 60:
            self._forget(now)
        if event_type == "created":
            meta = msg.get("additional_metadata")
            event = meta.get("event_ticker") if isinstance(meta, dict) else None
            series = self._series(event if isinstance(event, str) and event else ticker)
            if self.filter.matches(series):
                return self._add(ticker, "lifecycle") + self._rebalance()
        elif event_type in RELEASE_EVENTS:
            return self._release(ticker, now, "settled", self._series(ticker)) + self._rebalance()
        return []

    # -- decisions -----------------------------------------------------------------------------
    def _series(self, event_ticker: str) -> str:
        return self._event_series.get(event_ticker) or series_of(event_ticker)

    def _add(self, ticker: str, reason: str) -> list[Change]:
        if ticker in self.placement.where or ticker in self._released:
            return []
        return [Change("add", ticker, self.placement.place(ticker), reason)]

    def _release(self, ticker: str, now: float, reason: str, series: str) -> list[Change]:
        if ticker in self.configured or ticker in self._released:
            return []
        shard = self.placement.release(ticker)
        if shard is not None or self.filter.matches(series):  # (other series' settlements: not ours)
            self._released[ticker] = now
        return [] if shard is None else [Change("remove", ticker, shard, reason)]

    def _forget(self, now: float) -> None:
        self._forgot_at = now
        cutoff = now - self.remember
        for ticker in [t for t, at in self._released.items() if at < cutoff]:
            del self._released[ticker]

    def _rebalance(self) -> list[Change]:
        """Retire emptied connections; move the last connection's markets when too many are open."""
        p = self.placement
        p.draining.update(i for i, s in p.shards.items() if i and not s)
        changes: list[Change] = []
        while len(live := [i for i in p.shards if i not in p.draining]) > p.needed() + 1:
            last = max(live)
            room = sum(p.caps.get(i, p.per_connection) - len(p.shards[i]) for i in live if i != last)
            if room < len(p.shards[last]):
                break  # (connections held below the cap by Kalshi: the others cannot take them)
            moving = sorted(p.shards[last])
            p.shards[last] = set()
            p.draining.add(last)
            for ticker in moving:
                del p.where[ticker]
                changes.append(Change("add", ticker, p.place(ticker), "rebalance"))
            changes += [Change("remove", ticker, last, "rebalance") for ticker in moving]
        return changes
