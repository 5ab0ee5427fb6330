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
from a worker thread within ``flush_delay`` seconds, and synchronously on close. A write that
fails keeps exactly what was not written (nothing twice, nothing torn) and retries; the failure is
said once through ``on_trouble`` (the recorder makes it a ``storage`` incident: log,
``ssmd_errors_total``, ``/ready``), and if it lasts until :data:`MAX_PENDING` lines wait, the
oldest are dropped and counted in what is said.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from .archive.layout import ledger_path
from .archive.ledger import is_event
from .archive.repair import repair_tail
from .clock import NowNs, TimestampFormatter, day_of, wall_clock_ns

log = logging.getLogger(__name__)

MAX_PENDING = 100_000
"""Event lines kept in memory while the ledger cannot be written (tens of MB at most)."""

RESERVED = frozenset({"ts", "feed", "shard", "event"})

Line = tuple[Path, bytes]
"""Where a line goes, and its bytes (or, after a write cut short, the bytes of it not yet written)."""


class Ledger:
    """The coverage ledger's writer for one feed: owns the day's ``events.jsonl``, the events
    buffered for it, the repair of its torn tail, and the counts by kind. The format is
    :mod:`ssmd_connector.archive.ledger`'s; readers never come here."""

    def __init__(self, root: Path, feed: str, *, now_ns: NowNs = wall_clock_ns, flush_delay: float = 0.5) -> None:
        self.root = root
        self.feed = feed
        self._now = now_ns
        self._fmt = TimestampFormatter()
        self._flush_delay = flush_delay
        self._pending: list[Line] = []
        self._repaired: set[Path] = set()
        self._scheduled: asyncio.TimerHandle | None = None
        self._inflight: asyncio.Future[tuple[list[Line], OSError | None]] | None = None
        self._closed = False
        self._failing = False
        self.lost = 0
        """Event lines dropped because the ledger could not be written for too long."""
        self.events: dict[str, int] = {}
        """Counts by event kind (used by the demo's summary and by tests)."""
        self.on_trouble: Callable[[str | None], None] | None = None
        """Told (once per outage) when writes start failing, with what is wrong, and with ``None``
        when they work again. Unset, the trouble is logged."""

    @property
    def unwritten(self) -> int:
        """Event lines waiting to be written."""
        return len(self._pending)

    def path_for(self, ns: int) -> Path:
        return ledger_path(self.root / day_of(ns), self.feed)

    def record(self, event: str, shard: str, fields: dict[str, Any] | None = None) -> None:
        ns = self._now()
        body = {"ts": self._fmt.format(ns).decode(), "feed": self.feed, "shard": shard, "event": event}
        if fields:
            if not RESERVED.isdisjoint(fields):
                raise ValueError(f"ledger fields may not be named {sorted(RESERVED & fields.keys())}")
            body.update(fields)
        self._pending.append((self.path_for(ns), msgspec.json.encode(body) + b"\n"))
        self.events[event] = self.events.get(event, 0) + 1
        self._schedule()

    def _schedule(self) -> None:
        if self._scheduled is not None or self._closed:
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
            self._inflight.add_done_callback(lambda f: self._written(f, batch))

    def _written(self, fut: asyncio.Future[tuple[list[Line], OSError | None]], batch: list[Line]) -> None:
        """Requeue exactly what was not written (in front of newer events), and say so once."""
        if fut.cancelled():
            unwritten, problem = batch, "the write was cancelled"
        elif (exc := fut.exception()) is not None:  # not an OSError: a bug, but keep the events
            unwritten, problem = batch, f"{type(exc).__name__}: {exc}"
        else:
            unwritten, error = fut.result()
            problem = f"{getattr(error, 'filename', '') or self.root}: {error.strerror or error}" if error else ""
        if not unwritten:
            if self._failing:
                self._failing = False
                log.info("the coverage ledger is written again")
                if self.on_trouble is not None:
                    self.on_trouble(None)
            return
        self._pending[:0] = unwritten
        if len(self._pending) > MAX_PENDING:
            drop = len(self._pending) - MAX_PENDING
            del self._pending[:drop]
            self.lost += drop
        message = (
            f"the coverage ledger cannot be written ({problem}): {len(self._pending)} event line(s) kept, retrying"
        )
        if self.lost:
            message += f"; {self.lost} oldest line(s) dropped at the {MAX_PENDING}-line bound"
        first, self._failing = not self._failing, True
        if self.on_trouble is not None:
            self.on_trouble(message)
        elif first:
            log.error("%s", message)
        self._schedule()

    def _write(self, batch: list[Line]) -> tuple[list[Line], OSError | None]:
        """Append the lines, file by file; on an ``OSError``, what was not written (a line cut short
        keeps only its unwritten bytes, so a retry completes it) and the error."""
        by_path: dict[Path, list[bytes]] = {}
        for path, line in batch:
            by_path.setdefault(path, []).append(line)
        files = list(by_path.items())
        for i, (path, lines) in enumerate(files):
            written = 0
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    if path not in self._repaired:
                        repair_tail(fd, path, is_event)
                        self._repaired.add(path)
                    data = memoryview(b"".join(lines))
                    while data:
                        n = os.write(fd, data)
                        written += n
                        data = data[n:]
                finally:
                    os.close(fd)
            except OSError as exc:
                rest = [(p, line) for p, more in files[i + 1 :] for line in more]
                return _after(path, lines, written) + rest, exc
        return [], None

    async def close(self) -> None:
        """Write everything still buffered; ``OSError`` if it cannot be (``unwritten`` says how much)."""
        self._closed = True
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._inflight is not None:
            with contextlib.suppress(Exception):
                await self._inflight  # (its callback requeues what it could not write)
        batch, self._pending = self._pending, []
        if batch:
            unwritten, error = await asyncio.to_thread(self._write, batch)
            if error is not None:
                self._pending = unwritten
                raise error


def _after(path: Path, lines: list[bytes], written: int) -> list[Line]:
    """The lines of one file not written when ``written`` bytes of them were."""
    out: list[Line] = []
    for line in lines:
        if written >= len(line):
            written -= len(line)
            continue
        out.append((path, line[written:]))
        written = 0
    return out
