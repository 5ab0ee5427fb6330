"""Every metric, defined in one place.

The hot path only bumps plain integers on :class:`FeedStats`; a custom collector turns them into
Prometheus samples when ``/metrics`` is scraped. That keeps per-frame cost to an integer add (no
locks, no label lookups) while every series still exists, at zero, from start-up.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

ERROR_KINDS = ("connect", "auth", "disconnect", "write", "storage", "internal")
"""``ssmd_errors_total`` kinds. Each counts incidents (see :mod:`ssmd_connector.incidents`): a
connection that cannot be opened, however many attempts fail; a write outage, however many
retries; a disconnect; an archive file found deleted; an internal error (a bug)."""


AGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RECOVERY_OUTCOMES = ("requested", "completed", "failed", "resubscribed", "unavailable")


@dataclass
class Histogram:
    """A Prometheus-style histogram without locks (single-threaded event loop)."""

    bounds: tuple[float, ...] = AGE_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(AGE_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out


@dataclass
class ShardStats:
    """Kalshi per-connection counters."""

    shard: str
    frames_by_type: dict[str, int] = field(default_factory=dict)
    gaps: int = 0
    recoveries: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECOVERY_OUTCOMES, 0))
    auth_failures: int = 0
    markets: int = 0
    age: Histogram = field(default_factory=Histogram)


@dataclass
class FeedStats:
    """Live counters for one feed, mutated by the pipeline, read by metrics and health."""

    feed: str
    messages: int = 0
    bytes_written: int = 0
    reconnects: int = 0
    last_message_ns: int = 0
    queue_depth: int = 0
    backlog_bytes: int = 0
    """Bytes the writers hold that are not in storage yet (grows while a writer fails)."""
    write_retries: int = 0
    """Writer calls retried while writes fail (one write outage is one error, many retries)."""
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    connections: dict[str, bool] = field(default_factory=dict)
    """Connector label → connected; a feed is connected when every one of its connections is."""
    shards: dict[str, ShardStats] = field(default_factory=dict)
    """Kalshi connections' protocol counters, by shard label."""

    @property
    def connected(self) -> bool:
        return bool(self.connections) and all(self.connections.values())

    def error(self, kind: str, n: int = 1) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + n


class StatsCollector(Collector):
    def __init__(self, stats: list[FeedStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        labels = ["feed"]
        messages = CounterMetricFamily("ssmd_messages", "Frames received from the feed", labels=labels)
        written = CounterMetricFamily("ssmd_bytes_written", "Bytes handed to storage by the writers", labels=labels)
        reconnects = CounterMetricFamily("ssmd_reconnects", "Reconnection attempts", labels=labels)
        errors = CounterMetricFamily(
            "ssmd_errors",
            "Incidents by kind (connect, auth, disconnect, write, storage, internal): an outage counts once",
            labels=["feed", "kind"],
        )
        retries = CounterMetricFamily(
            "ssmd_write_retries", "Writer calls retried while writes were failing", labels=labels
        )
        connected = GaugeMetricFamily("ssmd_connected", "1 when every connection of the feed is open", labels=labels)
        last = GaugeMetricFamily(
            "ssmd_last_message_timestamp_seconds",
            "Receive time of the newest frame (Unix seconds; 0 before the first)",
            labels=labels,
        )
        depth = GaugeMetricFamily(
            "ssmd_queue_depth", "Frames waiting between the readers and the writers", labels=labels
        )
        backlog = GaugeMetricFamily(
            "ssmd_write_backlog_bytes", "Bytes accepted by the writers but not in storage yet", labels=labels
        )
        for s in self._stats:
            backlog.add_metric([s.feed], s.backlog_bytes)
            messages.add_metric([s.feed], s.messages)
            written.add_metric([s.feed], s.bytes_written)
            reconnects.add_metric([s.feed], s.reconnects)
            retries.add_metric([s.feed], s.write_retries)
            for kind, n in sorted(s.errors.items()):
                errors.add_metric([s.feed, kind], n)
            connected.add_metric([s.feed], 1.0 if s.connected else 0.0)
            last.add_metric([s.feed], s.last_message_ns / 1e9)
            depth.add_metric([s.feed], s.queue_depth)
        yield from (messages, written, reconnects, errors, retries, connected, last, depth, backlog)
        yield from self._shards()

    def _shards(self) -> Iterator[Metric]:
        labels = ["feed", "shard"]
        connected = GaugeMetricFamily("ssmd_shard_connected", "1 while this connection is open", labels=labels)
        by_type = CounterMetricFamily(
            "ssmd_frames_by_type", "Frames received by Kalshi message type", labels=[*labels, "type"]
        )
        gaps = CounterMetricFamily("ssmd_sequence_gaps", "Sequence gaps detected (per sid)", labels=labels)
        recoveries = CounterMetricFamily(
            "ssmd_recoveries", "Recovery steps after gaps or terminal errors", labels=[*labels, "outcome"]
        )
        auth = CounterMetricFamily("ssmd_auth_failures", "Handshakes rejected by the server", labels=labels)
        markets = GaugeMetricFamily("ssmd_markets_subscribed", "Markets subscribed on this connection", labels=labels)
        age = HistogramMetricFamily(
            "ssmd_message_age_seconds",
            "Receive time minus the exchange's ts_ms, where present",
            labels=labels,
        )
        for s in self._stats:
            for shard in s.shards.values():
                key = [s.feed, shard.shard]
                connected.add_metric(key, 1.0 if s.connections.get(shard.shard) else 0.0)
                for kind, n in sorted(shard.frames_by_type.items()):
                    by_type.add_metric([*key, kind], n)
                gaps.add_metric(key, shard.gaps)
                for outcome, n in sorted(shard.recoveries.items()):
                    recoveries.add_metric([*key, outcome], n)
                auth.add_metric(key, shard.auth_failures)
                markets.add_metric(key, shard.markets)
                age.add_metric(key, shard.age.cumulative(), shard.age.total)
        yield from (connected, by_type, gaps, recoveries, auth, markets, age)


def make_registry(stats: list[FeedStats]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StatsCollector(stats))
    return registry
