"""Where a frame enters the recorder: the intake stamps it, the bounded queue carries it.

Connectors call :meth:`Intake.frame` from their socket callbacks. That is the only place a receive
timestamp is taken. The queue between the readers and the writer task is bounded in frames; when
it is full it pauses reading on every attached socket (TCP backpressure, so the peer slows down)
instead of dropping, and resumes once the writer has drained it to half.

Because socket callbacks run synchronously for a whole read buffer before the writer task wakes,
the writer naturally receives frames in batches: one wake-up per read, not per frame.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .clock import NowNs, wall_clock_ns
from .message import Message
from .metrics import FeedStats


class FrameQueue:
    """Bounded, never-dropping hand-off from socket callbacks (sync) to the writer task (async)."""

    def __init__(self, capacity: int, stats: FeedStats) -> None:
        if capacity < 2:
            raise ValueError("queue capacity must be at least 2")
        self.capacity = capacity
        self._resume_below = capacity // 2
        self._items: deque[Message] = deque()
        self._stats = stats
        self._waiter: asyncio.Future[None] | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._paused = False
        self._closed = False
        self.pauses = 0
        """How many times reading was paused because the queue was full (observability)."""

    def __len__(self) -> int:
        return len(self._items)

    @property
    def paused(self) -> bool:
        return self._paused

    def put(self, msg: Message) -> None:
        items = self._items
        items.append(msg)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if len(items) >= self.capacity and not self._paused:
            self._pause()

    def attach(self, transport: asyncio.BaseTransport) -> None:
        self._transports.add(transport)
        if self._paused:
            _set_reading(transport, False)

    def detach(self, transport: asyncio.BaseTransport) -> None:
        self._transports.discard(transport)

    def _pause(self) -> None:
        self._paused = True
        self.pauses += 1
        for t in self._transports:
            _set_reading(t, False)

    def _resume(self) -> None:
        self._paused = False
        for t in self._transports:
            _set_reading(t, True)

    async def get_batch(self, max_items: int, timeout: float | None = None) -> list[Message]:
        """Up to ``max_items`` messages, waiting up to ``timeout`` s for the first one.

        Returns ``[]`` on timeout, or when the queue is closed and empty.
        """
        items = self._items
        if not items and not self._closed:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _wake, waiter) if timeout is not None else None
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                if self._waiter is waiter:
                    self._waiter = None
        n = min(len(items), max_items)
        batch = [items.popleft() for _ in range(n)]
        self._stats.queue_depth = len(items)
        if self._paused and len(items) <= self._resume_below:
            self._resume()
        return batch

    def close(self) -> None:
        """No more input; wakes the consumer so it can drain what is left."""
        self._closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def closed(self) -> bool:
        return self._closed


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _set_reading(transport: asyncio.BaseTransport, on: bool) -> None:
    if not isinstance(transport, asyncio.ReadTransport) or transport.is_closing():
        return
    if on:
        transport.resume_reading()
    else:
        transport.pause_reading()


class Intake:
    """The front door of the pipeline, one per feed: stamps each frame and queues it."""

    __slots__ = ("_feed", "_now", "_queue", "_stats")

    def __init__(self, feed: str, queue: FrameQueue, stats: FeedStats, now_ns: NowNs = wall_clock_ns) -> None:
        self._feed = feed
        self._queue = queue
        self._stats = stats
        self._now = now_ns

    def frame(self, data: bytes, binary: bool = False) -> int:
        ts = self._now()
        stats = self._stats
        stats.messages += 1
        stats.last_message_ns = ts
        self._queue.put(Message(ts, self._feed, data, binary))
        return ts

    def attach(self, transport: asyncio.BaseTransport) -> None:
        self._queue.attach(transport)

    def detach(self, transport: asyncio.BaseTransport) -> None:
        self._queue.detach(transport)
