"""The archive as a stream of Kalshi messages in receive order, read incrementally.

Why its own reader: replay must not load an archive (days of it can be far larger than memory),
and it needs, per line, only the receive time, the message type, the market and the exact ``msg``
bytes — so each line is matched, not parsed into objects, and each frame is decoded once into
just those members. Files come in time order (:func:`~ssmd_connector.archive.reading.archive_files`);
a feed's files were written in receive order, so reading them in turn is the receive order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

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
    """One archived data message: receive time (ns), type, market ("" for none), exact ``msg`` bytes."""

    ns: int
    kind: str
    ticker: str
    msg: bytes


def messages(root: Path, feed: str | None, start_ns: int = 0, end_ns: int = 0) -> Iterator[Recorded]:
    """Data messages archived under ``root`` (for ``feed``), ``start_ns <= ns < end_ns`` (0: open),
    in receive order. Replies to the recorder's own commands are not market data: left out."""
    reader = Reader()
    for path in archive_files(root, feed):
        for _, line in reader.lines(path):
            obj = parse_line(line)
            if obj is None or obj.get("enc"):
                continue  # (reported by the reader) / not JSON: nothing a Kalshi client would get
            ns = ts_ns(obj["ts"])
            if ns < start_ns:
                continue
            if end_ns and ns >= end_ns:
                return
            try:
                frame = _frame.decode(frame_of(line, obj))
                if not frame.msg or frame.type in CONTROL_TYPES:
                    continue
                head = _head.decode(frame.msg)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            yield Recorded(ns, frame.type, head.market_ticker, bytes(frame.msg))
