"""The archive line: how it is built, and read back.

Archive line format (one JSON object per line, ``\\n``-terminated)::

    {"ts":"2026-11-24T10:30:00.123456Z","feed":"kalshi","data":<the frame, verbatim>}

``data`` is the received frame **byte for byte** whenever :func:`is_verbatim_json` accepts it —
which is every frame Kalshi sends. Anything else would make the line malformed, or unreadable by
the project's own readers, if embedded, so it is stored losslessly and flagged with ``enc``:

* ``"enc":"text"`` — a text frame that is not verbatim JSON by that rule (not JSON, a raw CR/LF
  as in pretty-printed JSON, or nested deeper than :data:`MAX_JSON_DEPTH`): ``data`` is the
  frame's text as a JSON string.
* ``"enc":"base64"`` — a binary frame, or a text frame that is not valid UTF-8: ``data`` is the
  standard base64 of the frame's bytes.

Lines without ``enc`` are the verbatim case, so a reader recovers the exact original bytes in all
three cases. The rule is one function, used by the writer, the start-up repair and every reader
(:func:`parse_line`), so a line written as valid is always read as valid.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from itertools import accumulate
from typing import Any

import msgspec

from ..clock import TimestampFormatter
from ..message import Message

_raw_decoder = msgspec.json.Decoder(msgspec.Raw)

_encode = msgspec.json.encode

MAX_JSON_DEPTH = 256
"""The deepest nesting of arrays and objects a frame may have to be embedded verbatim.

Kalshi's frames are four levels deep. JSON decoders (msgspec's included) recurse once per level
and fail at the interpreter's recursion limit, which depends on how deep the caller's stack
already is: a ~2 KB frame nested 1,000 deep crashed the recorder before this bound existed.
Checking the depth first, without recursion, keeps every decoder in the project far below that
limit, so whether a frame is verbatim never depends on the stack. Deeper frames are stored with
``"enc":"text"``."""

SHALLOW_BYTES = 2 * MAX_JSON_DEPTH
"""A frame this short cannot be too deep (valid JSON ``d`` levels deep takes at least ``2d`` bytes)."""

_STRINGS = re.compile(rb'"(?:[^"\\]++|\\.)*+"')

_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))

_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def within_depth(frame: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``frame``, read as JSON, nests at most ``limit`` levels.

    Never recurses, and does its work in C whatever the frame: valid JSON ``d`` levels deep takes
    at least ``2d`` bytes and cannot be deeper than it has opening brackets, which settles nearly
    every frame. For the rest (a big order-book snapshot, or something hostile) strings are cut
    out and everything but brackets dropped; a few passes remove the innermost ``[]``/``{}``
    pairs (one level each: flat structures vanish), and the depth of what is left is its largest
    running sum of +1 per opening and -1 per closing bracket.
    """
    if len(frame) <= 2 * limit:
        return True  # (a malformed frame this short is rejected by the decoder at this depth)
    if frame.count(b"[") + frame.count(b"{") <= limit:
        return True
    cached = _deep_cache
    if cached[0] is frame and cached[1] == limit:  # (the connector, then the encoder, ask the same)
        return bool(cached[2])
    rest = _STRINGS.sub(b"", frame).translate(None, _NOT_BRACKETS)
    removed = 0
    while rest and removed < limit:  # while a pass removes at least an eighth
        shorter = rest.replace(b"[]", b"").replace(b"{}", b"")
        if len(shorter) > len(rest) - len(rest) // 8:
            break
        rest, removed = shorter, removed + 1
    ok = not rest or max(accumulate(memoryview(rest.translate(_STEPS)).cast("b"))) <= limit - removed
    _deep_cache[:] = [frame, limit, ok]
    return ok


_deep_cache: list[Any] = [None, 0, False]
"""The last frame that needed counting, and the answer: one frame is asked about more than once."""


def is_verbatim_json(frame: bytes) -> bool:
    """The rule: may ``frame`` be embedded as-is? One JSON text (RFC 8259, as msgspec validates
    it), at most :data:`MAX_JSON_DEPTH` deep, UTF-8, without a raw CR or LF. Never raises."""
    if frame.find(10) >= 0 or frame.find(13) >= 0 or not within_depth(frame):
        return False
    try:
        _raw_decoder.decode(frame)
    except Exception:  # DecodeError; nothing else is expected within the depth bound
        return False
    return _utf8(frame)


def is_line_safe_json(frame: bytes) -> bool:
    """The rest of the rule for a frame a connector already decoded as JSON after checking
    :func:`within_depth` (the Kalshi connector does): UTF-8 and free of raw CR/LF?"""
    if frame.find(10) >= 0 or frame.find(13) >= 0:
        return False
    return _utf8(frame)


