"""The intake and the bounded queue on their own, without sockets: order, backpressure, wake-ups, stamps."""

from __future__ import annotations

import asyncio

import pytest

from ssmd_connector.message import Message
from ssmd_connector.metrics import FeedStats
from ssmd_connector.pipeline import FrameQueue, Intake

T0 = 1_795_000_000_000_000_000


class FakeTransport(asyncio.ReadTransport):
    """A socket's read side as the queue sees it: records every pause and resume."""

    def __init__(self, closing: bool = False) -> None:
        super().__init__()
        self.reading = True
        self.calls: list[str] = []
        self.closing = closing

    def pause_reading(self) -> None:
        self.calls.append("pause")
        self.reading = False

    def resume_reading(self) -> None:
        self.calls.append("resume")
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closing


class FakeClock:
    """An injected ``now_ns`` that advances 1 µs per reading and counts the readings."""

    def __init__(self, start: int = T0) -> None:
        self.next = start
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        now = self.next
        self.next += 1000
        return now


def msgs(*ids: int, ns: int = T0) -> list[Message]:
    return [Message(ns, "kalshi", b'{"i":%d}' % i) for i in ids]


def ids(batch: list[Message]) -> list[int]:
    return [int(m.frame[5:-1]) for m in batch]


def queue(capacity: int = 8) -> tuple[FrameQueue, FeedStats]:
    stats = FeedStats("kalshi")
    return FrameQueue(capacity, stats), stats


# --- FrameQueue: order and batching


def test_capacity_below_two_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        FrameQueue(1, FeedStats("kalshi"))


async def test_reads_come_out_whole_in_fifo_order_up_to_max_items() -> None:
    q, _ = queue(capacity=100)
    q.put(msgs(0, 1))
    q.put(msgs(2))
    q.put(msgs(3, 4, 5))
    assert len(q) == 6
    assert ids(await q.get_batch(3)) == [0, 1, 2]
    assert ids(await q.get_batch(3)) == [3, 4, 5]
    assert len(q) == 0


async def test_a_read_larger_than_max_items_is_handed_on_in_slices() -> None:
    q, stats = queue(capacity=100)
    q.put(msgs(*range(10)))
    assert ids(await q.get_batch(4)) == [0, 1, 2, 3]
    assert (len(q), stats.queue_depth) == (6, 6)
    q.put(msgs(10))
    assert ids(await q.get_batch(4)) == [4, 5, 6, 7]
    assert ids(await q.get_batch(4)) == [8, 9, 10]
    assert (len(q), stats.queue_depth) == (0, 0)


async def test_queue_depth_stat_is_what_the_consumer_left_behind() -> None:
    q, stats = queue(capacity=100)
    q.put(msgs(0, 1, 2))
    q.put(msgs(3, 4))
    await q.get_batch(3)
    assert stats.queue_depth == 2 == len(q)


# --- FrameQueue: backpressure instead of drops


async def test_full_queue_pauses_every_socket_and_drops_nothing() -> None:
    q, _ = queue(capacity=4)
    a, b = FakeTransport(), FakeTransport()
    q.attach(a)
    q.attach(b)
    q.put(msgs(0, 1, 2))
    assert not q.paused and a.reading and b.reading
    q.put(msgs(3))
    assert q.paused and not a.reading and not b.reading
    assert q.pauses == 1
    # Frames already in flight from a paused socket are still accepted, beyond capacity.
    q.put(msgs(4, 5, 6))
    assert len(q) == 7
    assert a.calls == b.calls == ["pause"]
    assert ids(await q.get_batch(100)) == list(range(7))


async def test_reading_resumes_only_once_drained_to_half() -> None:
    q, _ = queue(capacity=8)
    t = FakeTransport()
    q.attach(t)
    for i in range(8):
        q.put(msgs(i))
    assert q.paused
    await q.get_batch(3)  # 5 left: above half
    assert q.paused and not t.reading
    await q.get_batch(1)  # 4 left: half
    assert not q.paused and t.reading
    assert t.calls == ["pause", "resume"]


async def test_each_time_the_queue_fills_counts_as_one_pause() -> None:
    q, _ = queue(capacity=2)
    for _ in range(2):
        q.put(msgs(0, 1))
        q.put(msgs(2))  # already paused: no second pause
        await q.get_batch(100)
    assert q.pauses == 2


