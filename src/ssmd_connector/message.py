"""The unit that flows through the pipeline: one received frame, stamped once.

How a message becomes an archive line, and how the line is read back, is the archive's format:
:mod:`ssmd_connector.archive.line`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec


class Message(msgspec.Struct, frozen=True, gc=False):
    """One received frame: when it was read off the socket, which feed, and its exact bytes."""

    received_ns: int
    """UTC wall-clock receive time, ns since the epoch (stamped once, in the intake)."""
    feed: str
    frame: bytes
    binary: bool = False
    """True for a WebSocket binary frame."""
    json_valid: bool = False
    """The connector already checked :func:`~ssmd_connector.archive.line.within_depth` and parsed
    the frame as one JSON text (the Kalshi connector does, for sequence tracking), so the writer
    need only check the rest of the verbatim rule
    (:func:`~ssmd_connector.archive.line.is_line_safe_json`): UTF-8, no raw CR/LF."""
    kind: str = ""
    """The message type when the connector knows it (Kalshi's ``type``), for segment manifests."""

    @property
    def received_at(self) -> datetime:
        return datetime.fromtimestamp(self.received_ns / 1e9, UTC)
