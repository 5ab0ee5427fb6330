"""The export pass: the archive read once, in receive order, into every table asked for.

Books need the whole history (a book at ``--from`` is built from the snapshot before it), so the
archive is read from its beginning; rows are written only inside ``[--from, --to)``. The pass
keeps one time threshold — the next moment something other than a frame is due (a snapshot tick,
a ledger event that makes books unknown, the window opening or closing) — so a frame costs one
string comparison for all of them (archive times in one format compare as text).
"""

from __future__ import annotations

import decimal
import functools
import hashlib
import json
import time
import zlib
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..archive.line import WRITTEN_TS, json_object, ts_ns
from ..archive.reading import Reader, archive_files, silent
from ..clock import TimestampFormatter
from ..coverage.holes import LOOKAHEAD_US, Unknown, events, unknowns
from ..coverage.model import Coverage
from ..kalshi.book import BookError, TooPrecise
from ..kalshi.universe import series_of
from .books import Books
from .frames import (
    BOOK_TYPES,
    LIFECYCLE_TYPES,
    MALFORMED_BOOK,
    AnyFrame,
    DeltaMsg,
    LifecycleMsg,
    Line,
    SnapshotMsg,
    Source,
)
from .messages import Messages
from .tables import TABLES, WIDTH, NotExportable, ValueTooPrecise
from .writer import ROWS_PER_BATCH, Output, Written

BOOK_TABLES = frozenset({"book_deltas", "quotes", "book_snapshots"})
"""The tables made from books: without one of them, no book is kept."""
EXACT = decimal.Context(prec=60, Emin=-999, Emax=999, traps=[decimal.Inexact, decimal.InvalidOperation])
"""The books' arithmetic: far more digits than any column keeps, and a result that would need
rounding refused (``decimal.Inexact``) — never rounded silently at the default 28 digits."""
NEVER = "9999"
"""Sorts after every archive time: nothing due."""


