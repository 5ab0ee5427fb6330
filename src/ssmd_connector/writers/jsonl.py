"""Date-partitioned JSONL archive: ``<root>/<YYYY-MM-DD>/<feed>.jsonl``.

Lines are built on the event loop (cheap) into an in-memory buffer; the buffer is handed to the OS
in a worker thread (file I/O can stall for milliseconds and must not stall the socket readers).
The date directory comes from each message's receive timestamp, so a file never holds two days.

Crash safety: lines are appended whole, so after a crash the only possible damage is a torn last
line. The first time this process opens a file it checks the tail; a torn or unparsable last
line is moved to ``<feed>.jsonl.torn-<unix ns>`` (kept, never deleted) and cut off, so every line
of the archive parses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from ..clock import NowNs, day_bounds, day_of, wall_clock_ns
from ..errors import WriteFailed
from ..message import ArchivedLines, LineEncoder, Message
from .compression import Codec, codec
from .segments import Segment, reconcile, scan_lines, seal

log = logging.getLogger(__name__)

FLUSH_BYTES = 1 << 20
"""Flush early once this much is buffered (keeps memory flat under a firehose)."""

MAX_BACKLOG = 256 << 20
"""While writes fail (disk full, read-only), buffer at most this much before reading pauses."""

_TAIL_CHUNK = 1 << 16

SEAL_GRACE_NS = 10 * 1_000_000_000
"""A segment is sealed on time this long after its end, leaving frames stamped before the
boundary but still queued the time to land in it."""


@dataclass
class _Chunk:
    """Lines for one file, as the byte strings the encoder produced (no copy before the OS)."""

    path: Path
    parts: list[bytes]
    segment: Segment | None = None
    blob: bytes | None = None
    """The compressed member for ``parts`` (compressed files), made once, kept for retries."""
    done: int = 0
    """How many of ``parts`` are fully written."""
    offset: int = 0
    """Bytes of ``parts[done]`` already written."""


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
        self._fds: dict[Path, int] = {}
        self._bytes_written = 0
        self._lines_written = 0

    @property
    def bytes_written(self) -> int:
        return self._bytes_written

    def path_for(self, feed: str, ns: int) -> Path:
        """The day file (no rotation), or the open segment's temporary path."""
        if self._rotation_ns:
            return self._segment_for(feed, ns).open_path
        return self.root / day_of(ns) / f"{feed}.jsonl{self._codec.suffix}"

    def _segment_for(self, feed: str, ns: int) -> Segment:
        """The segment for ``ns``: ``<feed>-<HHMM>``, or its next free part ``<feed>-<HHMM>.<n>``.

        Every segment gets a name no other file has used (sealed, open, or left open by a crash),
        so an open file always holds one segment's data and a checkpoint can name it.
        """
        start = ns - ns % self._rotation_ns
        hhmm = datetime.fromtimestamp(start // 1_000_000_000, UTC).strftime("%H%M")
        seg = Segment(
            self.root / day_of(ns), f"{feed}-{hhmm}", f".jsonl{self._codec.suffix}", start, start + self._rotation_ns
        )
        part = 0
        while seg.final_path.exists() or seg.open_path.exists() or seg.open_path in self._used:
            part += 1
            seg.stem = f"{feed}-{hhmm}.{part}"
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
            seg = self._segment
            if seg is not None:  # what the manifest will say
                seg.lines += i - begin
                seg.first_ns = seg.first_ns or batch[begin].received_ns
                seg.last_ns = batch[i - 1].received_ns
                seg.types.update(m.kind for m in batch[begin:i] if m.kind)
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
            self._pending.append(_Chunk(self._path, self._parts, self._segment))
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
            return
        chunks = self._pending
        self._pending = []
        try:
            await asyncio.to_thread(self._write_chunks, chunks)
        except OSError as exc:
            # Keep whatever was not written, in order, ahead of anything buffered since.
            self._pending = [c for c in chunks if c.done < len(c.parts)] + self._pending
            self._size = sum(len(p) for c in self._pending for p in c.parts)
            raise WriteFailed(f"cannot write archive file {chunks[0].path}: {exc.strerror or exc}") from exc

    def _write_chunks(self, chunks: list[_Chunk]) -> None:
        """Runs in a worker thread. Records progress so a failure can resume exactly."""
        if self._rotation_ns and not self._recovered:
            self._recover_open_segments()
            self._recovered = True
        for chunk in chunks:
            fd = self._fd_for(chunk.path)
            if self._codec.name != "none":
                if chunk.blob is None:
                    chunk.blob = self._codec.compress(b"".join(chunk.parts))
                self._write_all(fd, chunk, chunk.blob)
                chunk.done = len(chunk.parts)
                continue
            parts = chunk.parts
            while chunk.done < len(parts):
                self._write_all(fd, chunk, parts[chunk.done])
                chunk.done += 1
                chunk.offset = 0
        for path, fd in self._fds.items():
            if self._durable:
                os.fsync(fd)
            self.sizes[path] = os.fstat(fd).st_size
        if self._durable:  # the caller seals after checkpointing (seal_ready)
            self._sealable += self._to_seal
            self._to_seal.clear()
        self._seal(self._to_seal)
        # Files of past days (or other feeds) will not be appended to again: close them.
        current = self._path
        for path in [p for p in self._fds if p != current]:
            self._close_fd(path)

    def _seal(self, segments: list[Segment]) -> None:
        while segments:  # segments whose data is all written: seal them, oldest first
            seg = segments[0]
            fd = self._fds.pop(seg.open_path, None)
            if fd is None and seg.open_path.exists():  # closed meanwhile (durable mode seals later)
                fd = os.open(seg.open_path, os.O_RDWR)
            if fd is not None:  # (a segment that never got data has no file)
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
        for path in self.root.glob(f"*/.{feed}-*.open"):
            size = sizes.get(path, 0)
            if path.stat().st_size > size:
                fd = os.open(path, os.O_RDWR)
                try:
                    _quarantine(fd, path, size, os.fstat(fd).st_size)
                finally:
                    os.close(fd)

    def _recover_open_segments(self) -> None:
        """Repair and seal what a crashed run left open, and complete the manifests a crash may
        have left behind a seal (runs once, before anything is written)."""
        suffix = f".jsonl{self._codec.suffix}"
        days = {p.parent for p in self.root.glob(f"*/.{self._feed}-*.open")}
        days |= set(sorted(p for p in self.root.glob("????-??-??") if p.is_dir())[-2:])
        for day in sorted(days):
            for name in reconcile(day, self._feed, self._codec):
                log.warning("%s/%s: sealed but missing from the manifest (unclean shutdown): added", day.name, name)
        for open_path in sorted(self.root.glob(f"*/.{self._feed}-*.open")):  # ours only: others may be live
            name = open_path.name[1 : -len(".open")]
            if not name.endswith(suffix):
                log.warning("%s: left by a run with another compression setting; not touched", open_path)
                continue
            fd = os.open(open_path, os.O_RDWR)
            try:
                if self._codec.name == "none":
                    repair_tail(fd, open_path)
                else:
                    repair_compressed(fd, open_path, self._codec)
                size = os.fstat(fd).st_size
                lines, first, last, types = scan_lines(fd, self._codec, size)
                seg = Segment(open_path.parent, name[: -len(suffix)], suffix, 0, 0, lines, first, last, types)
                seg.sha256.update(os.pread(fd, size, 0))
                seg.size = size
            except BaseException:
                os.close(fd)
                raise
            feed = seg.stem.rsplit("-", 1)[0]
            self.sealed.append(seal(seg, fd, feed))
            log.warning("%s: sealed a segment left open by an unclean shutdown (%d lines)", open_path.name, lines)

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
        fd = self._fds.get(path)
        if fd is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                if self._codec.name == "none":
                    repair_tail(fd, path)
                else:
                    repair_compressed(fd, path, self._codec)
            except BaseException:
                os.close(fd)
                raise
            self._fds[path] = fd
        return fd

    def _close_fd(self, path: Path) -> None:
        fd = self._fds.pop(path)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def close(self) -> None:
        if self._segment is not None:
            self._close_current()
            self._to_seal.append(self._segment)
            self._segment, self._path, self._day_end = None, None, -1
        await self.flush()
        await self.seal_ready()
        await asyncio.to_thread(self._close_all)

    def _close_all(self) -> None:
        for path in list(self._fds):
            self._close_fd(path)


def repair_tail(fd: int, path: Path) -> int:
    """Cut a torn or unparsable last line off an archive file, keeping it in a side file.

    Returns the number of bytes moved aside (0 when the file was clean).
    """
    size = os.fstat(fd).st_size
    cut = size
    while cut > 0:
        start = _last_line_start(fd, cut)
        line = os.pread(fd, cut - start, start)
        if line.endswith(b"\n") and _parses(line):
            break
        cut = start
    if cut == size:
        return 0
    return _quarantine(fd, path, cut, size)


def repair_compressed(fd: int, path: Path, codec: Codec) -> int:
    """Cut a compressed file back to its last complete member, keeping the torn tail aside."""
    size = os.fstat(fd).st_size
    cut = codec.complete_prefix(fd, size) if size else 0
    if cut == size:
        return 0
    return _quarantine(fd, path, cut, size)


def _quarantine(fd: int, path: Path, cut: int, size: int) -> int:
    torn = os.pread(fd, size - cut, cut)
    side = path.with_name(f"{path.name}.torn-{time.time_ns()}")
    side.write_bytes(torn)
    os.ftruncate(fd, cut)
    os.fsync(fd)
    log.warning("%s: repaired a torn tail after an unclean shutdown: %d bytes moved to %s", path, len(torn), side.name)
    return len(torn)


def _last_line_start(fd: int, end: int) -> int:
    """Offset where the line ending at ``end`` (exclusive, maybe without newline) begins."""
    pos = end - 1  # skip the line's own terminator, if any
    while pos > 0:
        lo = max(0, pos - _TAIL_CHUNK)
        chunk = os.pread(fd, pos - lo, lo)
        nl = chunk.rfind(b"\n")
        if nl != -1:
            return lo + nl + 1
        pos = lo
    return 0


def _parses(line: bytes) -> bool:
    try:
        msgspec.json.decode(line)
    except msgspec.DecodeError:
        return False
    return True
