"""The NATS backlog spill: frames beyond the memory bound wait on disk, in order, and survive a crash."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from ssmd_connector.errors import WriteFailed
from ssmd_connector.writers.nats import NatsWriter
from ssmd_connector.writers.nats.spill import Spill

from ..natsserver import NatsServer
from .test_nats_writer import messages, stream_messages


def records(start: int, n: int) -> list[tuple[str, str, bytes]]:
    return [
        (f"kalshi.r.{i}", f"ssmd.kalshi.trade.T{i % 3}", b'{"ts":"x","data":{"seq":%d}}' % i)
        for i in range(start, start + n)
    ]


def spilling_writer(
    server: NatsServer, spill_dir: Path, memory: int = 256 << 20, ack_timeout: float = 5.0
) -> NatsWriter:
    """A writer that keeps ``memory`` bytes of backlog in memory, then spills (up to 64 MiB)."""
    return NatsWriter(
        server.url,
        "KALSHI",
        "ssmd",
        create_stream=True,
        ack_timeout=ack_timeout,
        max_backlog_bytes=memory,
        spill_dir=spill_dir,
        max_spill_bytes=64 << 20,
    )


def test_spill_reads_back_in_order_and_forgets_what_was_acknowledged(tmp_path: Path) -> None:
    spill = Spill(tmp_path, 1 << 20)
    assert not spill.active
    spill.append(records(0, 5))
    spill.append(records(5, 5))
    assert spill.active and spill.bytes > 0 and not spill.full
    first, end = spill.read(4)
    assert first == records(0, 4) and spill.waiting_bytes < spill.bytes
    spill.acknowledged(end)
    rest, end = spill.read(100)
    assert rest == records(4, 6)
    spill.acknowledged(end)
    assert not spill.active and spill.bytes == 0 and not list(tmp_path.iterdir())  # files removed


def test_a_new_run_resumes_after_what_was_acknowledged_and_skips_a_torn_record(tmp_path: Path) -> None:
    spill = Spill(tmp_path, 1 << 20)
    spill.append(records(0, 6))
    got, end = spill.read(2)
    spill.acknowledged(end)  # 0 and 1 are in NATS
    spill.close()
    (tmp_path / "1.spill").open("ab").write(b'kalshi.r.99 ssmd.kalshi.trade.T0 {"ts"')  # a crash mid-append
    again = Spill(tmp_path, 1 << 20)
    assert again.active
    got, end = again.read(100)
    assert got == records(2, 4)
    again.acknowledged(end)
    assert not again.active and not list(tmp_path.iterdir())


async def test_outage_beyond_the_memory_bound_spills_then_publishes_everything_in_order(
    server: NatsServer, tmp_path: Path
) -> None:
    spill_dir = tmp_path / "spill"
    w = spilling_writer(server, spill_dir, memory=64 << 10, ack_timeout=1.0)
    await w.write(messages(0, 100))
    await w.flush()
    server.stop()
    for start in range(100, 5000, 500):
        with contextlib.suppress(WriteFailed):
            await w.write(messages(start, min(500, 5000 - start)))
    in_memory = w._backlog.accepted - w._backlog.stored_bytes
    assert in_memory <= (64 << 10) + 500 * 200  # memory stayed at its bound (plus one batch)
    assert list(spill_dir.glob("*.spill")) and w.backlog_bytes > 500_000 and not w.backlog_full
    server.start()
    for _ in range(100):
        try:
            await w.flush()
            if not list(spill_dir.glob("*.spill")) and w.backlog_bytes == 0:
                break
        except WriteFailed:
            await asyncio.sleep(0.2)
    await w.write(messages(5000, 100))  # from memory again
    await w.close()
    stored = await stream_messages(server.url, "KALSHI")
    seqs = [int(body.split(b'"seq":')[1].split(b",")[0]) for _, body in stored]
    assert seqs == list(range(5100))  # all, once, in order
    assert not list(spill_dir.iterdir())


async def test_frames_spilled_by_a_crashed_run_are_published_by_the_next(server: NatsServer, tmp_path: Path) -> None:
    spill_dir = tmp_path / "spill"
    server.stop()
    crashed = spilling_writer(server, spill_dir, memory=16 << 10, ack_timeout=0.5)
    for start in range(0, 2000, 250):
        with contextlib.suppress(WriteFailed):
            await crashed.write(messages(start, 250))
    crashed._backlog.close()  # the process dies here: no flush, no close
    server.start()
    nxt = spilling_writer(server, spill_dir)
    await nxt.write(messages(2000, 10))  # behind the leftover spill
    for _ in range(50):
        await nxt.flush()
        if not list(spill_dir.glob("*.spill")):
            break
    await nxt.close()
    stored = await stream_messages(server.url, "KALSHI")
    seqs = [int(body.split(b'"seq":')[1].split(b",")[0]) for _, body in stored]
    # What the crashed run held in memory is lost to NATS (the local archive has it); what it
    # spilled is published by the next run, in order, followed by the next run's own frames.
    spilled = sorted(set(seqs) - set(range(2000, 2010)))
    assert spilled and spilled == list(range(spilled[0], 2000))
    assert seqs == spilled + list(range(2000, 2010))


async def test_a_spill_that_cannot_be_written_keeps_frames_in_memory_and_bounds_them(
    server: NatsServer, tmp_path: Path
) -> None:
    spill_dir = tmp_path / "spill"
    w = spilling_writer(server, spill_dir, memory=16 << 10, ack_timeout=0.5)
    server.stop()
    spill_dir.rmdir()
    spill_dir.write_text("not a directory")  # the spill cannot be written
    failures = []
    for start in range(0, 1000, 100):
        try:
            await w.write(messages(start, 100))
        except WriteFailed as exc:
            failures.append(str(exc))
    assert any("cannot spill" in f for f in failures)
    assert w.backlog_full  # memory bound applies again: the runner stops feeding us
    spill_dir.unlink()
    spill_dir.mkdir()  # the disk is back
    with contextlib.suppress(WriteFailed):  # (NATS is still down)
        await w.write(messages(1000, 100))
    assert list(spill_dir.glob("*.spill")) and not w.backlog_full
    server.start()
    for _ in range(100):
        with contextlib.suppress(WriteFailed):
            await w.flush()
            if not list(spill_dir.glob("*.spill")) and w.backlog_bytes == 0:
                break
        await asyncio.sleep(0.1)
    await w.close()
    stored = await stream_messages(server.url, "KALSHI")
    seqs = [int(body.split(b'"seq":')[1].split(b",")[0]) for _, body in stored]
    assert sorted(seqs) == list(range(1100))  # nothing lost, nothing twice
