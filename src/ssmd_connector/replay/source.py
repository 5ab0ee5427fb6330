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
from pathlib import Path

import msgspec

from ..archive.layout import segment_of
from ..archive.line import MAX_JSON_DEPTH, SHALLOW_BYTES, TS_WIDTH, ts_ns, ts_text, within_depth, written_ts
from ..archive.reading import Reader, archive_files, one_value_per_line
from ..kalshi.wire import CONTROL_TYPES


class _Frame(msgspec.Struct, gc=False):
    type: str = ""
    sid: int = 0
    seq: int | None = None
    msg: msgspec.Raw = msgspec.Raw(b"")


class _Line(msgspec.Struct, gc=False):
    """A verbatim archive line, decoded in one pass: its receive time and its frame's type and
    ``msg`` (exact bytes). A line stored with ``enc`` fails here (its ``data`` is a string)."""

    ts: str
    data: _Frame


class _Encoded(msgspec.Struct, gc=False):
    enc: str = ""


class Head(msgspec.Struct, gc=False):
    """What the replay needs of a ``msg``: its market, and for a delta what it changes — so one
    decode serves both routing and the books."""

    market_ticker: str = ""
    side: str = ""
    price_dollars: str = ""
    delta_fp: str = ""


_line = msgspec.json.Decoder(_Line)
_encoded = msgspec.json.Decoder(_Encoded)
_head = msgspec.json.Decoder(Head)


class Recorded(msgspec.Struct, gc=False, frozen=True):
    """One archived data message: receive time, type, what its ``msg`` says (market, delta), exact
    ``msg`` bytes; ``live`` is False for an order-book message before the window, read only to build
    the books the window starts with.

    The receive time is kept as the archive writes it (``2026-11-24T10:30:00.123456Z``, fixed width,
    so its text sorts as time does): comparing it to the window's bounds as text costs nothing, and
    only pacing needs it in nanoseconds (:attr:`ns`)."""

    ts: str
    kind: str
    head: Head
    msg: msgspec.Raw
    """The exact bytes (a view into the line read: no copy)."""
    live: bool = True
    sid: int = 0
    """The recorder's sid and seq (order-book messages: where the archive's gaps are)."""
    seq: int | None = None

    @property
    def ticker(self) -> str:
        return self.head.market_ticker

    @property
    def ns(self) -> int:
        return ts_ns(self.ts)


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
    data: left out. Unreadable lines are skipped and reported. ``stop`` ends the reading early (at
    the next block of lines)."""
    for batch in batches(root, feed, start_ns, end_ns, stop):
        yield from batch


CHUNK = 1 << 18
"""Archive bytes read at a time by :func:`batches`: a batch of about a thousand messages, few enough
that they are still in the processor's cache when they are sent (measured: faster than 4,000)."""


def batches(
    root: Path,
    feed: str | None,
    start_ns: int = 0,
    end_ns: int = 0,
    stop: threading.Event | None = None,
    chunk: int = CHUNK,
) -> Iterator[list[Recorded]]:
    """:func:`messages`, a block of lines at a time (never an empty list): what a replaying
    connection takes from its reading thread in one call.

    A block of lines is decoded in one call (a call per line cost more than the decoding: replay
    must outrun a backtest); a block that does not decode whole is read again line by line, so
    each bad line is reported and the good ones around it kept."""
    reader = Reader()
    control = CONTROL_TYPES
    books = _BOOK_TYPES
    decode_lines = _line.decode_lines
    decode_head = _head.decode
    start_ts, end_ts = ts_text(start_ns) if start_ns else "", ts_text(end_ns) if end_ns else ""
    for path in archive_files(root, feed):
        for first, block, count in reader.blocks(path, chunk):
            if stop is not None and stop.is_set():
                return
            out: list[Recorded] = []
            add = out.append
            try:
                decoded: list[_Line] | None = decode_lines(block)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                decoded = None
            whole = decoded is not None and one_value_per_line(block, count, len(decoded))
            items = (
                enumerate(decoded, first) if whole and decoded is not None else _one_by_one(reader, path, first, block)
            )
            for number, obj in items:
                frame = obj.data
                if whole and len(frame.msg) > SHALLOW_BYTES and not within_depth(bytes(frame.msg)):
                    reader.report(path, number, "not an archive line (nested too deep)")  # (as line by line)
                    continue
                ts = obj.ts
                if len(ts) != TS_WIDTH or ts[10] != "T" or ts[19] != "." or ts[26] != "Z":
                    written = written_ts(ts)  # not the writer's own form: read it, and carry it in that form
                    if written is None:
                        reader.report(path, number, f"not a receive time: {ts!r}")
                        continue
                    ts = written
                if end_ts and ts >= end_ts:
                    if out:
                        yield out
                    return
                kind = frame.type
                if not frame.msg or kind in control:
                    continue
                live = ts >= start_ts
                if not live and kind not in books:
                    continue
                try:
                    head = decode_head(frame.msg)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    head = Head()
                add(Recorded(ts, kind, head, frame.msg, live, frame.sid, frame.seq))
            if out:
                yield out


def _one_by_one(reader: Reader, path: Path, first: int, block: bytes) -> Iterator[tuple[int, _Line]]:
    """The lines of a block that did not decode whole, one at a time, with their line numbers, as
    they are read (a caller that stops early reports nothing past where it stopped): each one that
    is not an archive line reported (file, line number, why), lines stored with ``enc`` passed
    over."""
    for number, line in enumerate(block.split(b"\n")[:-1], first):
        if len(line) > SHALLOW_BYTES and not within_depth(line, MAX_JSON_DEPTH + 2):
            reader.report(path, number, "not an archive line (nested too deep)")
            continue
        try:
            obj = _line.decode(line)
        except msgspec.ValidationError:
            if not _is_encoded(line):  # (encoded: not JSON, nothing a Kalshi client would be sent)
                reader.report(path, number, "not an archive line (corrupt or torn)")
            continue
        except msgspec.DecodeError:
            reader.report(path, number, "not an archive line (corrupt or torn)")
            continue
        yield number, obj


def _is_encoded(line: bytes) -> bool:
    """A well-formed line that stores its frame with ``enc`` (text or base64), not verbatim."""
    try:
        return bool(_encoded.decode(line).enc)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
