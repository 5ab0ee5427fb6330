"""``ssmd verify PATH``: check every sealed segment against its manifest.

For each ``<feed>.manifest.json``, each listed segment is read completely — every compressed
frame decompressed to its end, so a frame cut short is caught (``zstandard``'s stream reader and
DuckDB would silently read less) — and must match its entry: size, SHA-256, every line an archive
line, line count, first/last ``ts``, counts by type. Also problems: segment files the manifest
does not list, an ``.open`` segment older than its interval plus the sealing grace (a crashed
run's leftovers: the next recorder start seals them; days without a manifest are looked at too),
and duplicated lines: byte-identical lines (same receive time to the microsecond, same frame)
carrying a sequence number, within a segment and its numbered parts — a sequenced frame is
unique, so it was stored twice. (Identical lines without a sequence number are listed but not
problems: the exchange does repeat, say, a ticker update within one socket read.) Lists the
day's recorded gaps. Exit 1 on any problem. Read-only: nothing is repaired or moved.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..archive import Problem, Reader
from ..archive.layout import segment_files, segment_of, time_order
from ..archive.line import json_object, parse_line, ts_ns
from ..archive.reading import silent
from ..archive.segments import SEAL_GRACE_NS

DAY_NS = 86_400 * 1_000_000_000


def verify(path: Path, now_ns: int | None = None) -> int:
    if not path.exists():
        print(f"ssmd verify: {path}: no such file or directory", file=sys.stderr)
        return 2
    if not path.is_dir():
        print(f"ssmd verify: {path}: expected the storage root or a day directory", file=sys.stderr)
        return 2
    manifests = sorted(path.glob("*.manifest.json")) + sorted(path.glob("*/*.manifest.json"))
    now = time.time_ns() if now_ns is None else now_ns
    problems = 0
    for mpath in manifests:
        problems += _verify_day(mpath, now)
    # Days (or feeds) without a manifest can still hold segments a crash left open.
    covered = {(m.parent, m.name.removesuffix(".manifest.json")) for m in manifests}
    for day in [path, *sorted(p for p in path.iterdir() if p.is_dir())]:
        for f in sorted(day.glob(".*.open")):
            segment = segment_of(f.name)
            if segment is not None and (day, segment[0]) not in covered:
                problems += _check_open(f, DAY_NS, now)
    if not manifests:
        print(f"ssmd verify: {path}: no manifest found (is storage.rotation set?)", file=sys.stderr)
        return 1
    print(f"{problems} problem(s)")
    return 1 if problems else 0


def _verify_day(mpath: Path, now: int) -> int:
    day = mpath.parent
    manifest = json_object(mpath.read_bytes()) if mpath.is_file() else None
    if manifest is None or not isinstance(manifest.get("segments"), list):
        print(f"{day.name}/{mpath.name}: FAILED: not a manifest (corrupt JSON or no segment list)")
        return 1
    feed = mpath.name.removesuffix(".manifest.json")
    problems = 0
    listed = set()
    groups: dict[str, list[Path]] = {}
    for entry in manifest["segments"]:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(name, str) or segment_of(name) is None:
            print(f"{day.name}/{mpath.name}: FAILED: a segment entry without a proper name: {entry!r}")
            problems += 1
            continue
        listed.add(name)
        issues = _check(day / name, entry)
        status = "ok" if not issues else "FAILED: " + "; ".join(issues)
        print(f"{day.name}/{name}: {entry.get('lines')} lines, {entry.get('bytes')} bytes: {status}")
        problems += bool(issues)
        if (day / name).is_file():
            groups.setdefault(time_order(name)[1], []).append(day / name)
    for p in segment_files(day, feed):
        if p.name not in listed:
            print(f"{day.name}/{p.name}: FAILED: not in the manifest")
            problems += 1
    rotation = _rotation_ns(manifest)
    for p in segment_files(day, feed, open_files=True):
        problems += _check_open(p, rotation, now)
    for files in groups.values():
        problems += _duplicates(sorted(files, key=lambda p: time_order(p.name)))
    gaps = manifest.get("gaps")
    for gap in gaps if isinstance(gaps, list) else []:
        if isinstance(gap, dict):
            print(
                f"{day.name}: gap at {gap.get('ts')} on {gap.get('shard')} sid {gap.get('sid')} "
                f"({gap.get('channel')}): expected seq {gap.get('expected')}, got {gap.get('got')}"
            )
    if manifest.get("disconnects"):
        print(f"{day.name}: {manifest['disconnects']} unplanned disconnect(s) (see {feed}.events.jsonl)")
    return problems


def _check(path: Path, entry: dict[str, Any]) -> list[str]:
    if not path.is_file():
        return ["file missing"]
    issues = []
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    if size != entry.get("bytes"):
        issues.append(f"size {size} != {entry.get('bytes')}")
    if digest.hexdigest() != entry.get("sha256"):
        issues.append("SHA-256 mismatch")
    unreadable: list[Problem] = []
    reader = Reader(on_problem=unreadable.append)
    lines = 0
    first = last = None
    types: Counter[str] = Counter()
    for _, obj in reader.records(path):
        lines += 1
        first = first or obj["ts"]
        last = obj["ts"]
        data = obj["data"]
        if isinstance(data, dict) and isinstance(data.get("type"), str) and "enc" not in obj:
            types[data["type"]] += 1
    issues += [f"line {p.line}: {p.reason}" if p.line else p.reason for p in unreadable[:3]]
    if len(unreadable) > 3:
        issues.append(f"and {len(unreadable) - 3} more unreadable line(s)")
    if lines != entry.get("lines"):
        issues.append(f"{lines} lines, manifest says {entry.get('lines')}")
    if (first, last) != (entry.get("first_ts"), entry.get("last_ts")):
        issues.append("first/last ts differ from the manifest")
    if entry.get("types") and dict(types) != entry["types"]:  # (generic feeds record no types)
        issues.append("counts by type differ from the manifest")
    return issues


def _rotation_ns(manifest: dict[str, Any]) -> int:
    """The segment length: recorded in the manifest; for manifests written before it was, the
    smallest step between segment start times, else a day (which flags only earlier days)."""
    seconds = manifest.get("rotation_seconds")
    if type(seconds) is int and seconds > 0:
        return seconds * 1_000_000_000
    names = [s.get("name") for s in manifest["segments"] if isinstance(s, dict)]
    starts = sorted(
        {int(h[:2]) * 60 + int(h[2:]) for h in (time_order(n)[1] for n in names if isinstance(n, str)) if h}
    )
    steps = [b - a for a, b in itertools.pairwise(starts)]
    return min(steps) * 60 * 1_000_000_000 if steps else DAY_NS


def _check_open(path: Path, rotation_ns: int, now: int) -> int:
    day = path.parent.name
    hhmm = time_order(path.name.lstrip("."))[1]
    try:
        start = ts_ns(f"{day}T{hhmm[:2]}:{hhmm[2:]}:00")
    except ValueError:
        start = 0  # (not in a day directory: its time is unknown, so it is old)
    where = f"{day}/{path.name}"
    if now < start + rotation_ns + SEAL_GRACE_NS:
        print(f"{where}: open (being written: its interval has not ended)")
        return 0
    print(
        f"{where}: FAILED: left open past its interval and the sealing grace (a run that crashed; "
        "the next recorder start repairs and seals it)"
    )
    return 1


def _duplicates(files: list[Path]) -> int:
    """Byte-identical lines within one time slot's segment and its parts, in bounded memory: a
    first pass sets two bits per line in a bitmap of 32 bits a line (a Bloom filter) and keeps the
    hashes of the lines whose bits were all set already — every duplicate, and ~0.5 % of lines
    falsely; a second pass compares those lines themselves, so nothing is reported falsely."""
    # (unreadable lines are reported once, by the segment check: these readers are silent)
    expected = sum(1 for f in files for _ in Reader(on_problem=silent).lines(f))
    bits = max(1 << 16, 1 << (32 * max(expected, 1) - 1).bit_length())
    bitmap = bytearray(bits // 8)
    mask = bits - 1
    candidates: set[int] = set()
    for path in files:
        for _, line in Reader(on_problem=silent).lines(path):
            h = hash(line)
            a, b = h & mask, (h >> 32) & mask
            if bitmap[a >> 3] & (1 << (a & 7)) and bitmap[b >> 3] & (1 << (b & 7)):
                candidates.add(h)
            bitmap[a >> 3] |= 1 << (a & 7)
            bitmap[b >> 3] |= 1 << (b & 7)
    if not candidates:
        return 0
    seen_lines: dict[bytes, tuple[Path, int]] = {}
    duplicates = repeats = 0
    example = ""
    for path in files:
        for number, line in Reader(on_problem=silent).lines(path):
            if hash(line) not in candidates:
                continue
            if line not in seen_lines:
                seen_lines[line] = (path, number)
                continue
            obj = parse_line(line)
            data = obj.get("data") if obj is not None else None
            if not (isinstance(data, dict) and type(data.get("seq")) is int):
                repeats += 1  # no sequence number: the exchange may repeat such a message
                continue
            duplicates += 1
            if not example:
                first_path, first_number = seen_lines[line]
                example = f"{path.name}:{number} repeats {first_path.name}:{first_number}"
    where = f"{files[0].parent.name}/{files[0].name}"
    if repeats:
        print(
            f"{where}: {repeats} repeated line(s) without a sequence number (e.g. a ticker update the exchange "
            "sent twice in one read): not counted as problems"
        )
    if not duplicates:
        return 0
    print(f"{where}: FAILED: {duplicates} duplicated line(s) of sequenced data, e.g. {example}")
    return 1
