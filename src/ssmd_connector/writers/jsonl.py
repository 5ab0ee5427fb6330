"""Date-partitioned JSONL archive: ``<root>/<YYYY-MM-DD>/<feed>.jsonl``.

Lines are built on the event loop (cheap) into an in-memory buffer; the buffer is handed to the OS
in a worker thread (file I/O can stall for milliseconds and must not stall the socket readers).
The date directory comes from each message's receive timestamp, so a file never holds two days.

Crash safety: lines are appended whole, so after a crash the only possible damage is a torn last
line. The first time this process opens a file it checks the tail — and, once per feed, the tail
of that feed's newest file whatever its date (a crash just before midnight tears yesterday's
file); a torn last line, or one the readers could not parse (:func:`~ssmd_connector.archive.line.parse_line`,
the same rule the writer follows), is moved to ``<feed>.jsonl.torn-<unix ns>`` (kept, never
deleted) and cut off, so every line of the archive parses.

Storage that disappears: before each flush, every open file is checked to still be the file at
its path (same inode, not unlinked). When the directory was deleted or the file replaced, the
writer says so (log, ``ssmd_errors_total{kind="storage"}``, ``/ready``, the coverage ledger —
with how many lines went into the file that is gone), recreates the directories, opens a new file
and writes what it still holds there. Lines already flushed into the deleted file are lost with
it; nothing buffered is.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..archive.compression import codec
from ..archive.layout import day_file, segment_files, segment_stem
from ..archive.line import ArchivedLines, LineEncoder
from ..archive.repair import quarantine, repair
from ..archive.segments import SEAL_GRACE_NS, Segment, reconcile, scan_lines, seal
from ..clock import NowNs, TimestampFormatter, day_bounds, day_of, wall_clock_ns
from ..errors import WriteFailed
from ..message import Message

log = logging.getLogger(__name__)

FLUSH_BYTES = 1 << 20
"""Flush early once this much is buffered (keeps memory flat under a firehose)."""

MAX_BACKLOG = 256 << 20
"""While writes fail (disk full, read-only), buffer at most this much before reading pauses."""


@dataclass
class _Chunk:
    """Lines for one file, as the byte strings the encoder produced (no copy before the OS)."""

    path: Path
    parts: list[bytes]
    segment: Segment | None = None
    lines: int = 0
    first_ns: int = 0
    last_ns: int = 0
    types: Counter[str] = field(default_factory=Counter)
    """What the chunk adds to its segment's manifest entry, applied once it is on disk."""
    blob: bytes | None = None
    """The compressed member for ``parts`` (compressed files), made once, kept for retries."""
    done: int = 0
    """How many of ``parts`` are fully written."""
    offset: int = 0
    """Bytes of ``parts[done]`` already written."""


@dataclass
class _OpenFile:
    fd: int
    ino: tuple[int, int]
    """(st_dev, st_ino): the file this path named when it was opened."""
    opened_ns: int
    lines: int = 0
    """Lines this process wrote into it."""


StorageLost = Callable[[str, dict[str, object]], None]
"""Told when an open archive file vanished: (message, ledger fields)."""


