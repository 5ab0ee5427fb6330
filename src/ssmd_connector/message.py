"""The unit that flows through the pipeline, and the one function that turns it into an archive line.

Archive line format (one JSON object per line, ``\\n``-terminated)::

    {"ts":"2026-11-24T10:30:00.123456Z","feed":"kalshi","data":<the frame, verbatim>}

``data`` is the received frame **byte for byte** whenever the frame is a single valid JSON text
in UTF-8 without raw line breaks — which is every frame Kalshi sends. Anything else would make the
line malformed if embedded, so it is stored losslessly and flagged with an ``enc`` member:

* ``"enc":"text"`` — a text frame that is not valid JSON (or contains a raw CR/LF, e.g.
  pretty-printed JSON): ``data`` is the frame's text as a JSON string.
* ``"enc":"base64"`` — a binary frame, or a text frame that is not valid UTF-8: ``data`` is the
  standard base64 of the frame's bytes.

Lines without ``enc`` are the verbatim case, so a reader recovers the exact original bytes in all
three cases.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from .clock import TimestampFormatter

_raw_decoder = msgspec.json.Decoder(msgspec.Raw)
_encode = msgspec.json.encode


class Message(msgspec.Struct, frozen=True, gc=False):
    """One received frame: when it was read off the socket, which feed, and its exact bytes."""

    received_ns: int
    """UTC wall-clock receive time, ns since the epoch (stamped once, in the intake)."""
    feed: str
    frame: bytes
    binary: bool = False
    """True for a WebSocket binary frame."""
    json_valid: bool = False
    """The connector already parsed the frame as one JSON text (the Kalshi connector does, for
    sequence tracking), so the writer need only check line safety: UTF-8, no raw CR/LF."""
    kind: str = ""
    """The message type when the connector knows it (Kalshi's ``type``), for segment manifests."""

    @property
    def received_at(self) -> datetime:
        return datetime.fromtimestamp(self.received_ns / 1e9, UTC)


def is_verbatim_safe(frame: bytes) -> bool:
    """True when ``frame`` can be embedded as-is: one valid JSON text, UTF-8, no raw CR/LF."""
    try:
        _raw_decoder.decode(frame)
    except msgspec.DecodeError:
        return False
    return is_line_safe_json(frame)


def is_line_safe_json(frame: bytes) -> bool:
    """For a frame already known to be valid JSON syntax: also UTF-8 and free of raw CR/LF?"""
    if frame.find(10) >= 0 or frame.find(13) >= 0:
        return False
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
        if not binary and (is_line_safe_json(frame) if json_valid else is_verbatim_safe(frame)):
            return head + b',"data":' + frame + b"}\n"
        if not binary:
            try:
                text = frame.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
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


def decode_frame(line: bytes | str) -> bytes:
    """Recover the original frame bytes from an archive line (inverse of :meth:`LineEncoder.encode`)."""
    obj = msgspec.json.decode(line)
    enc = obj.get("enc")
    if enc is None:
        # The verbatim frame is the text between '"data":' and the final '}'.
        raw = line.encode() if isinstance(line, str) else line
        start = raw.index(b',"data":') + len(b',"data":')
        return raw[start : raw.rstrip(b"\n").rindex(b"}")]
    if enc == "text":
        return str(obj["data"]).encode("utf-8")
    if enc == "base64":
        return base64.b64decode(obj["data"])
    raise ValueError(f"unknown enc {enc!r}")
