"""The archive as a stream of Kalshi messages in receive order, read incrementally.

Why its own reader: replay must not load an archive (days of it can be far larger than memory),
and it needs, per line, only the receive time, the message type, the market and the exact ``msg``
bytes — so each line is matched, not parsed into objects, and each frame is decoded once into
just those members. Files come in time order (:func:`~ssmd_connector.archive.reading.archive_files`);
a feed's files were written in receive order, so reading them in turn is the receive order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ..archive.layout import segment_of
from ..archive.line import frame_of, parse_line, ts_ns
from ..archive.reading import Reader, archive_files
from ..kalshi.wire import CONTROL_TYPES


class _Frame(msgspec.Struct, gc=False):
    type: str = ""
    msg: msgspec.Raw = msgspec.Raw(b"")


class _Head(msgspec.Struct, gc=False):
    market_ticker: str = ""


_frame = msgspec.json.Decoder(_Frame)
_head = msgspec.json.Decoder(_Head)


@dataclass(frozen=True, slots=True)
class Recorded:
    """One archived data message: receive time (ns), type, market ("" for none), exact ``msg``
    bytes; ``live`` is False for an order-book message before the window, read only to build the
    books the window starts with."""

    ns: int
    kind: str
    ticker: str
    msg: bytes
    live: bool = True


_BOOK_TYPES = frozenset({"orderbook_snapshot", "orderbook_delta"})


def feeds_in(root: Path) -> set[str]:
    """The feeds whose archive files are under ``root``."""
    out = set()
    for path in archive_files(root):
        segment = segment_of(path.name)
        out.add(segment[0] if segment is not None else path.name.split(".", 1)[0])
    return out


def messages(
    root: Path, feed: str | None, start_ns: int = 0, end_ns: int = 0, stop: threading.Event | None = None
) -> Iterator[Recorded]:
    """Data messages archived under ``root`` (for ``feed``), ``start_ns <= ns < end_ns`` (0: open),
    in receive order — and before them (``live=False``) the order-book messages since the archive
    began, so books are right at ``start_ns``. Replies to the recorder's own commands are not market
    data: left out. Unreadable lines are skipped and reported. ``stop`` ends the reading early."""
    reader = Reader()
    for path in archive_files(root, feed):
        for number, line in reader.lines(path):
            if stop is not None and stop.is_set():
                return
            obj = parse_line(line)
            if obj is None:
                reader.report(path, number, "not an archive line (corrupt or torn)")
                continue
            if obj.get("enc"):
                continue  # not JSON: nothing a Kalshi client would be sent
            try:
                ns = ts_ns(obj["ts"])
            except (ValueError, OverflowError):
                reader.report(path, number, f"not a receive time: {obj['ts']!r}")
                continue
            if end_ns and ns >= end_ns:
                return
            try:
                frame = _frame.decode(frame_of(line, obj))
                if not frame.msg or frame.type in CONTROL_TYPES:
                    continue
                live = ns >= start_ns
                if not live and frame.type not in _BOOK_TYPES:
                    continue
                head = _head.decode(frame.msg)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            yield Recorded(ns, frame.type, head.market_ticker, bytes(frame.msg), live)