def test_socket_attached_while_paused_is_paused_at_once() -> None:
    q, _ = queue(capacity=2)
    q.put(msgs(0, 1))
    late = FakeTransport()
    q.attach(late)
    assert late.calls == ["pause"] and not late.reading


async def test_detached_and_closing_sockets_are_left_alone() -> None:
    q, _ = queue(capacity=2)
    gone, closing = FakeTransport(), FakeTransport(closing=True)
    q.attach(gone)
    q.attach(closing)
    q.detach(gone)
    q.put(msgs(0, 1))
    await q.get_batch(100)
    assert gone.calls == [] and closing.calls == []


# --- FrameQueue: the async consumer


async def test_waiting_consumer_is_woken_by_put() -> None:
    q, _ = queue()
    consumer = asyncio.create_task(q.get_batch(10))
    await asyncio.sleep(0)
    assert not consumer.done()
    q.put(msgs(7))
    assert ids(await asyncio.wait_for(consumer, 1)) == [7]


async def test_get_batch_times_out_with_an_empty_list_and_can_wait_again() -> None:
    q, _ = queue()
    assert await q.get_batch(10, timeout=0.01) == []
    consumer = asyncio.create_task(q.get_batch(10))
    await asyncio.sleep(0)
    q.put(msgs(1))
    assert ids(await asyncio.wait_for(consumer, 1)) == [1]


async def test_close_wakes_a_waiting_consumer_with_nothing() -> None:
    q, _ = queue()
    consumer = asyncio.create_task(q.get_batch(10))
    await asyncio.sleep(0)
    q.close()
    assert await asyncio.wait_for(consumer, 1) == []
    assert q.closed


async def test_frames_queued_before_close_are_still_drained() -> None:
    q, _ = queue()
    q.put(msgs(0, 1))
    q.close()
    assert ids(await q.get_batch(10)) == [0, 1]
    # Closed and empty: returns at once instead of waiting (no timeout given).
    assert await asyncio.wait_for(q.get_batch(10), 1) == []


# --- Intake: the one clock reading per socket read


def test_stamp_reads_the_injected_clock_once_per_read() -> None:
    clock = FakeClock()
    intake = Intake("kalshi", queue()[0], FeedStats("kalshi"), now_ns=clock)
    assert intake.stamp() == T0
    assert intake.stamp() == T0 + 1000
    assert clock.reads == 2


async def test_frames_of_one_read_share_its_stamp_and_feed() -> None:
    """As a connector uses it: one stamp, then one put of the read's frames; put reads no clock."""
    clock = FakeClock()
    q, stats = queue(capacity=100)
    intake = Intake("kalshi", q, stats, now_ns=clock)
    for read in ([b"{}", b"[]"], [b"1"]):
        ns = intake.stamp()
        intake.put([Message(ns, intake.feed, f) for f in read])
    assert clock.reads == 2
    out = await q.get_batch(100)
    assert [(m.received_ns, m.feed, m.frame) for m in out] == [
        (T0, "kalshi", b"{}"),
        (T0, "kalshi", b"[]"),
        (T0 + 1000, "kalshi", b"1"),
    ]


def test_put_counts_messages_and_keeps_the_newest_receive_time() -> None:
    q, stats = queue(capacity=100)
    intake = Intake("kalshi", q, stats)
    intake.put(msgs(0, ns=T0))
    intake.put(msgs(1, ns=T0 + 5) + msgs(2, ns=T0 + 9))
    assert (stats.messages, stats.last_message_ns, len(q)) == (3, T0 + 9, 3)


def test_an_empty_read_is_not_queued_or_counted() -> None:
    q, stats = queue()
    intake = Intake("kalshi", q, stats)
    intake.put([])
    assert (len(q), stats.messages, stats.last_message_ns) == (0, 0, 0)


def test_intake_passes_the_queues_backpressure_to_its_sockets() -> None:
    q, stats = queue(capacity=2)
    intake = Intake("kalshi", q, stats)
    t = FakeTransport()
    intake.attach(t)
    intake.put(msgs(0, 1))
    assert not t.reading
    intake.detach(t)
    assert q.paused and t.calls == ["pause"]