def _utf8(frame: bytes) -> bool:
    if frame.isascii():
        return True
    # msgspec does not validate UTF-8 inside strings it skips; check it ourselves.
    try:
        frame.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class LineEncoder:
    """Builds archive lines. The only place in the project where a line is assembled."""

    __slots__ = ("_feeds", "_ts")

    def __init__(self) -> None:
        self._ts = TimestampFormatter()
        self._feeds: dict[str, bytes] = {}

    def _feed_json(self, feed: str) -> bytes:
        encoded = self._feeds.get(feed)
        if encoded is None:
            encoded = self._feeds[feed] = _encode(feed)
        return encoded

    def _head(self, msg: Message) -> bytes:
        return b'{"ts":"' + self._ts.format(msg.received_ns) + b'","feed":' + self._feed_json(msg.feed)

    def encode(self, msg: Message) -> bytes:
        return self._line(self._head(msg), msg.frame, msg.binary, msg.json_valid)

    @staticmethod
    def _line(head: bytes, frame: bytes, binary: bool, json_valid: bool) -> bytes:
        if not binary and (is_line_safe_json(frame) if json_valid else is_verbatim_json(frame)):
            return head + b',"data":' + frame + b"}\n"
        text = None if binary else _as_text(frame)
        if text is not None:
            return head + b',"enc":"text","data":' + _encode(text) + b"}\n"
        return head + b',"enc":"base64","data":"' + base64.b64encode(frame) + b'"}\n'

    def encode_batch(
        self, batch: Sequence[Message], start: int = 0, lo_ns: int = 0, hi_ns: int = -1, feed: str | None = None
    ) -> tuple[bytes, int]:
        """Lines for ``batch[start:]`` up to the first message stamped outside [lo_ns, hi_ns)
        (``hi_ns < 0``: no bound) or of a feed other than ``feed`` (``None``: any feed).

        Returns the bytes and the index where it stopped (``len(batch)`` when it consumed all).
        Messages of one socket read share a stamp, so the timestamp, the feed and the bounds are
        checked once per read, not once per frame.
        """
        parts: list[bytes] = []
        run: list[bytes] = []  # JSON-validated frames sharing the current head
        head = b""
        last_ns = -1
        last_feed = ""
        for i in range(start, len(batch)):
            msg = batch[i]
            ns = msg.received_ns
            if ns != last_ns or msg.feed is not last_feed:
                if (hi_ns >= 0 and not lo_ns <= ns < hi_ns) or (feed is not None and msg.feed != feed):
                    self._close_run(parts, head, run)
                    return b"".join(parts), i
                self._close_run(parts, head, run)
                run = []
                last_ns, last_feed = ns, msg.feed
                head = self._head(msg)
            if msg.json_valid and not msg.binary:
                run.append(msg.frame)
            else:
                self._close_run(parts, head, run)
                run = []
                parts.append(self.encode(msg))
        self._close_run(parts, head, run)
        return b"".join(parts), len(batch)

    def _close_run(self, parts: list[bytes], head: bytes, run: list[bytes]) -> None:
        """Lines for JSON-validated frames sharing one head, checked for line safety together.

        One scan of the run's bytes replaces a per-frame check: no CR/LF and all ASCII means
        every frame embeds as is. Otherwise (rare: a raw line break, or non-ASCII text to
        validate as UTF-8) each frame takes the careful path.
        """
        if not run:
            return
        body = b"".join(run)
        if body.find(10) < 0 and body.find(13) < 0 and body.isascii():
            head_data = head + b',"data":'
            parts.append(head_data)
            parts.append((b"}\n" + head_data).join(run))
            parts.append(b"}\n")
            return
        parts.extend(self._line(head, frame, False, True) for frame in run)


class ArchivedLines:
    """The encoder for messages whose ``frame`` already *is* an archive line (without its newline):
    the archiver writing back what the recorder published. Nothing is re-encoded, so the archive
    holds the recorder's bytes; the stopping rule is :meth:`LineEncoder.encode_batch`'s."""

    __slots__ = ()

    def encode_batch(
        self, batch: Sequence[Message], start: int = 0, lo_ns: int = 0, hi_ns: int = -1, feed: str | None = None
    ) -> tuple[bytes, int]:
        end = len(batch)
        for i in range(start, end):
            msg = batch[i]
            if (hi_ns >= 0 and not lo_ns <= msg.received_ns < hi_ns) or (feed is not None and msg.feed != feed):
                end = i
                break
        if end == start:
            return b"", start
        return b"\n".join([m.frame for m in batch[start:end]]) + b"\n", end


_line_decoder = msgspec.json.Decoder(float_hook=float)

_HEAD = re.compile(rb'\{"ts":"[^"\\]*","feed":"(?:[^"\\]++|\\.)*+"(?:,"enc":"(text|base64)")?,"data":')
"""The start of every line :class:`LineEncoder` builds, up to ``data`` (always the last member)."""


