"""Reading an archive back: day files and sealed segments, plain or compressed, in time order.

Shared by the ``ssmd`` archive tools (verify, cat, stats, book).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .writers.segments import decompress_all, time_order

SUFFIXES = {".jsonl": "none", ".jsonl.zst": "zstd", ".jsonl.gz": "gzip"}


def compression_of(path: Path) -> str | None:
    """The compression of an archive file by its name; ``None`` for files that are not archives
    (ledgers, manifests, open segments, quarantined tails)."""
    name = path.name
    if name.startswith(".") or ".torn-" in name or name.endswith(".events.jsonl"):
        return None
    for suffix, compression in SUFFIXES.items():
        if name.endswith(suffix):
            return compression
    return None


def archive_files(path: Path, feed: str | None = None) -> list[Path]:
    """Archive files under ``path`` (a file, a day directory or the storage root), in time order.

    Segment names sort by time within a day (``kalshi-0900`` < ``kalshi-1000`` < ``kalshi-1000.1``).
    """
    if path.is_file():
        return [path]
    days = (
        [path]
        if any(compression_of(p) for p in path.iterdir() if p.is_file())
        else sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))  # (.nats-spill)
    )
    out = []
    for day in days:
        for p in sorted(day.iterdir(), key=lambda p: time_order(p.name)):
            if p.is_file() and compression_of(p) is not None and (feed is None or p.name.startswith(feed)):
                out.append(p)
    return out


def read_lines(path: Path) -> Iterator[bytes]:
    """Every line of one archive file (all members of a compressed file)."""
    compression = compression_of(path) or "none"
    yield from decompress_all(path.read_bytes(), compression).splitlines()