class JsonlWriter:
    """Appends one archive line per message to the day's file for its feed."""

    def __init__(
        self,
        root: Path,
        *,
        flush_bytes: int = FLUSH_BYTES,
        compression: str = "none",
        level: int | None = None,
        rotation: int | None = None,
        now_ns: NowNs = wall_clock_ns,
        durable: bool = False,
        encoder: LineEncoder | ArchivedLines | None = None,
        on_storage_lost: StorageLost | None = None,
    ) -> None:
        self.root = root
        self._codec = codec(compression, level)
        self._rotation_ns = rotation * 1_000_000_000 if rotation else 0
        """Segment length in ns; 0 = one growing file per day (the original layout)."""
        self._now = now_ns
        self._segment: Segment | None = None
        self._to_seal: list[Segment] = []
        self._recovered = False
        self.sealed: list[Path] = []
        self._durable = durable
        """Archiver mode: fsync every flush, and seal only when :meth:`seal_ready` is called — after
        the caller has checkpointed what it wrote."""
        self.sizes: dict[Path, int] = {}
        """Size of each open file after the last flush (for an archiver's checkpoint)."""
        self._sealable: list[Segment] = []
        self._used: set[Path] = set()
        self._flush_bytes = flush_bytes
        self._encode_batch = (encoder or LineEncoder()).encode_batch
        self._parts: list[bytes] = []
        self._size = 0
        self._path: Path | None = None
        self._feed = ""
        self._day_start = 0
        self._day_end = -1
        self._pending: list[_Chunk] = []
        self._chunk = _Chunk(Path(), [])
        """Accounting for the lines buffered in ``_parts`` (the chunk being built)."""
        self._files: dict[Path, _OpenFile] = {}
        self._bytes_written = 0
        self._repaired_feeds: set[str] = set()
        self._on_storage_lost = on_storage_lost
        self._lost: list[tuple[str, dict[str, object]]] = []
        """Storage incidents found in the worker thread, reported on the event loop."""

    @property
    def bytes_written(self) -> int:
        return self._bytes_written

    def path_for(self, feed: str, ns: int) -> Path:
        """The day file (no rotation), or the open segment's temporary path."""
        if self._rotation_ns:
            return self._segment_for(feed, ns).open_path
        return day_file(self.root, feed, ns, f".jsonl{self._codec.suffix}")

    def _segment_for(self, feed: str, ns: int) -> Segment:
        """The segment for ``ns``: ``<feed>-<HHMM>``, or its next free part ``<feed>-<HHMM>.<n>``.

        Every segment gets a name no other file has used (sealed, open, or left open by a crash),
        so an open file always holds one segment's data and a checkpoint can name it.
        """
        start = ns - ns % self._rotation_ns
        suffix = f".jsonl{self._codec.suffix}"
        seg = Segment(self.root / day_of(ns), segment_stem(feed, start), suffix, start, start + self._rotation_ns)
        part = 0
        while seg.final_path.exists() or seg.open_path.exists() or seg.open_path in self._used:
            part += 1
            seg.stem = segment_stem(feed, start, part)
        self._used.add(seg.open_path)
        return seg

    @property
    def backlog_bytes(self) -> int:
        return self._size

    @property
    def backlog_full(self) -> bool:
        return self._size >= MAX_BACKLOG

    async def write(self, batch: Sequence[Message]) -> None:
        i, n = 0, len(batch)
        while i < n:
            msg = batch[i]
            if msg.feed != self._feed or not self._day_start <= msg.received_ns < self._day_end:
                self._switch(msg)  # a new day (or feed): a new file
            begin = i
            data, i = self._encode_batch(batch, i, self._day_start, self._day_end, self._feed)
            self._parts.append(data)
            self._size += len(data)
            chunk = self._chunk
            chunk.lines += i - begin
            if self._segment is not None:  # what the manifest will say, once it is on disk
                chunk.first_ns = chunk.first_ns or batch[begin].received_ns
                chunk.last_ns = batch[i - 1].received_ns
                chunk.types.update(m.kind for m in batch[begin:i] if m.kind)
        if self._size >= self._flush_bytes:
            await self.flush()

    def _switch(self, msg: Message) -> None:
        """Start buffering for another file (new day or segment, or another feed)."""
        self._close_current()
        self._feed = msg.feed
        if self._rotation_ns:
            if self._segment is not None:
                self._to_seal.append(self._segment)
            seg = self._segment = self._segment_for(msg.feed, msg.received_ns)
            self._day_start, self._day_end = seg.start_ns, seg.end_ns
            self._path = seg.open_path
        else:
            self._day_start, self._day_end = day_bounds(msg.received_ns)
            self._path = self.path_for(msg.feed, msg.received_ns)

    def _close_current(self) -> None:
        if self._parts and self._path is not None:
            chunk = self._chunk
            chunk.path, chunk.parts, chunk.segment = self._path, self._parts, self._segment
            self._pending.append(chunk)
            self._chunk = _Chunk(Path(), [])
        self._parts = []

    async def flush(self) -> None:
        self._close_current()
        self._size = 0
        seg = self._segment
        if seg is not None and self._now() >= seg.end_ns + SEAL_GRACE_NS:
            # The segment's time is over (with a grace for frames still in the queue): seal it.
            self._to_seal.append(seg)
            self._segment, self._path, self._day_end = None, None, -1
        if not self._pending and not self._to_seal:
            if self._files:  # a quiet feed: its open file must still be noticed if it goes away
                await asyncio.to_thread(self._check_open_files, [])
                self._report_lost()
            return
        chunks = self._pending
        self._pending = []
        try:
            await asyncio.to_thread(self._write_chunks, chunks)
        except Exception as exc:
            # Keep whatever was not written, in order, ahead of anything buffered since.
            self._pending = [c for c in chunks if c.done < len(c.parts)] + self._pending
            self._size = sum(len(p) for c in self._pending for p in c.parts)
            where = chunks[0].path if chunks else self.root
            if isinstance(exc, OSError):
                raise WriteFailed(f"cannot write archive file {where}: {exc.strerror or exc}") from exc
            # Not an I/O error: a bug. Still keep the data and let the runner retry, loudly.
            raise WriteFailed(f"internal error writing {where}: {exc!r}", internal=True) from exc
        finally:
            self._report_lost()

    def _report_lost(self) -> None:
        lost, self._lost = self._lost, []
        for message, fields in lost:
            if self._on_storage_lost is not None:
                self._on_storage_lost(message, fields)
            else:
                log.error("%s", message)

    def _write_chunks(self, chunks: list[_Chunk]) -> None:
        """Runs in a worker thread. Records progress so a failure can resume exactly."""
        if self._rotation_ns and not self._recovered:
            self._recovered = True  # (once, even if it fails: what failed is reported)
            self._recover_open_segments()
        self._check_open_files(chunks)
        for chunk in chunks:
            if chunk.done == len(chunk.parts):
                continue
            fd = self._fd_for(chunk.path)
            if self._codec.name != "none":
                if chunk.blob is None:
                    chunk.blob = self._codec.compress(b"".join(chunk.parts))
                self._write_all(fd, chunk, chunk.blob)
                chunk.done = len(chunk.parts)
            else:
                parts = chunk.parts
                while chunk.done < len(parts):
                    self._write_all(fd, chunk, parts[chunk.done])
                    chunk.done += 1
                    chunk.offset = 0
            self._files[chunk.path].lines += chunk.lines
            seg = chunk.segment
            if seg is not None:  # the manifest describes what is on disk
                seg.lines += chunk.lines
                seg.first_ns = seg.first_ns or chunk.first_ns
                seg.last_ns = chunk.last_ns or seg.last_ns
                seg.types.update(chunk.types)
        for path, f in self._files.items():
            if self._durable:
                os.fsync(f.fd)
            self.sizes[path] = os.fstat(f.fd).st_size
        if self._durable:  # the caller seals after checkpointing (seal_ready)
            self._sealable += self._to_seal
            self._to_seal.clear()
        self._seal(self._to_seal)
        # Files of past days (or other feeds) will not be appended to again: close them.
        current = self._path
        for path in [p for p in self._files if p != current]:
            self._close_fd(path)

    def _check_open_files(self, chunks: list[_Chunk]) -> None:
        """Is every open file still the file at its path? If not (the directory was deleted, the
        file removed, moved or replaced), forget it, so the next write recreates it, and report
        what was written into the file that is gone. Two ``stat`` calls per open file."""
        for path, f in list(self._files.items()):
            try:
                st = os.stat(path)
                same = (st.st_dev, st.st_ino) == f.ino and os.fstat(f.fd).st_nlink > 0
            except (FileNotFoundError, NotADirectoryError):  # (its directory gone, or now a file)
                same = False
            except OSError:
                continue  # (unreadable now: the write itself will fail and be retried, loudly)
            if same:
                continue
            size = self.sizes.pop(path, 0)
            del self._files[path]
            os.close(f.fd)
            for chunk in chunks:  # a chunk partly written into the lost file is written again, whole
                if chunk.path == path:
                    chunk.done = chunk.offset = 0
            segments = [c.segment for c in chunks] + self._to_seal + [self._segment]
            for seg in {id(s): s for s in segments if s is not None and s.open_path == path}.values():
                seg.forget_contents()
            since = TimestampFormatter().format(f.opened_ns).decode()
            self._lost.append(
                (
                    f"{path}: the archive file is gone (its directory deleted, or the file removed, moved or "
                    f"replaced) while open: the {f.lines} line(s), {size} bytes, written to it since {since} "
                    "are not in the archive at that path (lost if it was deleted); recreated it and went on "
                    "writing there",
                    {"path": str(path), "lines": f.lines, "bytes": size, "since": since},
                )
            )

    def _seal(self, segments: list[Segment]) -> None:
        while segments:  # segments whose data is all written: seal them, oldest first
            seg = segments[0]
            f = self._files.pop(seg.open_path, None)
            fd = f.fd if f is not None else None
            if fd is None and seg.open_path.exists():  # closed meanwhile (durable mode seals later)
                fd = os.open(seg.open_path, os.O_RDWR)
            if fd is not None:  # (a segment that never got data, or whose file is gone, has none)
                self.sizes.pop(seg.open_path, None)
                self.sealed.append(seal(seg, fd, self._feed or seg.stem.rsplit("-", 1)[0]))
            segments.pop(0)

    async def seal_ready(self) -> None:
        """Durable mode: seal the segments the last flushes completed."""
        if self._sealable:
            await asyncio.to_thread(self._seal, self._sealable)

    def truncate_to(self, sizes: dict[Path, int], feed: str) -> None:
        """Durable mode, at start-up: cut ``feed``'s open files back to a checkpoint — what came
        after it was never acknowledged and will be delivered again; an open file the checkpoint
        does not know holds only such data. Call before the first write."""
        for path in self._open_segments(feed):
            size = sizes.get(path, 0)
            if path.stat().st_size > size:
                fd = os.open(path, os.O_RDWR)
                try:
                    quarantine(fd, path, size, os.fstat(fd).st_size)
                finally:
                    os.close(fd)

    def _days(self) -> list[Path]:
        return sorted(p for p in self.root.glob("????-??-??") if p.is_dir())

    def _open_segments(self, feed: str) -> list[Path]:
        """``feed``'s segments left open (by a crash, or being written): this feed's only, never
        another's whose name starts the same (``kalshi`` and ``kalshi-b``)."""
        return [p for day in self._days() for p in segment_files(day, feed, open_files=True)]

    def _recover_open_segments(self) -> None:
        """Repair and seal what a crashed run left open, and complete the manifests a crash may
        have left behind a seal (runs once, before anything is written). A file that cannot be
        recovered is reported and left as it is (``ssmd verify`` lists it); recording goes on."""
        feed = self._feed
        left_open = self._open_segments(feed)
        for day in sorted({p.parent for p in left_open} | set(self._days()[-2:])):
            try:
                for name in reconcile(day, feed, self._codec):
                    log.warning("%s/%s: sealed but missing from the manifest (unclean shutdown): added", day.name, name)
            except Exception as exc:
                self._problem(day, f"{day}: cannot complete the manifest of {feed} ({exc!r}); recording goes on")
        for open_path in left_open:
            try:
                self._seal_left_open(open_path)
            except Exception as exc:
                self._problem(
                    open_path,
                    f"{open_path}: a segment left open by an unclean shutdown cannot be sealed ({exc!r}); "
                    "it is left as it is (ssmd verify lists it) and recording goes on",
                )

    def _seal_left_open(self, open_path: Path) -> None:
        suffix = f".jsonl{self._codec.suffix}"
        name = open_path.name[1 : -len(".open")]
        if not name.endswith(suffix):
            log.warning("%s: left by a run with another compression setting; not touched", open_path)
            return
        fd = os.open(open_path, os.O_RDWR)
        try:
            repair(fd, open_path, self._codec)
            size = os.fstat(fd).st_size
            lines, first, last, types = scan_lines(fd, self._codec, size)
            seg = Segment(open_path.parent, name[: -len(suffix)], suffix, 0, 0, lines, first, last, types)
            seg.sha256.update(os.pread(fd, size, 0))
            seg.size = size
        except BaseException:
            os.close(fd)
            raise
        self.sealed.append(seal(seg, fd, self._feed))
        log.warning("%s: sealed a segment left open by an unclean shutdown (%d lines)", open_path.name, lines)

    def _problem(self, path: Path, message: str) -> None:
        """A file this writer could not repair or recover: said loudly, recording goes on."""
        self._lost.append((message, {"path": str(path), "lines": 0, "bytes": 0}))

    def _write_all(self, fd: int, chunk: _Chunk, data: bytes) -> None:
        view = memoryview(data)
        seg = chunk.segment
        while chunk.offset < len(view):
            n = os.write(fd, view[chunk.offset :])
            if seg is not None:
                seg.sha256.update(view[chunk.offset : chunk.offset + n])
                seg.size += n
            chunk.offset += n
            self._bytes_written += n

    def _fd_for(self, path: Path) -> int:
        f = self._files.get(path)
        if f is None:
            if self._feed not in self._repaired_feeds:
                self._repaired_feeds.add(self._feed)  # (once, even if it fails: reported)
                self._repair_newest(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                repair(fd, path, self._codec)
                st = os.fstat(fd)
            except BaseException:
                os.close(fd)
                raise
            f = self._files[path] = _OpenFile(fd, (st.st_dev, st.st_ino), self._now())
        return f.fd

    def _repair_newest(self, opening: Path) -> None:
        """Repair the tail of this feed's newest day file, whatever its date: a crash shortly
        before midnight tears yesterday's file, which today's run never opens. (Sealed segments
        need no repair: they are fsynced before they get their name.)"""
        feed = self._feed
        for suffix, comp in ((".jsonl", "none"), (".jsonl.zst", "zstd"), (".jsonl.gz", "gzip")):
            days = sorted((p.parent for p in self.root.glob(f"????-??-??/{feed}{suffix}")), reverse=True)
            newest = days[0] / f"{feed}{suffix}" if days else None
            if newest is None or newest == opening:
                continue
            try:
                fd = os.open(newest, os.O_RDWR)
                try:
                    repair(fd, newest, codec(comp))
                finally:
                    os.close(fd)
            except OSError as exc:
                self._problem(
                    newest,
                    f"{newest}: cannot check its tail for a torn last line ({exc.strerror or exc}); readers skip "
                    "a torn line with a warning, and recording goes on",
                )

    def _close_fd(self, path: Path) -> None:
        f = self._files.pop(path)
        try:
            os.fsync(f.fd)
        finally:
            os.close(f.fd)

    async def close(self) -> None:
        if self._segment is not None:
            self._close_current()
            self._to_seal.append(self._segment)
            self._segment, self._path, self._day_end = None, None, -1
        await self.flush()
        await self.seal_ready()
        await asyncio.to_thread(self._close_all)

    def _close_all(self) -> None:
        for path in list(self._files):
            self._close_fd(path)
