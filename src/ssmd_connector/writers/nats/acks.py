"""How JetStream acknowledges what the writer publishes: two protocols behind one interface.

- :class:`PerMessageAcks` — one PubAck per frame on ``<inbox>.<Msg-Id>``; works with any JetStream.
  A rejected frame is re-published alone, possibly after newer ones.
- :class:`BatchAcks` — fast-ingest batches (:mod:`.fast_batch`, nats-server >= 2.14 with
  ``allow_batched``): the server acknowledges cumulatively, ~1 reply per hundreds of frames, which
  is what lifts acknowledged throughput past 100k frames/s. A batch ends at every flush; a failed
  batch is re-sent, same ids, before anything newer, so the stream keeps receive order.

Either way at most ``max_pending`` frames are in flight. Replies arrive on one inbox subscription
(not a future per message: nats-py's ``publish_async`` measured ~19k frames/s here) and are handed
to :meth:`Acks.on_reply`; a stored frame leaves the :class:`~.backlog.Backlog`, and on trouble
:meth:`Acks.reset` marks every frame unsent so the next flush publishes it again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable

from nats.aio.msg import Msg

from ...errors import WriteFailed
from .backlog import Backlog
from .fast_batch import FastBatch
from .stream import Link

log = logging.getLogger(__name__)


class Acks(ABC):
    """One acknowledgement protocol: reply subjects out, replies in, and waiting on them."""

    mode: str

    def __init__(self, link: Link, backlog: Backlog, max_pending: int, timeout: float) -> None:
        self._link = link
        self._backlog = backlog
        self._max_pending = max_pending
        self._timeout = timeout
        self.changed = asyncio.Event()
        """Set whenever a reply arrives: waiters re-check their condition."""
        self.failed_batches = 0
        self.last_failure = ""

    @property
    def open(self) -> bool:
        """Something was published that still has to be ended or collected."""
        return False

    @abstractmethod
    def has_room(self) -> bool:
        """Another frame may be put in flight."""

    @abstractmethod
    def reply_for(self, subject: str, msg_id: str) -> str:
        """The reply subject that publishes ``msg_id`` (and counts it as in flight)."""

    @abstractmethod
    async def wait_for_room(self) -> None:
        """Wait until half the in-flight window is acknowledged; ``WriteFailed`` on timeout."""

    @abstractmethod
    def on_reply(self, msg: Msg) -> None:
        """A reply from the server."""

    @abstractmethod
    async def collect(self) -> None:
        """Wait until everything in flight is answered; what was not stays in the backlog."""

    def reset(self) -> None:
        """Connection trouble: nothing in flight will be answered; publish it all again."""
        self._backlog.mark_unsent()
        self.changed.set()

    async def wait_for(self, done: Callable[[], bool]) -> bool:
        """Wait until ``done()`` (re-checked on every reply), pinging a silent batch; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while not done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(remaining, self._timeout / 3))
            except TimeoutError:
                await self.ping()
        return True

    async def ping(self) -> None:
        """Ask the server to repeat a reply that may have been lost, where the protocol can (PubAcks
        cannot be asked for again: an unanswered one times out and the frame is re-published)."""
        return

    def _not_acknowledged(self) -> WriteFailed:
        return WriteFailed(f"NATS {self._link.url}: publishes not acknowledged within {self._timeout:g} s")


