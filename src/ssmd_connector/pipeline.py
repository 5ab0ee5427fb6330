"""Where a frame enters the recorder: the intake stamps it, the bounded queue carries it.

Connectors hand frames to :class:`Intake` from their socket callbacks. The receive timestamp is
taken by :meth:`Intake.stamp` — the only place the clock is read for frames — once per socket
read: every frame that one ``recv`` returned was read off the socket at that instant, so they
share the stamp (and the hot path formats one timestamp per read, not per frame).

Frames of one read travel together: :meth:`Intake.put` hands the read's messages to the
:class:`FrameQueue` in one step. The queue is bounded in frames; when it is full it pauses reading
on every attached socket (TCP backpressure, so the peer slows down) instead of dropping, and
resumes once the writer task has drained it to half.
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
        self._batches: deque[list[Message]] = deque()
        self._count = 0
        self._stats = stats
        self._waiter: asyncio.Future[None] | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._paused = False
        self._closed = False
        self.pauses = 0
        """How many times reading was paused because the queue was full (observability)."""

    def __len__(self) -> int:
        return self._count

    @property
    def paused(self) -> bool:
        return self._paused

    def put(self, batch: list[Message]) -> None:
        """Enqueue the frames of one read (the list is owned by the queue afterwards)."""
        self._batches.append(batch)
        self._count += len(batch)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._count >= self.capacity and not self._paused:
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
        """About ``max_items`` messages (whole reads), waiting up to ``timeout`` s for the first.

        Returns ``[]`` on timeout, or when the queue is closed and empty.
        """
        batches = self._batches
        if not batches and not self._closed:
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
        if not batches:
            return []
        out = batches.popleft()
        while batches and len(out) < max_items:
            out += batches.popleft()
        if len(out) > max_items:
            # One huge read (a burst drained from a full socket buffer): hand it on in slices,
            # so the writer's working set stays small and cache-resident.
            batches.appendleft(out[max_items:])
            del out[max_items:]
        self._count -= len(out)
        self._stats.queue_depth = self._count
        if self._paused and self._count <= self._resume_below:
            self._resume()
        return out

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
    # Duck-typed: picows may run on aiofastnet, whose transports are not asyncio.ReadTransport
    # subclasses but have the same pause_reading/resume_reading.
    if transport.is_closing():
        return
    if on:
        transport.resume_reading()  # type: ignore[attr-defined]
    else:
        transport.pause_reading()  # type: ignore[attr-defined]


class Intake:
    """The front door of the pipeline, one per feed: the clock for reads, the queue's input."""

    __slots__ = ("_feed", "_now", "_queue", "_stats")

    def __init__(self, feed: str, queue: FrameQueue, stats: FeedStats, now_ns: NowNs = wall_clock_ns) -> None:
        self._feed = feed
        self._queue = queue
        self._stats = stats
        self._now = now_ns

    @property
    def feed(self) -> str:
        return self._feed

    def stamp(self) -> int:
        """The receive time of a socket read, ns since the epoch (UTC wall clock)."""
        return self._now()

    def put(self, batch: list[Message]) -> None:
        if batch:
            stats = self._stats
            stats.messages += len(batch)
            stats.last_message_ns = batch[-1].received_ns
            self._queue.put(batch)

    def attach(self, transport: asyncio.BaseTransport) -> None:
        self._queue.attach(transport)

    def detach(self, transport: asyncio.BaseTransport) -> None:
        self._queue.detach(transport)
