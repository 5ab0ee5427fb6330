""":class:`NatsWriter`: what the runner drives to publish frames to JetStream.

The writer itself is the loop — frames in, publishes out, flush until stored; what it keeps, how it
connects and how it is acknowledged live beside it (:mod:`.backlog`, :mod:`.stream`, :mod:`.acks`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from nats.aio.msg import Msg

from ...archive.line import LineEncoder
from ...errors import WriteFailed
from ...message import Message
from .acks import Acks, BatchAcks, PerMessageAcks
from .backlog import Backlog, Pending
from .spill import Record, Spill
from .stream import Link, PublishMode, StreamLink
from .subjects import Subjects, ticker_of
from .wire import BlockSender, Publish

__all__ = ["NatsWriter", "PublishMode"]

_BLOCK = 256
"""Publishes handed to nats-py at a time."""
_SPILL_DRAIN_SECONDS = 1.0
"""How long one flush keeps publishing from the spill (no new frames need arrive to move it along)."""


class NatsWriter:
    """Publishes every frame to one JetStream stream and keeps it until JetStream has stored it.

    Owns the frame numbering (``Nats-Msg-Id``), the :class:`~.backlog.Backlog`, the
    :class:`~.stream.StreamLink` and, once connected, the acknowledgement protocol the stream
    allows (``publish``: ``auto`` picks fast batches where the stream accepts them).
    """

    def __init__(
        self,
        url: str,
        stream: str,
        subject_prefix: str = "ssmd",
        *,
        create_stream: bool = False,
        max_pending: int = 4096,
        ack_timeout: float = 5.0,
        publish: PublishMode = "auto",
        max_backlog_bytes: int = 256 << 20,
        spill_dir: Path | None = None,
        max_spill_bytes: int = 0,
    ) -> None:
        self.url = url
        self.stream = stream
        self.prefix = subject_prefix
        self._max_pending = max_pending
        self._ack_timeout = ack_timeout
        self._encode_batch = LineEncoder().encode_batch
        self._subjects = Subjects(subject_prefix)
        self._run = uuid.uuid4().hex[:12]
        self._counter = 0
        spill = Spill(spill_dir, max_spill_bytes) if spill_dir is not None and max_spill_bytes > 0 else None
        self._backlog = Backlog(max_backlog_bytes, spill)
        self._link = StreamLink(
            url,
            stream,
            subject_prefix,
            create=create_stream,
            mode=publish,
            timeout=ack_timeout,
            on_reply=self._on_reply,
        )
        self._acks: Acks | None = None
        """Chosen at the first connection, from what the stream allows."""

    @property
    def bytes_written(self) -> int:
        return self._backlog.stored_bytes

    @property
    def acked(self) -> int:
        """Frames JetStream has stored."""
        return self._backlog.acked

    @property
    def backlog_bytes(self) -> int:
        return self._backlog.waiting_bytes

    @property
    def backlog_full(self) -> bool:
        return self._backlog.full

    @property
    def publish_mode(self) -> str:
        return self._acks.mode if self._acks is not None else "per-message"

    async def write(self, batch: Sequence[Message]) -> None:
        # One batch encoding, split into lines (encoded lines never contain a raw newline).
        data, _ = self._encode_batch(batch)
        lines = data.split(b"\n")
        backlog = self._backlog
        if backlog.spilling:
            await self._to_spill(batch, lines)
            return
        backlog.accepted += len(data) - len(batch)  # (without the newlines)
        pending = backlog.pending
        cached, make = self._subjects.cache, self._subjects.make
        for msg, line in zip(batch, lines, strict=False):
            self._counter += 1
            subject = cached.get((msg.feed, msg.kind, ticker_of(msg.frame))) or make(msg)
            pending[f"{msg.feed}.{self._run}.{self._counter}"] = Pending(subject, line)
        await self._publish()

    async def _to_spill(self, batch: Sequence[Message], lines: list[bytes]) -> None:
        records: list[Record] = []
        for msg, line in zip(batch, lines, strict=False):
            self._counter += 1
            records.append((f"{msg.feed}.{self._run}.{self._counter}", self._subjects.make(msg), line))
        try:
            await self._backlog.spill(records)
        except OSError as exc:
            raise WriteFailed(f"NATS {self.url}: {self._backlog.spill_error}") from exc
        await self._publish()

    async def _connect(self) -> tuple[Link, Acks]:
        link = await self._link.connect()
        if self._acks is None:
            kind = BatchAcks if link.batched else PerMessageAcks
            self._acks = kind(link, self._backlog, self._max_pending, self._ack_timeout)
        return link, self._acks

    async def _on_reply(self, msg: Msg) -> None:
        acks = self._acks
        if acks is not None:
            acks.on_reply(msg)
            acks.changed.set()

    async def _publish(self) -> None:
        """Send every pending frame not yet in flight (first sends and retries), pipelined, in blocks
        (:mod:`.wire`)."""
        link, acks = await self._connect()
        await self._backlog.refill()
        done = False
        try:
            for _ in range(3):
                if done := await self._send_unsent(link.sender, acks):
                    break
        except WriteFailed:
            acks.reset()
            raise
        except Exception as exc:
            acks.reset()
            raise WriteFailed(f"NATS {self.url}: publish failed: {exc or type(exc).__name__}") from exc
        if not done:
            acks.reset()
            raise WriteFailed(f"NATS {self.url}: batches keep failing ({acks.last_failure})")

    async def _send_unsent(self, sender: BlockSender, acks: Acks) -> bool:
        """One pass over the frames not in flight, oldest first. False if a batch failed meanwhile:
        its frames are unsent again and must go out before anything newer (stream order)."""
        failures = acks.failed_batches
        block: list[Publish] = []
        unsent = [(k, v) for k, v in self._backlog.pending.items() if not v.sent]  # replies mutate pending
        for msg_id, p in unsent:
            if not acks.has_room():
                await sender.send(block)  # what we have goes out before we wait for acks
                block = []
                await acks.wait_for_room()
            if acks.failed_batches != failures:
                return False
            reply = acks.reply_for(p.subject, msg_id)
            p.sent = True
            block.append((p.subject, reply, msg_id, p.payload))
            if len(block) >= _BLOCK:
                await sender.send(block)
                block = []
        await sender.send(block)
        return acks.failed_batches == failures

    async def _collect(self) -> None:
        """Wait until everything sent is acknowledged (ending the open batch); keep what was not."""
        if self._acks is not None:
            await self._acks.collect()
        if self._backlog.pending:
            raise WriteFailed(f"NATS {self.url}: {len(self._backlog.pending)} publish(es) not acknowledged yet")

    async def flush(self) -> None:
        if self._backlog.pending or (self._acks is not None and self._acks.open):
            await self._publish()
            await self._collect()
        # Draining a spill: keep going a while (no new frames need to arrive to move it along).
        deadline = time.monotonic() + _SPILL_DRAIN_SECONDS
        while self._backlog.spill_active and time.monotonic() < deadline:
            await self._publish()
            await self._collect()

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            self._backlog.close()
        await self._link.close()
