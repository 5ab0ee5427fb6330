"""Every metric, defined in one place.

The hot path only bumps plain integers on :class:`FeedStats`; a custom collector turns them into
Prometheus samples when ``/metrics`` is scraped. That keeps per-frame cost to an integer add (no
locks, no label lookups) while every series still exists, at zero, from start-up.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
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
    ongoing: dict[str, str] = field(default_factory=dict)
    """Incidents going on now (key → ``ssmd_errors_total`` kind), kept by
    :class:`~ssmd_connector.incidents.Incidents`. ``ssmd_errors_total`` moves once per outage; an
    alert needs a state that lasts as long as the outage does (``ssmd_auth_failing``,
    ``ssmd_writes_failing``)."""
    backlog_full: bool = False
    """A failing writer holds as much as it may: reading is paused (frames are being missed)."""

    @property
    def connected(self) -> bool:
        return bool(self.connections) and all(self.connections.values())

    def failing(self, kind: str) -> bool:
        """An incident of this kind is going on."""
        return kind in self.ongoing.values()

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
        auth_failing = GaugeMetricFamily(
            "ssmd_auth_failing",
            "1 while the server rejects our credentials (REST discovery or a WebSocket handshake: HTTP 401/403)",
            labels=labels,
        )
        writes_failing = GaugeMetricFamily(
            "ssmd_writes_failing", "1 while writes fail (data kept in memory, retried)", labels=labels
        )
        backlog_full = GaugeMetricFamily(
            "ssmd_write_backlog_full",
            "1 while a failing writer holds all it may: reading is paused, frames are being missed",
            labels=labels,
        )
        for s in self._stats:
            auth_failing.add_metric([s.feed], 1.0 if s.failing("auth") else 0.0)
            writes_failing.add_metric([s.feed], 1.0 if s.failing("write") else 0.0)
            backlog_full.add_metric([s.feed], 1.0 if s.backlog_full else 0.0)
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
        yield from (auth_failing, writes_failing, backlog_full)
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


@dataclass
class UploadStats:
    """Object-storage uploads (recorder and archiver alike): an alert needs to know that uploads
    keep failing, not only that one round did (rounds are retried with backoff)."""

    uploaded: int = 0
    """Files uploaded and verified."""
    errors: int = 0
    """Upload rounds that failed."""
    failing: bool = False
    """The latest round failed (cleared by the next one that succeeds)."""


class UploadCollector(Collector):
    def __init__(self, feed: str, stats: UploadStats) -> None:
        self._feed = feed
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s, key = self._stats, [self._feed]
        uploaded = CounterMetricFamily("ssmd_uploaded_files", "Files uploaded and verified", labels=["feed"])
        uploaded.add_metric(key, s.uploaded)
        errors = CounterMetricFamily("ssmd_upload_errors", "Upload rounds that failed (retried)", labels=["feed"])
        errors.add_metric(key, s.errors)
        failing = GaugeMetricFamily("ssmd_upload_failing", "1 while the latest upload round failed", labels=["feed"])
        failing.add_metric(key, 1.0 if s.failing else 0.0)
        yield from (uploaded, errors, failing)


@dataclass
class ArchiverStats:
    """``ssmd archive``'s counters, read by ``/metrics`` and ``/health`` of the archiver."""

    feed: str
    frames: int = 0
    """Frames archived (written, fsynced and checkpointed)."""
    skipped: int = 0
    """Stream messages that were not archive lines (logged, not archived)."""
    segments_sealed: int = 0
    checkpoint_seq: int = 0
    """The last stream sequence checkpointed."""
    lag_messages: int = 0
    """Messages of the feed in the stream that are not archived yet (consumer pending + unacknowledged)."""
    lag_known: bool = False
    """``lag_messages`` has been measured at least once (the gauges say nothing before)."""
    last_frame_ns: int = 0
    """Receive time of the newest frame archived (the recorder's clock)."""
    started_ns: int = 0
    write_errors: int = 0
    """Write outages (a full disk for an hour is one; the batch is retried until it is stored)."""
    writes_failing: str = ""
    """The current write outage, empty when writes work."""
    nats_connected: bool = False

    def lag_seconds(self, now_ns: int) -> float:
        """How far behind the stream: 0 when caught up, otherwise the time since the newest
        archived frame was received (since the start, before one was) — what a reader of the
        archive is missing, growing while the archiver stalls."""
        if self.lag_messages <= 0:
            return 0.0
        since = self.last_frame_ns or self.started_ns
        return max(0.0, (now_ns - since) / 1e9)


class ArchiverCollector(Collector):
    def __init__(self, stats: ArchiverStats, now_ns: Callable[[], int]) -> None:
        self._stats = stats
        self._now_ns = now_ns

    def collect(self) -> Iterator[Metric]:
        s, key, labels = self._stats, [self._stats.feed], ["feed"]

        def counter(name: str, text: str, value: float) -> Metric:
            m = CounterMetricFamily(name, text, labels=labels)
            m.add_metric(key, value)
            return m

        def gauge(name: str, text: str, value: float) -> Metric:
            m = GaugeMetricFamily(name, text, labels=labels)
            m.add_metric(key, value)
            return m

        yield counter("ssmd_archiver_frames", "Frames archived: written, fsynced, checkpointed", s.frames)
        yield counter("ssmd_archiver_skipped", "Stream messages that were not archive lines", s.skipped)
        yield counter("ssmd_archiver_segments_sealed", "Segments sealed", s.segments_sealed)
        yield counter("ssmd_archiver_write_errors", "Write outages (each retried until stored)", s.write_errors)
        yield gauge("ssmd_archiver_writes_failing", "1 while archive writes fail", 1.0 if s.writes_failing else 0.0)
        yield gauge("ssmd_archiver_checkpoint_sequence", "Last stream sequence checkpointed", s.checkpoint_seq)
        yield gauge(
            "ssmd_archiver_last_frame_timestamp_seconds",
            "Receive time of the newest archived frame (Unix seconds; 0 before the first)",
            s.last_frame_ns / 1e9,
        )
        yield gauge("ssmd_archiver_nats_connected", "1 while connected to NATS", 1.0 if s.nats_connected else 0.0)
        if s.lag_known:
            yield gauge(
                "ssmd_archiver_lag_messages", "Messages of the feed in the stream not archived yet", s.lag_messages
            )
            yield gauge(
                "ssmd_archiver_lag_seconds",
                "0 when caught up; otherwise seconds since the newest archived frame was received",
                s.lag_seconds(self._now_ns()),
            )


def make_registry(stats: list[FeedStats], uploads: UploadStats | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StatsCollector(stats))
    if stats:  # (without uploads configured: every series at zero, as always)
        registry.register(UploadCollector(stats[0].feed, uploads or UploadStats()))
    return registry


def archiver_registry(
    stats: ArchiverStats, uploads: UploadStats | None = None, now_ns: Callable[[], int] = time.time_ns
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ArchiverCollector(stats, now_ns))
    registry.register(UploadCollector(stats.feed, uploads or UploadStats()))
    return registry