class PerMessageAcks(Acks):
    mode = "per-message"

    def __init__(self, link: Link, backlog: Backlog, max_pending: int, timeout: float) -> None:
        super().__init__(link, backlog, max_pending, timeout)
        self._inflight = 0
        self._prefix = len(link.inbox) + 1

    def has_room(self) -> bool:
        return self._inflight < self._max_pending

    def reply_for(self, subject: str, msg_id: str) -> str:
        self._inflight += 1
        return f"{self._link.inbox}.{msg_id}"

    async def wait_for_room(self) -> None:
        half = self._max_pending // 2
        if not await self.wait_for(lambda: self._inflight < half):
            raise self._not_acknowledged()

    def on_reply(self, msg: Msg) -> None:
        msg_id = msg.subject[self._prefix :]
        p = self._backlog.pending.get(msg_id)
        if p is None or not p.sent:
            return
        self._inflight -= 1
        if b'"error"' in msg.data or not msg.data:
            p.sent = False  # rejected (or no stream): re-published on the next flush
        else:
            self._backlog.stored(msg_id)

    async def collect(self) -> None:
        if self._inflight and not await self.wait_for(lambda: self._inflight == 0):
            self.reset()

    def reset(self) -> None:
        self._inflight = 0
        super().reset()


class BatchAcks(Acks):
    mode = "fast-batch"

    def __init__(self, link: Link, backlog: Backlog, max_pending: int, timeout: float) -> None:
        super().__init__(link, backlog, max_pending, timeout)
        self._flow = max(1, min(1000, max_pending // 4))
        self._batch: FastBatch | None = None
        self._order: deque[tuple[int, str]] = deque()
        """(batch sequence, Msg-Id) sent in the current batch and not yet stored, in order."""

    @property
    def open(self) -> bool:
        return self._batch is not None

    @property
    def batch(self) -> FastBatch | None:
        return self._batch

    def has_room(self) -> bool:
        return self._batch is None or self._batch.unstored < self._max_pending

    def reply_for(self, subject: str, msg_id: str) -> str:
        batch = self._batch
        if batch is None or batch.closed:
            batch = self._batch = FastBatch(self._link.inbox, uuid.uuid4().hex, self._flow)
        reply = batch.next_reply(subject)
        self._order.append((batch.sent, msg_id))
        return reply

    async def wait_for_room(self) -> None:
        batch = self._batch
        if batch is None:  # it ended while the block went out: a new one has room
            return
        half = self._max_pending // 2
        if not await self.wait_for(lambda: batch.closed or batch.unstored < half):
            raise self._not_acknowledged()

    def on_reply(self, msg: Msg) -> None:
        batch = self._batch
        if batch is None or not msg.subject.startswith(batch.id, len(self._link.inbox) + 1):
            return  # a late reply to a batch already given up
        batch.on_frame(msg.data)
        order, backlog = self._order, self._backlog
        while order and order[0][0] <= batch.stored:
            backlog.stored(order.popleft()[1])
        if batch.closed:
            self._drop_batch()

    async def ping(self) -> None:
        batch, nc = self._batch, self._link.nc
        if batch is not None and not batch.closed and batch.sent and nc.is_connected:
            await nc.publish(batch.subject, b"", reply=batch.ping_reply())

    async def collect(self) -> None:
        """End the open batch and wait for the server's answer to it."""
        batch = self._batch
        if batch is None:
            return
        try:
            if not batch.ended:
                await self._link.nc.publish(batch.subject, b"", reply=batch.end_reply())
        except Exception as exc:
            self.reset()
            raise WriteFailed(f"NATS {self._link.url}: publish failed: {exc or type(exc).__name__}") from exc
        if not await self.wait_for(lambda: batch.closed):
            batch.fail(f"end of batch not answered within {self._timeout:g} s")
            self._drop_batch()

    def reset(self) -> None:
        if self._batch is not None:
            self._batch.fail("connection trouble")
            self._drop_batch()
        super().reset()

    def _drop_batch(self) -> None:
        """Forget the current batch; whatever it did not store is re-sent (same ids) in the next."""
        batch, self._batch = self._batch, None
        if batch is not None and batch.failure:
            self.failed_batches += 1
            self.last_failure = batch.failure
            log.warning(
                "JetStream batch %s failed (%s): re-sending %d unacknowledged frame(s)",
                batch.id,
                batch.failure,
                len(self._order),
            )
        pending = self._backlog.pending
        for _, msg_id in self._order:
            p = pending.get(msg_id)
            if p is not None:
                p.sent = False
        self._order.clear()
