"""The coverage ledger: what happened to the connections, beside the data.

``<storage.path>/<YYYY-MM-DD>/<feed>.events.jsonl`` — one JSON object per line::

    {"ts":"2026-11-24T10:30:00.123456Z","feed":"kalshi","shard":"kalshi-0","event":"gap",
     "sid":2,"channel":"orderbook_delta","expected":1043,"got":1045,"missing":2,"tickers":[...]}

Events: ``connect``, ``disconnect`` (with ``reason``), ``connect_failed``, ``auth_failed``,
``command`` (every command sent), ``subscribed`` (sid ↔ channel ↔ tickers), ``gap``,
``recovery_requested`` / ``recovery_completed`` / ``recovery_failed`` / ``recovery_unavailable``,
``resubscribe_requested``, ``error`` (every error reply), ``command_timeout``, ``unparsed_frame``.
A stretch of a sid is complete when it lies between its ``subscribed`` event and the next
``disconnect`` of its shard with no ``gap`` in between; after a ``gap`` on an order-book sid, the
book is whole again from the ``recovery_completed`` that follows.

Events are rare next to data frames, so this file is written simply: buffered, handed to the OS
from a worker thread within ``flush_delay`` seconds, and synchronously on close.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import msgspec

from .archive.layout import ledger_path
from .archive.ledger import is_event
from .archive.repair import repair_tail
from .clock import NowNs, TimestampFormatter, day_of, wall_clock_ns


class Ledger:
    def __init__(self, root: Path, feed: str, *, now_ns: NowNs = wall_clock_ns, flush_delay: float = 0.5) -> None:
        self.root = root
        self.feed = feed
        self._now = now_ns
        self._fmt = TimestampFormatter()
        self._flush_delay = flush_delay
        self._pending: list[tuple[Path, bytes]] = []
        self._repaired: set[Path] = set()
        self._scheduled: asyncio.TimerHandle | None = None
        self._inflight: asyncio.Future[None] | None = None
        self.events: dict[str, int] = {}
        """Counts by event kind (used by the demo's summary and by tests)."""

    def path_for(self, ns: int) -> Path:
        return ledger_path(self.root / day_of(ns), self.feed)

    def record(self, event: str, shard: str, fields: dict[str, Any] | None = None) -> None:
        ns = self._now()
        body = {"ts": self._fmt.format(ns).decode(), "feed": self.feed, "shard": shard, "event": event}
        if fields:
            body.update(fields)
        self._pending.append((self.path_for(ns), msgspec.json.encode(body) + b"\n"))
        self.events[event] = self.events.get(event, 0) + 1
        self._schedule()

    def _schedule(self) -> None:
        if self._scheduled is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (tests, shutdown): close() will write it
        self._scheduled = loop.call_later(self._flush_delay, self._start_flush)

    def _start_flush(self) -> None:
        self._scheduled = None
        if self._inflight is not None and not self._inflight.done():
            self._schedule()
            return
        batch, self._pending = self._pending, []
        if batch:
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self._write, batch))
            self._inflight.add_done_callback(lambda f: self._requeue_on_error(f, batch))

    def _requeue_on_error(self, fut: asyncio.Future[None], batch: list[tuple[Path, bytes]]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._pending[:0] = batch
            self._schedule()

    def _write(self, batch: list[tuple[Path, bytes]]) -> None:
        by_path: dict[Path, list[bytes]] = {}
        for path, line in batch:
            by_path.setdefault(path, []).append(line)
        for path, lines in by_path.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                if path not in self._repaired:
                    repair_tail(fd, path, is_event)
                    self._repaired.add(path)
                data = memoryview(b"".join(lines))
                while data:
                    data = data[os.write(fd, data) :]
            finally:
                os.close(fd)

    async def close(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._inflight is not None:
            with contextlib.suppress(Exception):
                await self._inflight
        batch, self._pending = self._pending, []
        if batch:
            await asyncio.to_thread(self._write, batch)
