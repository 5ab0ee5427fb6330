"""Frames the writer has accepted and JetStream has not stored yet, in receive order.

Why it is bounded twice: while NATS is down frames wait in memory up to ``max_memory_bytes``,
then on disk (:mod:`.spill`) when a spill is configured; past the last bound :attr:`Backlog.full`
tells the runner to stop feeding the writer, and reading pauses — nothing is dropped and nothing
grows without bound. Spilled frames come back into memory a chunk at a time, once everything
before them is stored, so the stream keeps receive order.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from .spill import Record, Spill

log = logging.getLogger(__name__)

_SPILL_CHUNK = 8192
"""Spilled frames read back into memory at a time."""


@dataclass(slots=True)
class Pending:
    """One frame to publish; ``sent`` while a publish of it awaits its acknowledgement."""

    subject: str
    payload: bytes
    sent: bool = False


class Backlog:
    """Owns the unacknowledged frames (``pending``: Msg-Id → frame, in order), the spill, and the
    byte counts the runner reads as the writer's backlog."""

    def __init__(self, max_memory_bytes: int, spill: Spill | None) -> None:
        self.pending: dict[str, Pending] = {}
        self.accepted = 0
        """Bytes ever taken into memory."""
        self.stored_bytes = 0
        """Bytes JetStream has acknowledged."""
        self.acked = 0
        """Frames JetStream has acknowledged."""
        self._max_memory = max_memory_bytes
        self._spill = spill
        self._spill_end: int | None = None
        """End offset of the spilled chunk being published, once it was read back into memory."""
        self.spill_error: str | None = None
        """Why the spill refused the last write (the memory bound applies again meanwhile)."""

    @property
    def waiting_bytes(self) -> int:
        return self.accepted - self.stored_bytes + (self._spill.waiting_bytes if self._spill else 0)

    @property
    def full(self) -> bool:
        if self._spill is not None and self.spill_error is None:
            return self._spill.full
        return self.accepted - self.stored_bytes >= self._max_memory

    @property
    def spilling(self) -> bool:
        """New frames go to disk: frames wait there already, or memory is at its bound."""
        spill = self._spill
        return spill is not None and (spill.active or self.accepted - self.stored_bytes >= self._max_memory)

    @property
    def spill_active(self) -> bool:
        return self._spill is not None and self._spill.active

    def stored(self, msg_id: str) -> None:
        """JetStream stored this frame: forget it."""
        p = self.pending.pop(msg_id, None)
        if p is not None:
            self.stored_bytes += len(p.payload)
            self.acked += 1

    def mark_unsent(self) -> None:
        """Nothing in flight will be acknowledged any more: publish everything again (same ids)."""
        for p in self.pending.values():
            p.sent = False

    def keep(self, records: list[Record]) -> None:
        for msg_id, subject, payload in records:
            self.pending[msg_id] = Pending(subject, payload)
            self.accepted += len(payload)

    async def spill(self, records: list[Record]) -> None:
        """Queue frames on disk behind what is already there. If the disk refuses, the frames are kept
        in memory (published before what waits on disk: order suffers, data does not) and the
        ``OSError`` propagates."""
        spill = self._spill
        assert spill is not None
        if not spill.active:
            log.warning("NATS backlog at its memory bound: spilling further frames to %s", spill.directory)
        try:
            await asyncio.to_thread(spill.append, records)
        except OSError as exc:
            self.spill_error = f"cannot spill to {spill.directory}: {exc.strerror or exc}"
            self.keep(records)
            raise
        self.spill_error = None

    async def refill(self) -> None:
        """Move the next chunk of spilled frames into memory once the previous one is all stored."""
        spill = self._spill
        if spill is None or not spill.active or self.pending:
            return
        if self._spill_end is not None:
            await asyncio.to_thread(spill.acknowledged, self._spill_end)
            self._spill_end = None
            if not spill.active:
                log.info("NATS spill drained: publishing from memory again")
                return
        records, end = await asyncio.to_thread(spill.read, _SPILL_CHUNK)
        if not records:  # only a torn record was left: done with it
            await asyncio.to_thread(spill.acknowledged, end)
            return
        self.keep(records)
        self._spill_end = end

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
