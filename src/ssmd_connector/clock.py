"""Receive timestamps.

A frame is stamped exactly once, as an integer of nanoseconds since the Unix epoch, the moment it
is read off the socket (see :mod:`ssmd_connector.pipeline`). Formatting into RFC 3339 happens later,
on the writer side, and is cached per second because ``datetime.strftime`` per frame is a
measurable share of the hot path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

NowNs = Callable[[], int]
"""A clock: returns the current UTC wall-clock time in ns since the epoch. Injected in tests."""

wall_clock_ns: NowNs = time.time_ns

NS_PER_DAY = 86_400 * 1_000_000_000


class TimestampFormatter:
    """Formats ns timestamps as ``2026-11-24T10:30:00.123456Z`` (bytes), caching the second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""

    def format(self, ns: int) -> bytes:
        micros = ns // 1000
        second, frac = divmod(micros, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.").encode()
        return self._prefix + b"%06dZ" % frac


def day_of(ns: int) -> str:
    """The UTC date (``YYYY-MM-DD``) a timestamp belongs to: the archive's partition key."""
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%d")


def day_bounds(ns: int) -> tuple[int, int]:
    """[start, end) of the UTC day containing ``ns``, in ns."""
    start = ns - ns % NS_PER_DAY
    return start, start + NS_PER_DAY
