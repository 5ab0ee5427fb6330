"""NATS JetStream writer: the scale-out path.

Each frame is published as its archive line (the exact bytes the file writer writes, without the
newline — so ``ts``, ``feed`` and the verbatim frame travel in the body) to

    <subject_prefix>.<feed>.<message type>.<market ticker>

with tokens made subject-safe (Kalshi tickers contain ``.``: it becomes ``_``, which tickers never
contain, so the mapping is reversible; a missing type or ticker is ``_``). Every publish is
acknowledged by JetStream and carries ``Nats-Msg-Id: <feed>.<run>.<n>`` — stable for the frame, so
a publish retried after a timeout or a NATS restart is stored once (JetStream's duplicate window).

Two ways to be acknowledged, chosen per stream (``nats.publish``):

- ``fast-batch`` (the default where the stream allows it: nats-server >= 2.14 with
  ``allow_batched``): frames go out in fast-ingest batches and the server acknowledges them
  cumulatively (see :mod:`.fast_batch`); a batch ends at every flush. ~1 reply per hundreds of
  frames instead of one per frame — what lifts acknowledged throughput past 100k frames/s.
- ``per-message``: one PubAck per frame, pipelined on one inbox subscription (any JetStream).

Either way at most ``max_pending`` frames are in flight; unacknowledged frames are kept and
re-published with the same ids (a failed batch before anything newer, so the stream keeps receive
order), and a failure raises ``WriteFailed`` so the runner retries. While NATS is down the frames
wait in memory up to ``max_backlog_bytes``, then on disk (:mod:`.nats_spill`) when configured;
past the last bound ``backlog_full`` tells the runner to stop feeding us, and reading pauses —
nothing is dropped, nothing grows without bound. The connection itself is made in the background
(:mod:`..natsconn`): a recorder started while NATS is down records locally meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from ..archive.line import LineEncoder
from ..errors import WriteFailed
from ..message import Message
from ..natsconn import NatsConnection
from .fast_batch import FastBatch
from .nats_spill import Spill
from .nats_wire import BlockSender, Publish

log = logging.getLogger(__name__)

_UNSAFE = re.compile(rb"[.\s*>]")
_TICKER_KEY = b'"market_ticker":"'


@functools.lru_cache(maxsize=65536)
def subject_token(raw: bytes | str) -> str:
    """A NATS subject token: no '.', whitespace, '*' or '>'; empty → '_'. (Cached: tickers repeat.)"""
    data = raw.encode() if isinstance(raw, str) else raw
    return _UNSAFE.sub(b"_", data).decode("utf-8", "replace") or "_"


def ticker_of(frame: bytes) -> bytes:
    """The first ``market_ticker`` value in a frame, found by a byte scan (no JSON parse)."""
    i = frame.find(_TICKER_KEY)
    if i < 0:
        return b""
    start = i + len(_TICKER_KEY)
    end = frame.find(b'"', start)
    return frame[start:end] if end > 0 else b""


PublishMode = Literal["auto", "fast-batch", "per-message"]
_SPILL_CHUNK = 8192
"""Spilled frames read back into memory at a time."""
_BLOCK = 256
"""Publishes handed to nats-py at a time."""


@dataclass(slots=True)
class _Pending:
    subject: str
    payload: bytes
    sent: bool = False


class NatsWriter:
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
        self._create = create_stream
        self._max_pending = max_pending
        self._ack_timeout = ack_timeout
        self._mode = publish
        self._batched = False
        """Publishing in fast-ingest batches (decided from the stream at connect time)."""
        self._flow = max(1, min(1000, max_pending // 4))
        self._encode_batch = LineEncoder().encode_batch
        self._subjects: dict[tuple[str, str, bytes], str] = {}
        self._run = uuid.uuid4().hex[:12]
        self._counter = 0
        self._conn = NatsConnection(url)
        self._tried = False
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._pending: dict[str, _Pending] = {}
        """Msg-Id → frame not acknowledged yet, in order."""
        self._batch: FastBatch | None = None
        self._order: deque[tuple[int, str]] = deque()
        """(batch sequence, Msg-Id) sent in the current batch and not yet stored, in order."""
        self._bytes = 0
        self._accepted = 0
        self._max_backlog = max_backlog_bytes
        self._spill = Spill(spill_dir, max_spill_bytes) if spill_dir is not None and max_spill_bytes > 0 else None
        self._spill_end: int | None = None
        self._spill_error: str | None = None
        """End offset of the spilled chunk being published, once it was read back into memory."""
        self.acked = 0
        self._inbox = ""
        self._reply_sub: Any = None
        self._sender: BlockSender | None = None
        self._inflight = 0
        """Per-message mode: publishes awaiting their PubAck."""
        self._failures = 0
        self._batch_failures = 0
        self._last_failure = ""
        self._changed = asyncio.Event()
        """Set whenever a reply arrives: waiters re-check their condition."""

    @property
    def bytes_written(self) -> int:
        return self._bytes

    @property
    def backlog_bytes(self) -> int:
        return self._accepted - self._bytes + (self._spill.waiting_bytes if self._spill else 0)

    @property
    def backlog_full(self) -> bool:
        in_memory = self._accepted - self._bytes
        if self._spill is not None and self._spill_error is None:
            return self._spill.full
        return in_memory >= self._max_backlog

    @property
    def publish_mode(self) -> str:
        return "fast-batch" if self._batched else "per-message"

    async def _connect(self) -> JetStreamContext:
        """The JetStream context once NATS is up and the stream checked; raises ``WriteFailed`` at
        once while it is not (the connection is made and remade in the background)."""
        # The very first time, give the connection a moment; after that, never wait for it here.
        nc = await self._conn.ready(0 if self._tried else self._ack_timeout)
        self._tried = True
        if nc is None or not nc.is_connected:
            raise WriteFailed(f"NATS {self.url}: {self._conn.status}")
        if self._js is not None:
            return self._js
        try:
            self._nc = nc
            js = nc.jetstream()
            self._sender = BlockSender(nc)
            self._batched = await self._check_stream(js)
            if self._reply_sub is None:
                self._inbox = nc.new_inbox()
                self._reply_sub = await nc.subscribe(f"{self._inbox}.>", cb=self._on_reply)
        except WriteFailed:
            raise
        except Exception as exc:
            raise WriteFailed(f"NATS {self.url}: {exc or type(exc).__name__}") from exc
        self._js = js
        log.info("publishing to JetStream stream %s (%s acknowledgements)", self.stream, self.publish_mode)
        return js

    async def _check_stream(self, js: JetStreamContext) -> bool:
        """Check (or create) the stream; returns whether to publish in fast-ingest batches."""
        assert self._nc is not None
        wanted = f"{self.prefix}.>"
        try:
            info = await js.stream_info(self.stream)
        except NotFoundError:
            if not self._create:
                raise WriteFailed(
                    f"NATS stream {self.stream!r} does not exist (create it with subjects {wanted!r}, "
                    "or set nats.create_stream: true)"
                ) from None
            version = self._nc.connected_server_version
            batches = self._mode != "per-message" and (version.major, version.minor) >= (2, 14)
            config = StreamConfig(name=self.stream, subjects=[wanted], duplicate_window=120.0)
            if batches:
                config.allow_batched = True
            info = await js.add_stream(config)
            log.info("created JetStream stream %s for %s", self.stream, wanted)
        subjects = info.config.subjects or []
        if wanted not in subjects and f"{self.prefix}.*.*.*" not in subjects:
            raise WriteFailed(f"NATS stream {self.stream!r} does not cover {wanted!r} (its subjects: {subjects})")
        allowed = bool(info.config.allow_batched)
        if self._mode == "fast-batch" and not allowed:
            raise WriteFailed(
                f"NATS stream {self.stream!r} does not allow fast batches (needs nats-server >= 2.14 and "
                "allow_batched: true on the stream), or set nats.publish: per-message"
            )
        return allowed and self._mode != "per-message"

    async def write(self, batch: Sequence[Message]) -> None:
        # One batch encoding, split into lines (encoded lines never contain a raw newline).
        data, _ = self._encode_batch(batch)
        lines = data.split(b"\n")
        subjects = self._subjects
        spill = self._spill
        if spill is not None and (spill.active or self._accepted - self._bytes >= self._max_backlog):
            await self._to_spill(batch, lines)
            return
        self._accepted += len(data) - len(batch)  # (without the newlines)
        pending = self._pending
        for msg, line in zip(batch, lines, strict=False):
            self._counter += 1
            subject = subjects.get((msg.feed, msg.kind, ticker_of(msg.frame))) or self._subject(msg)
            pending[f"{msg.feed}.{self._run}.{self._counter}"] = _Pending(subject, line)
        await self._publish()

    def _subject(self, msg: Message) -> str:
        """``<prefix>.<feed>.<type>.<ticker>`` for a message (cached: the hot path looks it up first)."""
        key = (msg.feed, msg.kind, ticker_of(msg.frame))
        subject = self._subjects.get(key)
        if subject is None:
            if len(self._subjects) >= 100_000:
                self._subjects.clear()
            kind = subject_token(msg.kind) if msg.kind else "_"
            subject = self._subjects[key] = f"{self.prefix}.{subject_token(msg.feed)}.{kind}.{subject_token(key[2])}"
        return subject

    async def _to_spill(self, batch: Sequence[Message], lines: list[bytes]) -> None:
        """Queue frames on disk behind what is already there (see :mod:`.nats_spill`)."""
        spill = self._spill
        assert spill is not None
        if not spill.active:
            log.warning("NATS backlog at its memory bound: spilling further frames to %s", spill.directory)
        records = []
        for msg, line in zip(batch, lines, strict=False):
            self._counter += 1
            records.append((f"{msg.feed}.{self._run}.{self._counter}", self._subject(msg), line))
        try:
            await asyncio.to_thread(spill.append, records)
        except OSError as exc:
            # Keep the frames in memory (published before what waits on disk: order suffers, data
            # does not); the memory bound applies again until the spill takes writes.
            self._spill_error = f"cannot spill to {spill.directory}: {exc.strerror or exc}"
            for msg_id, subject, line in records:
                self._pending[msg_id] = _Pending(subject, line)
                self._accepted += len(line)
            raise WriteFailed(f"NATS {self.url}: {self._spill_error}") from exc
        self._spill_error = None
        await self._publish()

    async def _refill(self) -> None:
        """Move the next chunk of spilled frames into memory once the previous one is all in NATS."""
        spill = self._spill
        if spill is None or not spill.active or self._pending:
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
        for msg_id, subject, payload in records:
            self._pending[msg_id] = _Pending(subject, payload)
            self._accepted += len(payload)
        self._spill_end = end

    async def _publish(self) -> None:
        """Send every pending frame not yet in flight (first sends and retries), pipelined.

        Replies come back on one inbox subscription (``_on_reply``) instead of a future per
        message (nats-py's ``publish_async`` measured ~19k frames/s here), and publishes are
        handed to nats-py in blocks (:mod:`.nats_wire`).
        """
        await self._connect()
        await self._refill()
        sender = self._sender
        assert sender is not None
        done = False
        try:
            for _ in range(3):
                if done := await self._send_unsent(sender):
                    break
        except WriteFailed:
            self._reset_inflight()
            raise
        except Exception as exc:
            self._reset_inflight()
            raise WriteFailed(f"NATS {self.url}: publish failed: {exc or type(exc).__name__}") from exc
        if not done:
            self._reset_inflight()
            raise WriteFailed(f"NATS {self.url}: batches keep failing ({self._last_failure})")

    async def _send_unsent(self, sender: BlockSender) -> bool:
        """One pass over the frames not in flight, oldest first. False if a batch failed meanwhile:
        its frames are unsent again and must go out before anything newer (stream order)."""
        failures = self._batch_failures
        block: list[Publish] = []
        for msg_id, p in [(k, v) for k, v in self._pending.items() if not v.sent]:  # replies mutate _pending
            if not self._has_room():
                await sender.send(block)  # what we have goes out before we wait for acks
                block = []
                await self._wait_for_room()
            if self._batch_failures != failures:
                return False
            reply = self._reply_for(p.subject, msg_id)
            p.sent = True
            block.append((p.subject, reply, msg_id, p.payload))
            if len(block) >= _BLOCK:
                await sender.send(block)
                block = []
        await sender.send(block)
        return self._batch_failures == failures

    def _has_room(self) -> bool:
        if self._batched:
            return self._batch is None or self._batch.unstored < self._max_pending
        return self._inflight < self._max_pending

    async def _wait_for_room(self) -> None:
        """Wait until half the in-flight window is acknowledged (or the batch ends)."""
        half = self._max_pending // 2
        if self._batched:
            batch = self._batch
            if batch is None:  # it ended while the block went out: a new one has room
                return
            done = await self._wait_for(lambda: batch.closed or batch.unstored < half)
        else:
            done = await self._wait_for(lambda: self._inflight < half)
        if not done:
            raise WriteFailed(f"NATS {self.url}: publishes not acknowledged within {self._ack_timeout:g} s")

    def _reply_for(self, subject: str, msg_id: str) -> str:
        """The reply subject that publishes ``msg_id``: in the current batch, or for its own PubAck."""
        if not self._batched:
            self._inflight += 1
            return f"{self._inbox}.{msg_id}"
        batch = self._batch
        if batch is None or batch.closed:
            batch = self._batch = FastBatch(self._inbox, uuid.uuid4().hex, self._flow)
        reply = batch.next_reply(subject)
        self._order.append((batch.sent, msg_id))
        return reply

    async def _wait_for(self, done: Callable[[], bool]) -> bool:
        """Wait until ``done()`` (re-checked on every reply), pinging a silent batch; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ack_timeout
        while not done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, self._ack_timeout / 3))
            except TimeoutError:
                await self._ping()
        return True

    async def _ping(self) -> None:
        """Ask the server to repeat its latest batch ack (one may have been lost)."""
        batch, nc = self._batch, self._nc
        if batch is not None and not batch.closed and batch.sent and nc is not None and nc.is_connected:
            await nc.publish(batch.subject, b"", reply=batch.ping_reply())

    async def _on_reply(self, msg: Msg) -> None:
        if self._batched:
            self._on_batch_reply(msg)
        else:
            self._on_pub_ack(msg)
        self._changed.set()

    def _on_pub_ack(self, msg: Msg) -> None:
        msg_id = msg.subject[len(self._inbox) + 1 :]
        p = self._pending.get(msg_id)
        if p is None or not p.sent:
            return
        self._inflight -= 1
        if b'"error"' in msg.data or not msg.data:
            p.sent = False  # rejected (or no stream): re-published on the next flush
            self._failures += 1
        else:
            del self._pending[msg_id]
            self._bytes += len(p.payload)
            self.acked += 1

    def _on_batch_reply(self, msg: Msg) -> None:
        batch = self._batch
        if batch is None or not msg.subject.startswith(batch.id, len(self._inbox) + 1):
            return  # a late reply to a batch already given up
        batch.on_frame(msg.data)
        order, pending = self._order, self._pending
        while order and order[0][0] <= batch.stored:
            p = pending.pop(order.popleft()[1], None)
            if p is not None:
                self._bytes += len(p.payload)
                self.acked += 1
        if batch.closed:
            self._drop_batch()

    def _drop_batch(self) -> None:
        """Forget the current batch; whatever it did not store is re-sent (same ids) in the next."""
        batch, self._batch = self._batch, None
        if batch is not None and batch.failure:
            self._failures += 1
            self._batch_failures += 1
            self._last_failure = batch.failure
            log.warning(
                "JetStream batch %s failed (%s): re-sending %d unacknowledged frame(s)",
                batch.id,
                batch.failure,
                len(self._order),
            )
        for _, msg_id in self._order:
            p = self._pending.get(msg_id)
            if p is not None:
                p.sent = False
        self._order.clear()

    def _reset_inflight(self) -> None:
        if self._batch is not None:
            self._batch.fail("connection trouble")
            self._drop_batch()
        for p in self._pending.values():
            p.sent = False
        self._inflight = 0
        self._changed.set()

    async def _collect(self) -> None:
        """Wait until everything sent is acknowledged (ending the open batch); keep what was not."""
        batch, nc = self._batch, self._nc
        if batch is not None and nc is not None:
            try:
                if not batch.ended:
                    await nc.publish(batch.subject, b"", reply=batch.end_reply())
            except Exception as exc:
                self._reset_inflight()
                raise WriteFailed(f"NATS {self.url}: publish failed: {exc or type(exc).__name__}") from exc
            if not await self._wait_for(lambda: batch.closed):
                batch.fail(f"end of batch not answered within {self._ack_timeout:g} s")
                self._drop_batch()
        elif self._inflight and not await self._wait_for(lambda: self._inflight == 0):
            self._reset_inflight()
        if self._pending or self._failures:
            self._failures = 0
            if self._pending:
                raise WriteFailed(f"NATS {self.url}: {len(self._pending)} publish(es) not acknowledged yet")

    async def flush(self) -> None:
        if self._pending or self._batch is not None:
            await self._publish()
            await self._collect()
        # Draining a spill: keep going a while (no new frames need to arrive to move it along).
        deadline = time.monotonic() + 1.0
        while self._spill is not None and self._spill.active and time.monotonic() < deadline:
            await self._publish()
            await self._collect()

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            if self._spill is not None:
                self._spill.close()
        await self._conn.close()
