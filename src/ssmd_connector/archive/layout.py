"""Where things are in an archive, and what they are called.

``<storage.path>/<YYYY-MM-DD>/``, per feed:

* ``<feed>.jsonl[.zst|.gz]`` — the day file (no ``storage.rotation``);
* ``<feed>-<HHMM>[.<part>].jsonl[.zst|.gz]`` — sealed segments (with ``rotation``), and
  ``.<feed>-<HHMM>[.<part>].jsonl[.zst|.gz].open`` the one being written;
* ``<feed>.manifest.json`` — the day's segments (:mod:`.segments`);
* ``<feed>.events.jsonl`` — the coverage ledger (:mod:`.ledger`);
* ``*.torn-<ns>`` — torn tails moved aside by the repair at start (:mod:`.repair`),
  ``*.corrupt-<ns>`` — unreadable manifests moved aside.

A feed's files are matched by name exactly: feed ``kalshi`` never claims ``kalshi-b-1000.jsonl``
(feed ``kalshi-b``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from ..clock import day_of

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


def day_file(root: Path, feed: str, ns: int, suffix: str) -> Path:
    """The day file holding the frames of feed ``feed`` received at ``ns``."""
    return root / day_of(ns) / f"{feed}{suffix}"


SPILL_DIR = ".nats-spill"
"""Under the storage root: the NATS backlog that did not fit in memory (``nats.spill_mb``)."""
UPLOAD_LEDGER = ".uploads.jsonl"
"""Under the storage root: what was uploaded to object storage, and verified."""


def checkpoint_path(root: Path, feed: str) -> Path:
    """The archiver's checkpoint of ``feed`` (stream sequence and open files' sizes)."""
    return root / f".archiver-{feed}.json"


def segment_stem(feed: str, start_ns: int, part: int = 0) -> str:
    """``<feed>-<HHMM>`` for the segment starting at ``start_ns``, or its numbered part
    ``<feed>-<HHMM>.<part>`` (frames that came after it was sealed)."""
    hhmm = datetime.fromtimestamp(start_ns // 1_000_000_000, UTC).strftime("%H%M")
    return f"{feed}-{hhmm}" + (f".{part}" if part else "")


def aside(path: Path, why: str, ns: int) -> Path:
    """Where a damaged piece of ``path`` is kept, never deleted: ``<name>.torn-<ns>`` for a torn
    tail, ``<name>.corrupt-<ns>`` for an unreadable manifest."""
    return path.with_name(f"{path.name}.{why}-{ns}")


def ledger_path(day: Path, feed: str) -> Path:
    """The coverage ledger of ``feed`` for the day directory ``day``."""
    return day / f"{feed}.events.jsonl"


def ledger_files(path: Path) -> list[Path]:
    """The coverage ledgers under ``path`` (the storage root or a day directory), or ``path``
    itself when it is one."""
    if path.is_file():
        return [path] if path.name.endswith(".events.jsonl") else []
    return sorted(path.glob("*.events.jsonl")) + sorted(path.glob("*/*.events.jsonl"))


def manifest_path(directory: Path, feed: str) -> Path:
    return directory / f"{feed}.manifest.json"


_ROTATION = re.compile(r"^(\d+)([mh])$")


def parse_rotation(text: str) -> int:
    """``15m`` / ``1h`` → seconds; must divide a day, at least a minute."""
    m = _ROTATION.match(text.strip())
    if not m:
        raise ValueError(f"expected a duration like 15m or 1h, got {text!r}")
    seconds = int(m.group(1)) * (60 if m.group(2) == "m" else 3600)
    if seconds < 60 or 86_400 % seconds:
        raise ValueError(f"rotation must be at least 1m and divide 24h evenly, got {text!r}")
    return seconds


_SEGMENT_NAME = re.compile(r"^(?P<feed>.+)-(?P<hhmm>\d{4})(?:\.(?P<part>\d+))?\.jsonl")

_SEGMENT_FILE = re.compile(
    r"^(?P<open>\.)?(?P<feed>.+)-(?P<hhmm>\d{4})(?:\.(?P<part>\d+))?(?P<suffix>\.jsonl(?:\.zst|\.gz)?)(?(open)\.open)$"
)


def segment_of(name: str) -> tuple[str, str, bool] | None:
    """``(feed, suffix, open)`` when ``name`` is a segment file (sealed, or ``.<name>.open``).

    The feed is everything before the last ``-HHMM``, compared whole by callers: feed ``kalshi``
    must not claim ``kalshi-b-1000.jsonl`` (feed ``kalshi-b``), nor ``kalshi-b.events.jsonl``."""
    m = _SEGMENT_FILE.match(name)
    if m is None:
        return None
    return m["feed"], m["suffix"], m["open"] is not None


def segment_files(directory: Path, feed: str, *, open_files: bool = False) -> list[Path]:
    """This feed's sealed segments (or, with ``open_files``, its ``.open`` ones) in ``directory``,
    in time order."""
    out = []
    for p in directory.glob(f".{feed}-*.open" if open_files else f"{feed}-*.jsonl*"):
        seg = segment_of(p.name)
        if seg is not None and seg[0] == feed and seg[2] == open_files:
            out.append(p)
    return sorted(out, key=lambda p: time_order(p.name.lstrip(".")))


def time_order(name: str) -> tuple[str, str, int, str]:
    """Sort key putting archive files of a day in time order: ``kalshi-1000`` < ``kalshi-1000.1``
    < ``kalshi-1000.2`` < ``kalshi-1000.10`` < ``kalshi-1100`` (plain string order would not)."""
    m = _SEGMENT_NAME.match(name)
    if m is None:
        return (name, "", 0, name)
    return (m["feed"], m["hhmm"], int(m["part"] or 0), name)
