"""Sealed segments and the day manifest.

With ``storage.rotation`` set, the archive is cut into segments aligned to the UTC clock
(``rotation: 1h`` → one segment per hour, holding exactly that hour's frames by receive time):
``<date>/<feed>-<HHMM>.jsonl[.zst|.gz]``. A segment is written under a hidden temporary name,
``<date>/.<feed>-<HHMM>.jsonl[.zst|.gz].open``; sealing fsyncs it, renames it atomically to its
final name and fsyncs the directory, so a sealed file is always complete. A crash leaves only an
``.open`` file, which the next start repairs (torn tail cut at a line or compressed-frame
boundary) and seals. Frames that arrive for a segment already sealed (a long stall) go to a
numbered part, ``<feed>-<HHMM>.1.jsonl…``, never into a sealed file.

``<date>/<feed>.manifest.json`` — rewritten atomically at each seal — lists per segment its name,
first/last ``ts``, line count, bytes, SHA-256 and frame counts by message type, plus the day's
gaps and disconnects from the coverage ledger.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..clock import TimestampFormatter
from .compression import Codec, decompress
from .layout import aside, manifest_path, segment_files, time_order
from .ledger import summary as ledger_summary
from .line import json_object, parse_line, ts_ns

log = logging.getLogger(__name__)

SEAL_GRACE_NS = 10 * 1_000_000_000
"""A segment is sealed on time this long after its end, leaving frames stamped before the
boundary but still queued the time to land in it."""


@dataclass
class Segment:
    """A segment being written, and what the manifest will say about it."""

    directory: Path
    stem: str  # <feed>-<HHMM>[.<part>]
    suffix: str  # .jsonl[.zst|.gz]
    start_ns: int
    end_ns: int
    lines: int = 0
    first_ns: int = 0
    last_ns: int = 0
    types: Counter[str] = field(default_factory=Counter)
    sha256: Any = field(default_factory=hashlib.sha256)
    size: int = 0

    @property
    def name(self) -> str:
        return self.stem + self.suffix

    def forget_contents(self) -> None:
        """Its open file is gone (deleted under us): describe only what is written from now on."""
        self.lines = self.first_ns = self.last_ns = self.size = 0
        self.types = Counter()
        self.sha256 = hashlib.sha256()

    @property
    def open_path(self) -> Path:
        return self.directory / f".{self.name}.open"

    @property
    def final_path(self) -> Path:
        return self.directory / self.name

    def entry(self) -> dict[str, Any]:
        fmt = TimestampFormatter().format
        return {
            "name": self.name,
            "first_ts": fmt(self.first_ns).decode() if self.lines else None,
            "last_ts": fmt(self.last_ns).decode() if self.lines else None,
            "lines": self.lines,
            "bytes": self.size,
            "sha256": self.sha256.hexdigest(),
            "types": dict(sorted(self.types.items())),
        }


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at ``path`` (``{}`` when there is none). One that is not readable (a bad edit,
    a disk error) is moved aside as ``<name>.corrupt-<ns>`` with a warning, and ``{}`` returned:
    the writer then lists the day's sealed segments again from the files themselves."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    data = json_object(raw)
    segments = data.get("segments") if data is not None else None
    if data is None or not isinstance(segments, list):
        kept = aside(path, "corrupt", time.time_ns())
        os.replace(path, kept)
        log.warning("%s: not a readable manifest; moved to %s and rebuilt from the segment files", path, kept.name)
        return {}
    data["segments"] = [e for e in segments if isinstance(e, dict) and isinstance(e.get("name"), str)]
    return data


def reconcile(directory: Path, feed: str, codec: Codec) -> list[str]:
    """Add sealed segments the manifest does not list (a crash between the rename and the
    manifest write) — computed from the files themselves. Returns the names added."""
    mpath = manifest_path(directory, feed)
    manifest = read_manifest(mpath) or {"date": directory.name, "feed": feed, "segments": []}
    listed = {s["name"] for s in manifest["segments"]}
    suffix = f".jsonl{codec.suffix}"
    added = []
    for path in segment_files(directory, feed):
        if path.name in listed or not path.name.endswith(suffix):
            continue
        raw = path.read_bytes()
        lines, first, last, types = scan_lines(path, codec)
        seg = Segment(directory, path.name[: -len(suffix)], suffix, 0, 0, lines, first, last, types)
        seg.sha256.update(raw)
        seg.size = len(raw)
        manifest["segments"].append(seg.entry())
        added.append(path.name)
    if added:
        manifest["segments"].sort(key=lambda s: time_order(s["name"]))
        manifest.update(ledger_summary(directory, feed))
        atomic_write(mpath, json.dumps(manifest, indent=1).encode() + b"\n")
    return added


def seal(segment: Segment, fd: int, feed: str) -> Path:
    """fsync, rename to the final name, fsync the directory, record it in the manifest."""
    os.fsync(fd)
    os.close(fd)
    final = segment.final_path
    if final.exists():  # never overwrite a sealed file
        final = _next_part(segment)
    os.rename(segment.open_path, final)
    fsync_dir(segment.directory)
    entry = segment.entry()
    entry["name"] = final.name
    mpath = manifest_path(segment.directory, feed)
    manifest = read_manifest(mpath) or {"date": segment.directory.name, "feed": feed, "segments": []}
    manifest["segments"] = [s for s in manifest["segments"] if s["name"] != final.name] + [entry]
    manifest["segments"].sort(key=lambda s: time_order(s["name"]))
    if segment.end_ns > segment.start_ns:  # (a recovered segment does not know its interval)
        manifest["rotation_seconds"] = (segment.end_ns - segment.start_ns) // 1_000_000_000
    manifest.update(ledger_summary(segment.directory, feed))
    atomic_write(mpath, json.dumps(manifest, indent=1).encode() + b"\n")
    return final


def _next_part(segment: Segment) -> Path:
    base = segment.stem.split(".")[0]
    n = 1
    while (segment.directory / f"{base}.{n}{segment.suffix}").exists():  # (segment_stem's parts)
        n += 1
    return segment.directory / f"{base}.{n}{segment.suffix}"


def scan_lines(path_or_fd: Path | int, codec: Codec, size: int | None = None) -> tuple[int, int, int, Counter[str]]:
    """Lines, first and last receive ns, and types of an archive file (decompressing as needed).

    Used on files just repaired (or sealed by this code), whose every line parses; a line that
    does not is not counted, and ``ssmd verify`` reports it."""
    if isinstance(path_or_fd, int):
        raw = os.pread(path_or_fd, size or os.fstat(path_or_fd).st_size, 0)
    else:
        raw = path_or_fd.read_bytes()
    text = decompress(raw, codec.name)
    lines = 0
    first = last = 0
    types: Counter[str] = Counter()
    for line in text.splitlines():
        obj = parse_line(line)
        if obj is None:
            continue
        try:
            ns = ts_ns(obj["ts"])
        except ValueError:
            continue
        first = first or ns
        last = ns
        lines += 1
        data = obj.get("data")
        if isinstance(data, dict) and isinstance(data.get("type"), str) and "enc" not in obj:
            types[data["type"]] += 1
    return lines, first, last, types
