"""The coverage ledger: what happened to the connections, beside the data.

``<storage.path>/<YYYY-MM-DD>/<feed>.events.jsonl`` — one JSON object per line::

    {"ts":"2026-11-24T10:30:00.123456Z","feed":"kalshi","shard":"kalshi-0","event":"gap",
     "sid":2,"channel":"orderbook_delta","expected":1043,"got":1045,"missing":2,"tickers":[...]}

Events: ``connect``, ``disconnect`` (with ``reason``), ``connect_failed``, ``auth_failed``,
``command`` (every command sent), ``subscribed`` (sid ↔ channel ↔ tickers), ``gap``,
``recovery_requested`` / ``recovery_completed`` / ``recovery_failed`` / ``recovery_unavailable``,
``resubscribe_requested``, ``error`` (every error reply), ``command_timeout``, ``unparsed_frame``;
with a living market universe ``market_added`` / ``market_removed`` (ticker, shard, reason),
``markets_changed`` (sid, channel, action, tickers) and ``shard_retired``.
A stretch of a sid is complete when it lies between its ``subscribed`` event and the next
``disconnect`` of its shard with no ``gap`` in between; after a ``gap`` on an order-book sid, the
book is whole again from the ``recovery_completed`` that follows.

Events are rare next to data frames, so this file is written simply: buffered, handed to the OS
from a worker thread within ``flush_delay`` seconds, and synchronously on close. A write that
fails keeps exactly what was not written (nothing twice, nothing torn: the unwritten rest of a
line cut short is written first, and never dropped) and retries; every failed attempt is told to
``on_trouble`` (the recorder makes it one ``storage`` incident: log, ``ssmd_errors_total``,
``/ready``), and if it lasts until :data:`MAX_PENDING` lines wait, the oldest whole lines are
dropped and counted in what is said. A write cancelled or failing on something other than an
``OSError`` (a bug) is retried whole: at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
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
        self._rest: Line | None = None
        """The unwritten rest of a line a failed write cut short: written before anything else."""
        self._repaired: set[Path] = set()
        self._scheduled: asyncio.TimerHandle | None = None
        self._inflight: asyncio.Future[Written] | None = None
        self._closed = False
        self._failing = False
        self.lost = 0
        """Event lines dropped because the ledger could not be written for too long."""
        self.events: dict[str, int] = {}
        """Counts by event kind (used by the demo's summary and by tests)."""
        self.on_trouble: Callable[[str | None], None] | None = None
        """Told what is wrong after every failed attempt, and ``None`` once writes work again.
        Unset, the trouble is logged (once per outage)."""

    @property
    def unwritten(self) -> int:
        """Event lines waiting to be written."""
        return len(self._pending) + (self._rest is not None)

    def path_for(self, ns: int) -> Path:
        return ledger_path(self.root / day_of(ns), self.feed)

    def record(self, event: str, shard: str, fields: dict[str, Any] | None = None) -> None:
        """One event. ``fields`` may not use the names every line has (``ts``, ``feed``, ``shard``,
        ``event``): a field that silently replaced one would make the line lie."""
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
        batch, had_rest = self._take()
        if batch:
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self._write, batch))
            self._inflight.add_done_callback(lambda f: self._written(f, batch, had_rest))

    def _take(self) -> tuple[list[Line], bool]:
        """Everything waiting, the rest of a cut line first; and whether there was one."""
        batch, self._pending = self._pending, []
        if self._rest is None:
            return batch, False
        batch.insert(0, self._rest)
        self._rest = None
        return batch, True

    def _written(self, fut: asyncio.Future[Written], batch: list[Line], had_rest: bool) -> None:
        """Requeue exactly what was not written (in front of newer events), and say so."""
        rest: Line | None = None
        if fut.cancelled():
            unwritten, problem = batch, "the write was cancelled"
        elif (exc := fut.exception()) is not None:  # not an OSError: a bug, but keep the events
            unwritten, problem = batch, f"{type(exc).__name__}: {exc}"
        else:
            result = fut.result()
            unwritten, rest = result.unwritten, result.rest
            problem = f"{result.path}: {result.error.strerror or result.error}" if result.error else ""
        unwritten, rest = _keep_rest(unwritten, rest, batch, had_rest)
        if not unwritten and rest is None:
            if self._failing:
                self._failing = False
                log.info("the coverage ledger is written again")
                if self.on_trouble is not None:
                    self.on_trouble(None)
            return
        self._rest = rest
        self._pending[:0] = unwritten
        if len(self._pending) > MAX_PENDING:  # whole lines only: the rest of a cut one is kept apart
            drop = len(self._pending) - MAX_PENDING
            del self._pending[:drop]
            self.lost += drop
        message = f"the coverage ledger cannot be written ({problem}): {self.unwritten} event line(s) kept, retrying"
        if self.lost:
            message += f"; {self.lost} oldest line(s) dropped at the {MAX_PENDING}-line bound"
        first, self._failing = not self._failing, True
        if self.on_trouble is not None:
            self.on_trouble(message)
        elif first:
            log.error("%s", message)
        self._schedule()

    def _write(self, batch: list[Line]) -> Written:
        """Append the lines, file by file; on an ``OSError``, what was not written (a line cut short
        keeps only its unwritten bytes, so a retry completes it), the error and its file."""
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
                later = [(p, line) for p, more in files[i + 1 :] for line in more]
                left, cut = _after(path, lines, written)
                return Written(left + later, exc, path, cut)
        return Written([], None, None)

    async def close(self) -> None:
        """Write everything still buffered; ``OSError`` if it cannot be (``unwritten`` says how much)."""
        self._closed = True
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._inflight is not None:
            with contextlib.suppress(Exception):
                await self._inflight  # (its callback requeues what it could not write)
        batch, had_rest = self._take()
        if batch:
            result = await asyncio.to_thread(self._write, batch)
            if result.error is not None:
                self._pending, self._rest = _keep_rest(result.unwritten, result.rest, batch, had_rest)
                raise result.error


@dataclass(frozen=True)
class Written:
    """What a write left: whole lines not written, the error and the file it happened on, and the
    unwritten rest of a line cut short (its start is in the file)."""

    unwritten: list[Line]
    error: OSError | None
    path: Path | None
    rest: Line | None = None


def _keep_rest(
    unwritten: list[Line], rest: Line | None, batch: list[Line], had_rest: bool
) -> tuple[list[Line], Line | None]:
    """A rest that went out first and was not written at all is still a rest, not a whole line."""
    if had_rest and rest is None and unwritten and unwritten[0][1] is batch[0][1]:
        return unwritten[1:], unwritten[0]
    return unwritten, rest


def _after(path: Path, lines: list[bytes], written: int) -> tuple[list[Line], Line | None]:
    """The lines of one file not written when ``written`` bytes of them were: whole ones, and the
    rest of the one cut short, if any."""
    out: list[Line] = []
    rest: Line | None = None
    for line in lines:
        if written >= len(line):
            written -= len(line)
            continue
        if written:
            rest = (path, line[written:])
        else:
            out.append((path, line))
        written = 0
    return out, rest
