"""Reading an archive back: day files and sealed segments, plain or compressed, in time order.

Shared by the ``ssmd`` archive tools (verify, cat, stats, book) and the demo's summary. Reading
streams (bounded memory, whatever the file size) and never fails on what it finds: a line that
is not an archive line (torn by a crash, corrupt), a compressed member that is corrupt or cut
short — each is skipped and reported, naming the file and the line, to the reader's
``on_problem`` (by default a warning on stderr). Callers decide what a problem means (the tools
exit non-zero with ``--strict``; ``ssmd verify`` always does).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .compression import CorruptMember, codec
from .layout import SUFFIXES, compression_of, segment_of, time_order
from .line import parse_line

_BLANK_WITHIN = re.compile(rb"\n[ \t\r]*\n")
_BLANK_FIRST = re.compile(rb"[ \t\r]*\n")


def one_value_per_line(block: bytes, count: int, values: int) -> bool:
    """Whether a block of ``count`` lines that decoded into ``values`` JSON values holds exactly one
    on each line. msgspec's ``decode_lines`` passes over blank lines and reads two objects on one
    line as two, so equal counts alone could hide one of each; with no blank line, every line gave
    at least one value, and equal counts mean one each."""
    return values == count and not _BLANK_WITHIN.search(block) and not _BLANK_FIRST.match(block)


def archive_files(path: Path, feed: str | None = None) -> list[Path]:
    """Archive files under ``path`` (a file, a day directory or the storage root), in time order.

    Segment names sort by time within a day (``kalshi-0900`` < ``kalshi-1000`` < ``kalshi-1000.1``).
    """
    if not path.is_dir():
        return [path]  # a file (or a pipe, a device): read as an archive file
    # The files directly here (a day directory), then each day directory below (the root).
    days = [path, *sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))]  # (SPILL_DIR)
    out = []
    for day in days:
        for p in sorted(day.iterdir(), key=lambda p: time_order(p.name)):
            if p.is_file() and compression_of(p) is not None and (feed is None or _of_feed(p.name, feed)):
                out.append(p)
    return out


def _of_feed(name: str, feed: str) -> bool:
    """``kalshi.jsonl`` and ``kalshi-1000.jsonl.zst`` are feed ``kalshi``'s; ``kalshi2.jsonl`` and
    ``kalshi-b-1000.jsonl`` (feed ``kalshi-b``) are not."""
    if name in (f"{feed}{suffix}" for suffix in SUFFIXES):
        return True
    segment = segment_of(name)
    return segment is not None and segment[0] == feed


@dataclass(frozen=True)
class Problem:
    """Something in an archive file that could not be read as an archive line."""

    path: Path
    line: int
    """1-based line number (of the decompressed content), 0 for the file as a whole."""
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}" if self.line else f"{self.path}: {self.reason}"


def warn(problem: Problem) -> None:
    """On stderr, in one write: several processes (``ssmd export --jobs``) may share it, and a line
    written in pieces could be cut into by another's."""
    sys.stderr.write(f"warning: {problem} (skipped)\n")
    sys.stderr.flush()


def silent(problem: Problem) -> None:
    """For a reader whose problems another reader of the same files reports (said once)."""


@dataclass
class Reader:
    """Reads archive files; counts and reports what it has to skip."""

    on_problem: Callable[[Problem], None] = warn
    problems: int = 0

    def report(self, path: Path, line: int, reason: str) -> None:
        self.problems += 1
        self.on_problem(Problem(path, line, reason))

    def lines(self, path: Path) -> Iterator[tuple[int, bytes]]:
        """``(line number, line without its newline)`` for every complete line of one file (all
        members of a compressed file). A last line without a newline is a torn write: reported,
        not returned. A corrupt or truncated compressed member ends the file, reported."""
        for first, whole, _ in self.blocks(path):
            for i, line in enumerate(whole.split(b"\n")[:-1]):
                yield first + i, line

    def blocks(self, path: Path, chunk: int = 1 << 20) -> Iterator[tuple[int, bytes, int]]:
        """``(number of the first line, whole lines, how many)``: the file's content cut at line
        ends, for readers that decode many lines in one call (``ssmd export``, ``ssmd replay``: a
        call per line costs more than the decoding). A reader that decodes a block whole checks
        that it got one value per line (msgspec's ``decode_lines`` passes over blank lines, and
        reads two objects on one line as two). ``chunk``: bytes read at a time (a block is about
        that much, or what it decompresses to). The same problems as :meth:`lines` are reported,
        the same way."""
        number = 0
        tail = b""
        try:
            with path.open("rb") as f:
                for block in codec(compression_of(path) or "none").stream(f, chunk):
                    data = tail + block if tail else block
                    end = data.rfind(b"\n") + 1
                    tail = data[end:]
                    if end:
                        whole = data[:end] if tail else data
                        count = whole.count(b"\n")
                        yield number + 1, whole, count
                        number += count
        except CorruptMember as exc:
            self.report(path, number + 1, f"{exc}; the rest of the file is not readable")
            return
        except OSError as exc:
            self.report(path, 0, f"cannot read: {exc.strerror or exc}")
            return
        if tail:
            self.report(path, number + 1, f"torn last line ({len(tail)} bytes without a newline)")

    def records(self, path: Path) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """``(line, parsed line)`` for every archive line of one file; anything else is reported."""
        for number, line in self.lines(path):
            obj = parse_line(line)
            if obj is None:
                self.report(path, number, "not an archive line (corrupt or torn)")
                continue
            yield line, obj


def read_lines(path: Path) -> Iterator[bytes]:
    """Every complete line of one archive file, warning on stderr about what cannot be read."""
    for _, line in Reader().lines(path):
        yield line
