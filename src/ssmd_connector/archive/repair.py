"""Repair at start: a crash can only tear the last line of a file (lines are appended whole) or
its last compressed member (each flush is one). The torn tail is cut off and kept beside the file
as ``<name>.torn-<unix ns>`` — never deleted — so every line of the archive parses."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from .compression import Codec
from .layout import aside
from .line import parse_line

log = logging.getLogger(__name__)

_TAIL_CHUNK = 1 << 16


def _is_archive_line(line: bytes) -> bool:
    return parse_line(line) is not None


def repair(fd: int, path: Path, file_codec: Codec) -> int:
    """Cut a torn tail off an archive file (plain or compressed), keeping it in a side file."""
    if file_codec.name == "none":
        return repair_tail(fd, path)
    return repair_compressed(fd, path, file_codec)


def repair_tail(fd: int, path: Path, valid: Callable[[bytes], bool] = _is_archive_line) -> int:
    """Cut a torn or unparsable last line off a JSON-lines file, keeping it in a side file.

    A last line is kept when it ends with a newline and ``valid`` accepts it — for archive files,
    the readers' own rule. Returns the number of bytes moved aside (0 when the file was clean).
    """
    size = os.fstat(fd).st_size
    cut = size
    while cut > 0:
        start = _last_line_start(fd, cut)
        line = os.pread(fd, cut - start, start)
        if line.endswith(b"\n") and valid(line):
            break
        cut = start
    if cut == size:
        return 0
    return quarantine(fd, path, cut, size)


def repair_compressed(fd: int, path: Path, codec: Codec) -> int:
    """Cut a compressed file back to its last complete member, keeping the torn tail aside."""
    size = os.fstat(fd).st_size
    cut = codec.complete_prefix(fd, size) if size else 0
    if cut == size:
        return 0
    return quarantine(fd, path, cut, size)


def quarantine(fd: int, path: Path, cut: int, size: int) -> int:
    torn = os.pread(fd, size - cut, cut)
    side = aside(path, "torn", time.time_ns())
    try:
        side.write_bytes(torn)
    except OSError:  # (a full disk): no empty side file left behind for every retry
        with contextlib.suppress(OSError):
            side.unlink()
        raise
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