@dataclass(frozen=True)
class Options:
    start: str | None = None
    """Archive-format times (``ssmd``'s ``normalize_ts``); ``None``: open."""
    end: str | None = None
    tickers: frozenset[str] | None = None
    series: frozenset[str] | None = None
    tables: frozenset[str] = frozenset(TABLES)
    snapshot_every_us: int = 1_000_000
    depth: int = 25
    yes_price: bool = False
    """NO-side levels were recorded in YES prices (``use_yes_price: true``)."""
    feed: str | None = None

    def key(self, archive: Path) -> str:
        """The run key in output file names: the same request writes (and replaces) the same files."""
        fields = {k: sorted(v) if isinstance(v, frozenset) else v for k, v in asdict(self).items() if k != "tables"}
        text = json.dumps({"archive": str(archive.resolve()), **fields}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Summary:
    frames: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    problems: int = 0
    malformed: int = 0
    unknown_deltas: int = 0
    negative_levels: int = 0
    seconds: float = 0.0
    peak_rss_mb: list[float] = field(default_factory=list)
    """Each job's peak memory, when the export ran in several processes (:mod:`.jobs`)."""


@dataclass(frozen=True)
class Job:
    """One of ``of`` processes sharing an export (:mod:`.jobs`): it keeps every ``of``-th market
    in the order markets first appear in the archive, from the ``index``-th (every job reads the
    same lines, so all agree; a market's rows all come from one job, whose books need no other
    market). Only job 0 reports what it cannot read, and writes the rows of no market (an event's
    lifecycle), so each is said and written once."""

    index: int = 0
    of: int = 1

    def owns(self, ticker: str, order: int | None) -> bool:
        """``order``: the market's place among those the archive's lines name (``None``: named
        only by the ledger — then by its name's hash)."""
        if order is None:
            order = zlib.crc32(ticker.encode())
        return order % self.of == self.index


class Export:
    def __init__(
        self, archive: Path, out: Path, options: Options, reader: Reader | None = None, job: Job | None = None
    ) -> None:
        self.archive = archive
        self.opts = options
        self.job = job = job or Job()
        self.reader = reader or Reader()
        self.loud = self.reader
        """Where problems found in this job's own markets are reported."""
        if job.index:  # the archive's unreadable lines are job 0's to report
            self.reader = Reader(on_problem=silent)
        self.output = Output(out, options.key(archive), job.index if job.of > 1 else None)
        self.bad_books = 0
        self.books = Books(options.depth, options.yes_price)
        self.msgs = Messages()
        self.coverage = Coverage()
        self._fmt = TimestampFormatter()
        self._day = ""
        self._next_tick = ""
        self._watch: dict[tuple[int | None, int | None], list[Unknown]] = {}
        """Gaps whose revealing frame may come now, by (sid, got): several connections may share both."""
        self._unknowns: list[Unknown] = []
        self._keep: dict[str, bool] = {}
        self._order: dict[str, int] = {}
        """Markets in the order the archive's lines first name them (which job keeps which)."""
        self._ended = False
        self.books.emit = options.start is None
        self.source = Source(self.reader)

    # -- time ------------------------------------------------------------------------------
    def _text(self, ns: int) -> str:
        return self._fmt.format(ns).decode()

    def _tick_after(self, ts: str) -> str:
        if not WRITTEN_TS.fullmatch(ts):
            raise NotExportable(f"{self.source.path}: receive time {ts!r} is not one (a corrupt archive line)")
        step = self.opts.snapshot_every_us * 1000
        return self._text((ts_ns(ts) // step + 1) * step)

    def _threshold(self) -> str:
        """The earliest receive time at which :meth:`_due` has something to do."""
        due = self._next_tick or NEVER
        if self._unknowns:
            u = self._unknowns[0]
            at = u.ts if u.sid is None else self._text(ts_ns(u.ts) - LOOKAHEAD_US * 1000)
            due = min(due, at)
        if self._watch:
            due = min(due, *(u.ts for us in self._watch.values() for u in us))
        if not self.books.emit and self.opts.start:
            due = min(due, self.opts.start)
        if self.opts.end:
            due = min(due, self.opts.end)
        return due

    def _due(self, ts: str) -> str:
        """Everything due at or before ``ts``, in time order; returns the next threshold."""
        while True:
            # At one instant: the window closes first (``--to`` is excluded) and opens first
            # (``--from`` is included); books become unknown before a snapshot tick at that instant.
            steps: list[tuple[str, int, Callable[[], None]]] = []
            if self._next_tick and self._next_tick <= ts:
                steps.append((self._next_tick, 3, self._tick))
            if self._unknowns:
                u = self._unknowns[0]
                if u.ts <= ts:
                    steps.append((u.ts, 2, self._apply_next_unknown))
                elif u.sid is not None and self._text(ts_ns(u.ts) - LOOKAHEAD_US * 1000) <= ts:
                    steps.append((ts, 2, self._watch_next_gap))
            for u in [u for us in self._watch.values() for u in us]:
                if u.ts <= ts:
                    steps.append((u.ts, 2, functools.partial(self._apply_watched, u)))
            if not self.books.emit and self.opts.start and self.opts.start <= ts:
                steps.append((self.opts.start, 1, self._open_window))
            if self.opts.end and self.opts.end <= ts:
                steps.append((self.opts.end, 0, self._close_window))
            if not steps or self._ended:
                return self._threshold()
            min(steps, key=lambda s: (s[0], s[1]))[2]()

    def _tick(self) -> None:
        self.books.tick(self._next_tick)
        self._next_tick = ""  # the next frame sets it (no book changes until then)

    def _apply(self, u: Unknown) -> None:
        tickers = self.books.markets.keys() if u.tickers is None else u.tickers
        for t in list(tickers):
            self.books.invalidate(u.ts, t)

    def _apply_next_unknown(self) -> None:
        self._apply(self._unknowns.pop(0))

    def _watch_next_gap(self) -> None:
        u = self._unknowns.pop(0)
        self._watch.setdefault((u.sid, u.got), []).append(u)

    def _unwatch(self, u: Unknown) -> None:
        us = self._watch[(u.sid, u.got)]
        us.remove(u)
        if not us:
            del self._watch[(u.sid, u.got)]

    def _apply_watched(self, u: Unknown) -> None:
        """A gap whose revealing frame was not seen: its markets' books are unknown from the event."""
        self._unwatch(u)
        self._apply(u)

    def _revealed(self, gaps: list[Unknown], ts: str, ticker: str) -> None:
        """A delta with a watched gap's sid and ``got``: it revealed the gap only if its market is one
        of the gap's (sids repeat across connections), and then the books are unknown from it."""
        for u in list(gaps):
            if u.tickers is not None and ticker in u.tickers:
                self._unwatch(u)
                self._apply(Unknown(ts, u.tickers, u.reason))

    def _open_window(self) -> None:
        assert self.opts.start is not None
        self.books.open_window(self.opts.start)

    def _close_window(self) -> None:
        self._ended = True

    # -- the pass --------------------------------------------------------------------------
    def run(self) -> Summary:
        """The whole export, in this process: written, then committed (or, on any failure, none of
        it)."""
        began = time.perf_counter()
        self.output.start()
        try:
            summary = self._run()
            summary.files = self.output.commit()
        except BaseException:
            self.output.discard()
            raise
        summary.rows = dict(self.output.rows)  # (every row written by now: counted as written)
        summary.seconds = time.perf_counter() - began
        return summary

    def run_job(self) -> tuple[Summary, Written]:
        """This job's share of an export another process started (:mod:`.jobs`), its files left
        for that process to commit."""
        began = time.perf_counter()
        summary = self._run()
        written = self.output.finish()
        summary.rows = dict(self.output.rows)
        summary.seconds = time.perf_counter() - began
        return summary, written

    def _run(self) -> Summary:
        evs = events(self.archive, self.reader)
        self._unknowns = unknowns(evs)
        for ev in evs:
            if not self.opts.end or str(ev["ts"]) < self.opts.end:
                self.coverage.event(ev)
        summary = Summary()
        with decimal.localcontext(EXACT):
            self._pass(summary)
        self._coverage_rows()
        summary.problems = self.loud.problems  # (job 0's is its reader: every problem; another's, its markets')
        summary.malformed = self.bad_books + (0 if self.job.index else self.source.malformed)
        summary.unknown_deltas = self.books.unknown_deltas
        summary.negative_levels = self.books.negative
        return summary

    def _pass(self, summary: Summary) -> None:
        for path in archive_files(self.archive, self.opts.feed):
            for lines in self.source.batches(path):
                summary.frames += self._lines(lines)
                self._flush(ROWS_PER_BATCH)
                if self._ended:
                    break
            if self._ended:
                break
        self._flush(1)

    def _lines(self, lines: Sequence[Line]) -> int:
        """One block, split where the day changes (each day is its own partition); returns how many
        of its lines came before ``--to`` (all of them, but in the block that reaches it)."""
        done = 0
        while done < len(lines):
            day = lines[done].ts[:10]
            if day != self._day:
                if self._day and day > self._day:  # the archive moved past a day: finish its rows, close it
                    self._due(self._day + "T99")  # (sorts after every time of that day)
                    self._flush(1)
                    self.output.close_before(day)
                    if self._ended:
                        return done
                self._flush(1)
                self._day = day
            if lines[-1].ts[:10] == day:
                cut = len(lines)
            else:
                cut = bisect_left(lines, day + "U", lo=done, key=lambda ln: ln.ts)  # ("U" sorts after "T")
                cut = max(cut, done + 1)
            done = self._frames(lines, done, cut)
            if self._ended:
                return done
        return done

    def _frames(self, lines: Sequence[Line], lo: int, hi: int) -> int:
        """Lines ``lo`` to ``hi`` into rows; returns where it stopped (``hi``, or the first line at
        or past ``--to``)."""
        books, msgs, want = self.books, self.msgs, self.opts.tables
        delta, snapshot = books.delta, books.snapshot
        trades, tickers = ("trades" in want), ("tickers" in want)
        lifecycle = "lifecycle" in want or "coverage" in want
        selecting = self.opts.tickers is not None or self.opts.series is not None or self.job.of > 1
        keep, watch, order = self._keep, self._watch, self._order
        job_index = self.job.index
        book_types = BOOK_TYPES
        with_books = not want.isdisjoint(BOOK_TABLES)
        due = self._threshold()
        for i in range(lo, hi):
            ln = lines[i]
            ts = ln.ts
            if ts >= due:
                if not WRITTEN_TS.fullmatch(ts):  # (a line of another length was never read; this is rare)
                    self.source.report(i, f"not an archive line (receive time {ts!r} is not one)")
                    continue
                due = self._due(ts)
                if self._ended:
                    return i
            data = ln.data
            if data is None or data.__class__ is str:
                continue
            frame: AnyFrame = data  # type: ignore[assignment]  # (neither text nor absent: a frame)
            # The frame's type decides which message struct ``m`` is (a cast per line would cost a call).
            m: Any = frame.msg
            if m is None:
                continue
            kind = frame.kind
            if watch and kind == "orderbook_delta":  # before the selection: the same rows either way
                gaps = watch.get((frame.sid, frame.seq))
                if gaps is not None:
                    self._revealed(gaps, ts, m.market_ticker)
                    due = self._threshold()
            if selecting:
                t = m.market_ticker
                if t:
                    k = keep.get(t)
                    if k is None:
                        order[t] = len(order)
                        k = keep[t] = self._selected(t)
                    if not k:
                        continue
                elif job_index and kind not in LIFECYCLE_TYPES:
                    continue  # a message of no market: job 0's (an event's lifecycle: every job's coverage)
            if kind in book_types:
                if not with_books:
                    continue  # (no book table asked for: no book kept)
                is_delta = kind == "orderbook_delta"
                try:
                    if is_delta:
                        delta(ts, m)
                    else:
                        snapshot(ts, m)
                except TooPrecise as exc:
                    refusal = self._inexact(i, kind, m, str(exc))
                    if books.emit:
                        raise refusal from None
                    books.hold_back(ts, m.market_ticker, refusal)  # (before --from: refused if written)
                except BookError as exc:
                    self._bad_book(i, ts, kind, m, exc)
                except decimal.Inexact:
                    raise self._inexact(i, kind, m) from None
                if is_delta and not self._next_tick:
                    self._next_tick = self._tick_after(ts)
                    due = self._threshold()
            elif kind == "ticker":
                if tickers and books.emit:
                    msgs.ticker(ts, m)
            elif kind == "trade":
                if trades and books.emit:
                    msgs.trade(ts, m)
            elif kind in LIFECYCLE_TYPES:
                if lifecycle and (books.emit or not self.opts.start):
                    if not selecting or m.market_ticker or self._selected_event(m.series_ticker):
                        msgs.lifecycle_event(ts, kind, m)
                    self._lifecycle_coverage(ts, kind, m)  # (an event's: the series of its markets)
            elif kind == MALFORMED_BOOK:
                books.invalidate(ts, m.market_ticker)
        return hi

    def _bad_book(self, index: int, ts: str, kind: str, m: DeltaMsg | SnapshotMsg, exc: BookError) -> None:
        """An order-book message with a value the book cannot take: reported, and the market's book
        is not known until its next snapshot (never left as if the message had not come)."""
        self.bad_books += 1
        self.loud.report(
            self.source.path,
            self.source.number(index),
            f"{kind} for {m.market_ticker!r} not usable ({exc}): book unknown until a snapshot",
        )
        self.books.invalidate(ts, m.market_ticker)

    def _inexact(self, index: int, kind: str, m: DeltaMsg | SnapshotMsg, why: str = "") -> ValueTooPrecise:
        """The refusal of a book message whose value no column could keep exactly."""
        values = f"price {m.price_dollars!r}, change {m.delta_fp!r}" if isinstance(m, DeltaMsg) else "its levels"
        why = why or f"a book value needing more than {EXACT.prec} significant digits"
        return ValueTooPrecise(
            f"{self.source.path} line {self.source.number(index)}: {kind} for {m.market_ticker!r} ({values}): "
            f"{why} (never rounded)"
        )

    def _selected(self, ticker: str) -> bool:
        o = self.opts
        return (
            (o.tickers is None or ticker in o.tickers)
            and (o.series is None or series_of(ticker) in o.series)
            and (self.job.of == 1 or self.job.owns(ticker, self._order.get(ticker)))
        )

    def _selected_event(self, series: str | None) -> bool:
        """A lifecycle message of no market (an event's): job 0's."""
        o = self.opts
        return o.tickers is None and (o.series is None or series in o.series) and not self.job.index

    def _lifecycle_coverage(self, ts: str, kind: str, m: LifecycleMsg) -> None:
        msg = {k: getattr(m, k) for k in ("market_ticker", "event_type", "event_ticker", "series_ticker")}
        meta = json_object(bytes(m.additional_metadata))  # (None for one that is not an object)
        if meta is not None:
            msg["additional_metadata"] = meta
        self.coverage.frame(ts, {"type": kind, "msg": msg})

    # -- output ----------------------------------------------------------------------------
    def _flush(self, at_least: int) -> None:
        want = self.opts.tables
        for table, flat in (
            ("book_deltas", self.books.deltas),
            ("quotes", self.books.quotes),
            ("book_snapshots", self.books.snapshots),
            ("trades", self.msgs.trades),
            ("tickers", self.msgs.tickers),
            ("lifecycle", self.msgs.lifecycle),
        ):
            width = WIDTH[table]
            if flat and len(flat) >= at_least * width:
                if table in want:  # (each row to its own receive day's partition)
                    self.output.write(table, [flat[i::width] for i in range(width)])
                flat.clear()

    def _coverage_rows(self) -> None:
        if "coverage" not in self.opts.tables:
            return
        rows: list[tuple[object, ...]] = []
        for m in self.coverage.finish(self.opts.start, self.opts.end):
            if not self._selected(m.ticker):
                continue
            for start, end in m.intervals:
                if start is None:
                    continue
                rows.append((m.ticker, m.series, "subscribed", start, end, m.created, m.status, m.gaps, m.disconnects))
        if rows:  # (each to the partition of its start's day)
            self.output.write("coverage", [list(c) for c in zip(*rows, strict=True)])
