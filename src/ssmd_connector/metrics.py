"""Every metric, defined in one place.

The hot path only bumps plain integers on :class:`FeedStats`; a custom collector turns them into
Prometheus samples when ``/metrics`` is scraped. That keeps per-frame cost to an integer add (no
locks, no label lookups) while every series still exists, at zero, from start-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

ERROR_KINDS = ("connect", "auth", "disconnect", "write")


@dataclass
class FeedStats:
    """Live counters for one feed, mutated by the pipeline, read by metrics and health."""

    feed: str
    messages: int = 0
    bytes_written: int = 0
    reconnects: int = 0
    last_message_ns: int = 0
    queue_depth: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    connections: dict[str, bool] = field(default_factory=dict)
    """Connector label → connected; a feed is connected when every one of its connections is."""

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
        written = CounterMetricFamily(
            "ssmd_bytes_written", "Bytes handed to storage by the writers", labels=labels
        )
        reconnects = CounterMetricFamily("ssmd_reconnects", "Reconnection attempts", labels=labels)
        errors = CounterMetricFamily(
            "ssmd_errors", "Errors by kind (connect, auth, disconnect, write)", labels=["feed", "kind"]
        )
        connected = GaugeMetricFamily(
            "ssmd_connected", "1 when every connection of the feed is open", labels=labels
        )
        last = GaugeMetricFamily(
            "ssmd_last_message_timestamp_seconds",
            "Receive time of the newest frame (Unix seconds; 0 before the first)",
            labels=labels,
        )
        depth = GaugeMetricFamily(
            "ssmd_queue_depth", "Frames waiting between the readers and the writers", labels=labels
        )
        for s in self._stats:
            messages.add_metric([s.feed], s.messages)
            written.add_metric([s.feed], s.bytes_written)
            reconnects.add_metric([s.feed], s.reconnects)
            for kind, n in sorted(s.errors.items()):
                errors.add_metric([s.feed, kind], n)
            connected.add_metric([s.feed], 1.0 if s.connected else 0.0)
            last.add_metric([s.feed], s.last_message_ns / 1e9)
            depth.add_metric([s.feed], s.queue_depth)
        yield from (messages, written, reconnects, errors, connected, last, depth)


def make_registry(stats: list[FeedStats]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StatsCollector(stats))
    return registry
