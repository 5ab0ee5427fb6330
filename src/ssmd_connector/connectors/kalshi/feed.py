"""A Kalshi feed's connections, and the market universe they follow.

Two ways to say what is recorded:

* a fixed list (``subscription.markets``, no ``discover``): shards planned once
  (:func:`~ssmd_connector.kalshi.client.plan_shards`), as before;
* ``subscription.discover``: a living universe (:mod:`ssmd_connector.kalshi.universe`). Start-up
  lists the markets over REST; from then on ``created`` lifecycle messages add markets within a
  second, ``settled`` ones release them, and a REST refresh every ``discover.refresh`` seconds
  (and right after the lifecycle connection reconnects) catches what the messages missed. Each
  change is carried out on the live connections (``add_markets`` / ``delete_markets`` or a
  subscription of their own), opens a connection when all are full, and closes one that emptied;
  every change is a ledger line (``market_added`` / ``market_removed`` with ticker, shard and
  reason). A reconnect subscribes the markets of *now*, never the start-up list.

Why the feed and not the runner: which connection carries which market is Kalshi knowledge; the
runner only supervises connections, through the :class:`~ssmd_connector.interfaces.ConnectorPool`
it hands to the setup.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from ...errors import ConnectionFailed
from ...interfaces import Connector, ConnectorPool, FrameSink
from ...kalshi.auth import Signer
from ...kalshi.client import Lifecycle, ShardPlan, plan_shards
from ...kalshi.universe import Change, MarketFilter, Universe
from ...kalshi.wire import GLOBAL_CHANNELS, MARKET_LIFECYCLE_V2, MULTIVARIATE_MARKET_LIFECYCLE, Ev
from ...ledger import Ledger
from ...metrics import FeedStats, ShardStats
from ...settings import Discovery, KalshiSettings
from .connector import KalshiShard, ShardSettings
from .rest import discover_markets

log = logging.getLogger(__name__)

MOVE_OVERLAP = 2.0
"""Seconds a market moved between connections stays on the old one after the new one took it."""
SINCE_MARGIN = 120
"""Seconds a refresh looks back before the previous one (clock skew, listing lag)."""


class KalshiFeed:
    """Owns a Kalshi feed's shards, and — with discovery — the universe and its REST refresh."""

    def __init__(self, settings: KalshiSettings, signer: Signer | None, ledger: Ledger, stats: FeedStats) -> None:
        self.settings, self.signer, self.ledger, self.stats = settings, signer, ledger, stats
        self.shard_settings = ShardSettings(
            settings.endpoint,
            stale_after=settings.stale_after,
            command_timeout=settings.command_timeout,
            receive_buffer=settings.receive_buffer,
        )
        d = settings.discover
        self.universe: Universe | None = None
        self.global_channels = tuple(c for c in settings.channels if c in GLOBAL_CHANNELS)
        self.market_channels = tuple(c for c in settings.channels if c not in GLOBAL_CHANNELS)
        if d is not None:
            market_filter = MarketFilter(frozenset(d.series), d.status or (), d.combos)
            self.universe = Universe(market_filter, settings.max_markets_per_connection)
            wanted = [MARKET_LIFECYCLE_V2] + ([MULTIVARIATE_MARKET_LIFECYCLE] if d.combos else [])
            self.global_channels += tuple(c for c in wanted if c not in self.global_channels)
        self.shards: dict[int, KalshiShard] = {}
        self._pool: ConnectorPool | None = None
        self._refresh: Rediscovery | None = None
        self.added = 0
        self.removed = 0
        self._queued: list[Change] = []
        self._retiring: set[int] = set()
        self._closing: set[asyncio.Task[None]] = set()

    # -- start-up ------------------------------------------------------------------------------
    async def connectors(self, pool: ConnectorPool) -> list[Connector]:
        """The runner's setup: discover, then one shard per connection (plus the refresh loop)."""
        s = self.settings
        if self.universe is None:
            return self._fixed_shards(list(dict.fromkeys(s.markets)))
        assert s.discover is not None
        started = time.time()
        found = await self.discover(s.discover)
        changes = self.universe.configure(s.markets) + self.universe.listed(found, time.monotonic())
        self._record_changes(changes)
        for index in self.universe.shards():
            self.shards[index] = self._shard(index, start_delay=len(self.shards) * s.connect_stagger)
        self._pool = pool
        self._refresh = Rediscovery(self, s.discover, int(started))
        log.info("%d markets on %d connection(s), following the market universe", len(found), len(self.shards))
        return [*self.shards.values(), self._refresh]

    async def discover(self, d: Discovery, since: dict[str, int] | None = None) -> list[dict[str, str]]:
        s = self.settings
        mve = None if d.combos else "exclude"
        found = await discover_markets(
            s.rest_base, self.signer, status=d.status, series=d.series, since=since, mve_filter=mve
        )
        fields: dict[str, Any] = {"base": s.rest_base, "markets": len(found), "status": d.status, "series": d.series}
        if since:
            fields |= since
        self.ledger.record(Ev.DISCOVERED, "rest", fields)
        return found

    def _fixed_shards(self, tickers: list[str]) -> list[Connector]:
        s = self.settings
        plans = plan_shards(s.channels, tickers, s.max_markets_per_connection)
        shards: list[Connector] = []
        for i, plan in enumerate(plans):
            label = f"{s.feed}-{i}"
            stats = self.stats.shards.setdefault(label, ShardStats(label))
            shards.append(
                KalshiShard(
                    label, plan, self.shard_settings, self.signer, self.ledger, stats, start_delay=i * s.connect_stagger
                )
            )
        log.info("%d markets on %d connection(s)", len(tickers), len(shards))
        return shards

    # -- the living universe -------------------------------------------------------------------
    def _plan(self, index: int) -> ShardPlan:
        assert self.universe is not None
        glob = self.global_channels if index == 0 else ()
        return ShardPlan(self.market_channels, tuple(self.universe.tickers(index)), glob)

    def _shard(self, index: int, start_delay: float = 0.0) -> KalshiShard:
        label = f"{self.settings.feed}-{index}"
        stats = self.stats.shards.setdefault(label, ShardStats(label))
        shard = KalshiShard(
            label,
            self._plan(index),
            self.shard_settings,
            self.signer,
            self.ledger,
            stats,
            start_delay=start_delay,
            on_lifecycle=self.on_lifecycle,
        )
        if index == 0:
            shard.on_lifecycle_blind = self._lifecycle_blind
        shard.on_market_limit = lambda tickers: self._market_limit(index, tickers)
        return shard

    def _market_limit(self, index: int, tickers: tuple[str, ...]) -> None:
        """Kalshi would not take more markets on connection ``index``: place them elsewhere."""
        if self.universe is not None:
            self.apply(self.universe.limited(index, tickers))

    def on_lifecycle(self, message: Lifecycle) -> None:
        """A lifecycle message from the connection that carries them. The universe decides at once;
        the connections are told once per turn of the event loop, so a burst of listings (a socket
        read of them) becomes one command per sid, not one per market."""
        if self.universe is None:
            return
        try:
            changes = self.universe.lifecycle(message.kind, message.msg, time.monotonic())
        except Exception as exc:  # a bug on an odd payload: said, and the connection lives on
            log.exception("%s: cannot act on a lifecycle message", self.settings.feed)
            self.ledger.record(Ev.PROTOCOL_ANOMALY, "universe", {"what": f"lifecycle message: {exc!r}"})
            return
        if changes:
            if not self._queued:
                asyncio.get_running_loop().call_soon(self._apply_queued)
            self._queued += changes

    def _apply_queued(self) -> None:
        changes, self._queued = self._queued, []
        self.apply(changes)

    def _lifecycle_blind(self) -> None:
        """The lifecycle subscription (re)started, or lost messages (a gap, a resubscription): list
        over REST what may have been missed, now rather than at the next scheduled round."""
        if self._refresh is not None:
            self._refresh.wake()

    def apply(self, changes: Sequence[Change]) -> None:
        """Carry out the universe's decisions on the connections."""
        if not changes or self.universe is None:
            return
        self._record_changes(changes)
        adds: dict[int, list[str]] = {}
        removes: dict[int, list[str]] = {}
        moved: dict[int, list[str]] = {}
        for c in changes:
            if c.action == "add":
                adds.setdefault(c.shard, []).append(c.ticker)
            elif c.reason == "rebalance":
                moved.setdefault(c.shard, []).append(c.ticker)
            else:
                removes.setdefault(c.shard, []).append(c.ticker)
        for index in self.universe.shards():
            if index not in self.shards:
                shard = self.shards[index] = self._shard(index)
                log.info("%s: opening a connection for %d new market(s)", shard.label, len(adds.get(index, ())))
                if self._pool is not None:
                    self._pool.add_connector(shard)
        for index, tickers in adds.items():
            self._update(index, add=tickers)
        for index, tickers in removes.items():
            self._update(index, remove=tickers)
        retiring = [i for i in self.universe.retiring() if i not in self._retiring]
        emptied = [i for i in retiring if i not in moved]
        if emptied:  # nothing on them any more: closed now
            self._finish_moves({}, emptied)
        if moved:
            # Markets moving between connections are added on the new one first and released from
            # the old one a moment later, when it closes.
            later = [i for i in retiring if i in moved]
            self._retiring.update(later)
            asyncio.get_running_loop().call_later(MOVE_OVERLAP, self._finish_moves, moved, later)

    def _update(self, index: int, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
        shard = self.shards.get(index)
        if shard is None:
            return
        shard.plan = self._plan(index) if self.universe is not None and index in self.universe.shards() else shard.plan
        shard.change_markets(add, remove)

    def _finish_moves(self, moved: dict[int, list[str]], retiring: list[int]) -> None:
        for index, tickers in moved.items():
            self._update(index, remove=tickers)
        assert self.universe is not None
        for index in retiring:
            self._retiring.discard(index)
            self.universe.retired(index)
            shard = self.shards.pop(index, None)
            if shard is None:
                continue
            self.stats.shards.pop(shard.label, None)
            self.ledger.record(Ev.SHARD_RETIRED, shard.label, {"reason": "no markets left"})
            log.info("%s: closing the connection: its markets were released", shard.label)
            if self._pool is not None:
                task = asyncio.get_running_loop().create_task(self._pool.remove_connector(shard))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    def _record_changes(self, changes: Sequence[Change]) -> None:
        feed = self.settings.feed
        for c in changes:
            event = Ev.MARKET_ADDED if c.action == "add" else Ev.MARKET_REMOVED
            self.ledger.record(event, f"{feed}-{c.shard}", {"ticker": c.ticker, "reason": c.reason})
            if c.action == "add":
                self.added += 1
            else:
                self.removed += 1


class Rediscovery:
    """The REST refresh, supervised by the runner like a connection: ``/ready`` says when it fails.

    Each round lists markets created since the previous round (minus a margin) in the configured
    statuses, and markets settled since then: what lifecycle messages missed, both ways."""

    def __init__(self, feed: KalshiFeed, discovery: Discovery, since: int) -> None:
        self._feed = feed
        self._discovery = discovery
        self._since = since
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._ok = False
        self.label = f"{feed.settings.feed}-discovery"
        self.feed = feed
        self.rounds = 0
        self.failures = 0

    @property
    def connected(self) -> bool:
        return self._ok

    def wake(self) -> None:
        self._wake.set()

    async def run(self, sink: FrameSink) -> None:
        self._stop.clear()
        if not self._ok and self.rounds + self.failures:  # restarted after a failed round: retry now
            await self.refresh()
        self._ok = True
        while not self._stop.is_set():
            waits = [asyncio.ensure_future(self._stop.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waits, timeout=self._discovery.refresh, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            self._wake.clear()
            if self._stop.is_set():
                return
            await self.refresh()

    async def refresh(self) -> None:
        feed, d = self._feed, self._discovery
        started = int(time.time())
        since = self._since - SINCE_MARGIN
        try:
            created = await feed.discover(d, {"min_created_ts": since})
            settled = await feed.discover(
                Discovery(("settled",), d.series, d.refresh, d.combos), {"min_settled_ts": since}
            )
        except ConnectionFailed:
            self._ok = False
            self.failures += 1
            raise
        self._ok = True
        self._since = started
        self.rounds += 1
        universe = feed.universe
        assert universe is not None
        # Settled first: a market the created listing still shows (it lags) is then not added. (A
        # market of the settled listing without a status of its own has the listing's.)
        settled = [{**m, "status": m.get("status", "settled")} for m in settled]
        feed.apply(universe.listed([*settled, *created], time.monotonic()))

    async def stop(self) -> None:
        self._stop.set()