def _int(digits: str) -> int | Decimal:
    return int(digits) if len(digits) <= 4000 else Decimal(digits)


def _decode(data: bytes) -> Any:
    """JSON text → Python values, for anything verbatim JSON allows: msgspec; for the rare text it
    validates but will not build (integers of more than ~4,300 digits), the standard library, with
    such integers as ``Decimal``. Raises ``ValueError`` for what is not JSON."""
    try:
        return _line_decoder.decode(data)
    except msgspec.DecodeError:
        _raw_decoder.decode(data)  # not JSON at all: raises again
        return json.loads(data, parse_int=_int)


def json_object(data: bytes, depth: int = MAX_JSON_DEPTH + 1) -> dict[str, Any] | None:
    """``data`` decoded when it is one JSON object, else ``None``; never raises — for every
    reader of files the project writes (archive lines, ledger events, manifests)."""
    if not within_depth(data, depth):
        return None
    try:
        obj = _decode(data)
    except Exception:  # msgspec's DecodeError, json's JSONDecodeError (ValueErrors)
        return None
    return obj if type(obj) is dict else None


def _as_text(frame: bytes) -> str | None:
    """The frame as text, or ``None`` when it is not UTF-8 (then it is stored as base64)."""
    try:
        return frame.decode("utf-8")
    except UnicodeDecodeError:
        return None


def parse_line(line: bytes) -> dict[str, Any] | None:
    """An archive line as a dict (``ts``, ``feed``, ``data``, maybe ``enc``), or ``None`` when
    the bytes are not one (torn, corrupt, foreign). Never raises.

    Accepts every line :class:`LineEncoder` builds — the depth bound is the writer's plus the
    line's own level; numbers beyond the range of a float decode as ``±inf`` / ``0.0``, integers
    beyond what msgspec builds as ``Decimal`` — and only lines of that shape, so
    :func:`frame_of` can always return the frame: the members in the writer's order, ``data``
    last (for a verbatim line, the bytes after ``"data":`` are exactly one JSON text), a string
    for ``enc: text`` and strict base64 for ``enc: base64``.
    """
    head = _HEAD.match(line)
    if head is None:
        return None
    obj = json_object(line)
    if obj is None:
        return None
    enc = head[1]
    data = obj.get("data")
    if enc is None:
        try:
            _raw_decoder.decode(line[head.end() : line.rstrip(b"\n").rfind(b"}")])
        except Exception:  # (data was not the last member)
            return None
    elif type(data) is not str:
        return None
    elif enc == b"base64":
        try:
            binascii.a2b_base64(data, strict_mode=True)
        except (binascii.Error, ValueError):
            return None
    return obj


def decode_frame(line: bytes | str) -> bytes:
    """Recover the original frame bytes from an archive line (inverse of :meth:`LineEncoder.encode`).

    Raises ``ValueError`` when ``line`` is not an archive line."""
    raw = line.encode() if isinstance(line, str) else line
    obj = parse_line(raw)
    if obj is None:
        raise ValueError("not an archive line")
    return frame_of(raw, obj)


def frame_of(line: bytes, obj: dict[str, Any]) -> bytes:
    """The original frame of ``line``, already accepted by :func:`parse_line` as ``obj``."""
    enc = obj.get("enc")
    if enc is None:
        # The verbatim frame is the text between '"data":' and the final '}'.
        head = _HEAD.match(line)
        assert head is not None
        return line[head.end() : line.rstrip(b"\n").rindex(b"}")]
    if enc == "text":
        return str(obj["data"]).encode("utf-8")
    return binascii.a2b_base64(obj["data"], strict_mode=True)


TS_WIDTH = len("2026-11-24T10:30:00.123456Z")
"""The length of a receive time as the writer writes it (readers compare such times as text)."""
WRITTEN_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
"""A receive time in the writer's own form."""


def ts_text(ns: int) -> str:
    """A time in the archive's own receive-time form."""
    return TimestampFormatter().format(ns).decode()


def written_ts(ts: object) -> str | None:
    """A line's receive time in the writer's form: as it is when it has it, read and written so
    when it has another (no fraction, milliseconds); ``None`` if it is not a time."""
    if not isinstance(ts, str):
        return None
    if WRITTEN_TS.fullmatch(ts):
        return ts
    try:
        return ts_text(ts_ns(ts))
    except (ValueError, OverflowError, OSError):
        return None


def ts_ns(ts: str) -> int:
    """``2026-11-24T10:30:00.123456Z`` → ns since the epoch (exact, no float)."""
    whole, _, frac = ts.rstrip("Z").partition(".")
    return _seconds(whole) * 1_000_000_000 + int((frac or "0").ljust(6, "0")[:6]) * 1000


@functools.lru_cache(maxsize=4096)
def _seconds(whole: str) -> int:
    """Parsing a date is slow; lines of one second share it."""
    return int(datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
