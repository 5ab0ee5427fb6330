"""The JetStream writer against a real nats-server: acknowledged, de-duplicated, restart-safe."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import StreamConfig
from nats.protocol.command import hpub_cmd

from ssmd_connector.archive.line import LineEncoder
from ssmd_connector.errors import WriteFailed
from ssmd_connector.message import Message
from ssmd_connector.sim import SimConfig, SimServer
from ssmd_connector.writers.nats import NatsWriter, PublishMode, subject_token, ticker_of
from ssmd_connector.writers.nats.acks import BatchAcks
from ssmd_connector.writers.nats.fast_batch import FastBatch
from ssmd_connector.writers.nats.wire import render

from ..helpers import read_lines, write_config
from ..kalshi_helpers import KEY, KEY_ID, eventually, exported, record
from ..natsserver import NatsServer

T0 = 1_795_000_000 * 10**9


def messages(start: int, n: int) -> list[Message]:
    out = []
    for i in range(start, start + n):
        ticker = b"KXHIGHNY-26NOV24-B53.5" if i % 2 else b"KXBTCD-26NOV24-T100000"
        frame = b'{"type":"orderbook_delta","sid":1,"seq":%d,"msg":{"market_ticker":"%s"}}' % (i, ticker)
        out.append(Message(T0 + i * 1000, "kalshi", frame, json_valid=True, kind="orderbook_delta"))
    return out


async def stream_messages(url: str, stream: str) -> list[tuple[str, bytes]]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        m = await js.get_msg(stream, seq)
        out.append((m.subject or "", m.data or b""))
    await nc.close()
    return out


def test_subject_tokens() -> None:
    assert subject_token("KXHIGHNY-26NOV24-B53.5") == "KXHIGHNY-26NOV24-B53_5"
    assert subject_token("a b*c>d") == "a_b_c_d" and subject_token("") == "_"
    assert ticker_of(b'{"msg":{"market_ticker":"X-1.5","ts":1}}') == b"X-1.5"
    assert ticker_of(b'{"type":"subscribed"}') == b""


MODES = pytest.mark.parametrize("mode", ["fast-batch", "per-message"])


@MODES
async def test_every_frame_published_once_with_archive_line_body(server: NatsServer, mode: PublishMode) -> None:
    w = NatsWriter(server.url, "KALSHI", "ssmd", create_stream=True, max_pending=512, publish=mode)
    batch = messages(0, 2000)
    await w.write(batch[:1500])
    await w.write(batch[1500:])
    assert w.publish_mode == mode
    await w.close()
    stored = await stream_messages(server.url, "KALSHI")
    assert len(stored) == 2000 and w.acked == 2000
    enc = LineEncoder()
    assert [body for _, body in stored] == [enc.encode(m)[:-1] for m in batch]
    assert stored[1][0] == "ssmd.kalshi.orderbook_delta.KXHIGHNY-26NOV24-B53_5"
    assert stored[0][0] == "ssmd.kalshi.orderbook_delta.KXBTCD-26NOV24-T100000"


async def test_missing_stream_is_a_clear_error(server: NatsServer) -> None:
    w = NatsWriter(server.url, "NOPE", "ssmd")
    with pytest.raises(WriteFailed, match="stream 'NOPE' does not exist"):
        await w.write(messages(0, 1))


@MODES
async def test_nats_restart_mid_stream_loses_and_duplicates_nothing(server: NatsServer, mode: PublishMode) -> None:
    w = NatsWriter(server.url, "KALSHI", "ssmd", create_stream=True, ack_timeout=1.0, publish=mode)
    await w.write(messages(0, 500))
    await w.flush()
    server.kill()  # NATS dies with frames in flight
    failures = 0
    for start in (500, 1000):
        try:
            await w.write(messages(start, 500))
            await w.flush()
        except WriteFailed:
            failures += 1
    assert failures >= 1
    server.start()  # back, same storage
    deadline = time.monotonic() + 30
    while True:  # what the runner does: keep flushing until it goes through
        try:
            await w.flush()
            break
        except WriteFailed:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)
    await w.close()
    stored = await stream_messages(server.url, "KALSHI")
    seqs = [int(body.split(b'"seq":')[1].split(b",")[0]) for _, body in stored]
    if mode == "fast-batch":  # a failed batch is re-sent before anything newer: stream order kept
        assert seqs == list(range(1500))
    else:  # a PubAck error re-sends that frame alone, possibly after newer ones
        assert sorted(seqs) == list(range(1500))  # all of them, once each


async def test_a_failed_batch_is_resent_without_duplicates(
    server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The server abandons a batch that skips a sequence number; everything still lands once."""
    w = NatsWriter(server.url, "KALSHI", "ssmd", create_stream=True, max_pending=256)
    await w.write(messages(0, 300))
    assert isinstance(w._acks, BatchAcks)
    batch = w._acks.batch
    assert batch is not None
    batch.sent += 1  # a lost message, as the server sees it: the next publish leaves a gap
    await w.write(messages(300, 700))
    for _ in range(20):  # the runner's retry loop
        try:
            await w.flush()
            break
        except WriteFailed:
            await asyncio.sleep(0.1)
    await w.close()
    stored = await stream_messages(server.url, "KALSHI")
    seqs = [int(body.split(b'"seq":')[1].split(b",")[0]) for _, body in stored]
    assert seqs == list(range(1000)) and w.acked == 1000  # once each, in order
    assert "JetStream batch" in caplog.text and "failed" in caplog.text  # the failure path really ran


async def test_publish_mode_follows_the_stream(server: NatsServer) -> None:
    nc = await nats.connect(server.url)
    await nc.jetstream().add_stream(StreamConfig(name="PLAIN", subjects=["plain.>"]))  # no allow_batched
    await nc.close()
    w = NatsWriter(server.url, "PLAIN", "plain")
    await w.write(messages(0, 10))
    await w.close()
    assert w.publish_mode == "per-message" and w.acked == 10
    strict = NatsWriter(server.url, "PLAIN", "plain", publish="fast-batch")
    with pytest.raises(WriteFailed, match="does not allow fast batches"):
        await strict.write(messages(0, 1))


def test_block_rendering_matches_nats_py_byte_for_byte() -> None:
    subject, reply, msg_id, payload = "ssmd.kalshi.trade.X_1", "_INBOX.a.b1.100.fail.7.1.$FI", "kalshi.r.7", b'{"a":1}'
    header = b"NATS/1.0\r\nNats-Msg-Id: " + msg_id.encode() + b"\r\n\r\n"
    expected = hpub_cmd(subject, reply, header, payload)
    assert render([(subject, reply, msg_id, payload)] * 2) == expected * 2


async def test_the_block_path_is_in_use(server: NatsServer) -> None:
    """If nats-py ever loses the internals the block path needs, we fall back — and this fails."""
    w = NatsWriter(server.url, "KALSHI", "ssmd", create_stream=True)
    await w.write(messages(0, 1))
    link = w._link.current
    assert link is not None and link.sender.fast
    await w.close()


def fan_out_config(sim: SimServer, server: NatsServer, markets: int, extra: str = "") -> str:
    """A Kalshi subscription plus a nats block: the recorder writes files and publishes."""
    tickers = ", ".join(sim.model.open_tickers[:markets])
    return (
        f"  channels: [orderbook_delta, trade]\n  markets: [{tickers}]\n"
        f"nats: {{url: '{server.url}', stream: KALSHI, create_stream: true{extra}}}\n"
    )


async def test_recorder_fans_out_to_file_and_jetstream(server: NatsServer, tmp_path: Path) -> None:
    sim = SimServer(SimConfig(port=0, markets=10, rate=1500, public_keys={KEY_ID: KEY.public_key()}))
    await sim.start()
    sub = fan_out_config(sim, server, 4)
    s = await record(tmp_path, sim, sub)
    await eventually(lambda: s.recorder.runner.stats.messages > 1500)
    await s.stop()
    await sim.stop()
    archived = read_lines(s.data, "kalshi")
    published = await stream_messages(server.url, "KALSHI")
    assert [body for _, body in published] == archived


async def test_nats_down_shows_in_ready_and_recovers(server: NatsServer, tmp_path: Path) -> None:
    sim = SimServer(SimConfig(port=0, markets=10, rate=3000, public_keys={KEY_ID: KEY.public_key()}))
    await sim.start()
    sub = fan_out_config(sim, server, 3, ", max_backlog_mb: 1")
    s = await record(tmp_path, sim, sub)
    runner = s.recorder.runner
    await eventually(lambda: runner.stats.messages > 300)
    server.stop()
    await eventually(lambda: runner.write_error is not None, timeout=20, what="write failure noticed")
    assert any("writes failing" in r for r in runner.not_ready_reasons())
    # The backlog grows to its bound, no further: then reading pauses and the queue holds the rest.
    await eventually(lambda: runner.backlog_full, timeout=30, what="backlog bound reached")
    assert any("backlog full" in r for r in runner.not_ready_reasons())
    held = runner.stats.backlog_bytes
    await asyncio.sleep(1.5)
    assert 1 << 20 <= runner.stats.backlog_bytes == held < 2 << 20
    # The alerts' states: the backlog went flat at its bound, the error counter moved once; both
    # gauges stay 1 for as long as the outage lasts.
    assert exported(runner.stats, "ssmd_writes_failing") == 1 == runner.stats.errors["write"]
    assert exported(runner.stats, "ssmd_write_backlog_full") == 1
    server.start()
    await eventually(lambda: s.recorder.runner.write_error is None, timeout=30, what="writes recovered")
    await eventually(lambda: exported(runner.stats, "ssmd_write_backlog_full") == 0, what="backlog drained")
    assert exported(runner.stats, "ssmd_writes_failing") == 0
    await s.stop()
    await sim.stop()
    archived = read_lines(s.data, "kalshi")
    published = [body for _, body in await stream_messages(server.url, "KALSHI")]
    assert published == archived  # nothing lost, nothing twice, in receive order


async def test_server_deduplicates_msg_ids_inside_fast_batches(server: NatsServer) -> None:
    """What re-sending a failed batch relies on, pinned against the real server: a Nats-Msg-Id
    already stored is not stored again, whether repeated in the same batch or in a new one."""
    nc = await nats.connect(server.url)
    await nc.jetstream().add_stream(StreamConfig(name="DEDUP", subjects=["dedup.>"], allow_batched=True))
    inbox = nc.new_inbox()
    replies: dict[str, FastBatch] = {}

    async def on_reply(msg: Msg) -> None:
        replies[msg.subject.split(".")[2]].on_frame(msg.data)

    await nc.subscribe(f"{inbox}.>", cb=on_reply)

    async def send(batch_id: str, ids: list[int]) -> FastBatch:
        batch = replies[batch_id] = FastBatch(inbox, batch_id, 2)
        for i in ids:
            reply = batch.next_reply("dedup.x")
            await nc.publish("dedup.x", b"%d" % i, reply=reply, headers={"Nats-Msg-Id": f"id{i}"})
        await nc.publish("dedup.x", b"", reply=batch.end_reply())
        await eventually(lambda: batch.closed, what="end of batch answered")
        return batch

    first = await send("b1", [1, 2, 3, 2, 3])  # repeats inside the batch
    second = await send("b2", [1, 2, 3, 4, 5])  # repeats in a new batch
    assert first.failure is None and second.failure is None
    info = await nc.jetstream().stream_info("DEDUP")
    assert info.state.messages == 5
    await nc.close()


async def test_recorder_started_while_nats_is_down_keeps_its_local_archive(
    server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.stop()
    sim = SimServer(SimConfig(port=0, markets=10, rate=800, public_keys={KEY_ID: KEY.public_key()}))
    await sim.start()
    s = await record(tmp_path, sim, fan_out_config(sim, server, 3))
    runner = s.recorder.runner
    await eventually(lambda: runner.write_error is not None, timeout=20, what="write failure noticed")
    assert "NATS" in (runner.write_error or "") and "connecting" in (runner.write_error or "")
    await asyncio.sleep(2.5)  # NATS still down: the local archive is written all the same
    assert len(read_lines(s.data, "kalshi")) > 500
    server.start()
    await eventually(lambda: runner.write_error is None, timeout=30, what="writes recovered")
    await s.stop()
    await sim.stop()
    archived = read_lines(s.data, "kalshi")
    published = [body for _, body in await stream_messages(server.url, "KALSHI")]
    assert published == archived
    # One warning for the outage, not a traceback per connection attempt.
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    assert any("NATS" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_archiver_waits_quietly_for_nats_and_stops_cleanly(server: NatsServer, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "cfg",
        feed_name="kalshi",
        env=f"name: arch\nfeed: kalshi\nstorage: {{type: local, path: {tmp_path / 'a'}, rotation: 1h}}\n"
        "nats: {url: 'nats://127.0.0.1:9', stream: KALSHI}\n",
        feed="name: kalshi\ntype: websocket\nversions:\n"
        "  - {version: x, endpoint: 'ws://127.0.0.1:9/x', active: true}\n",
        env_name="arch",
    )
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "ssmd"), "archive", "--config-dir", str(cfg), "--env", "arch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)  # six connection attempts
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert err.count("nats://127.0.0.1:9") <= 3 and "stopped before NATS" in err, err


async def test_with_a_spill_reading_never_pauses_during_a_nats_outage(server: NatsServer, tmp_path: Path) -> None:
    sim = SimServer(SimConfig(port=0, markets=10, rate=3000, public_keys={KEY_ID: KEY.public_key()}))
    await sim.start()
    s = await record(tmp_path, sim, fan_out_config(sim, server, 3, ", max_backlog_mb: 1, spill_mb: 64"))
    runner = s.recorder.runner
    await eventually(lambda: runner.stats.messages > 300)
    server.stop()
    spill = s.data / ".nats-spill"
    await eventually(lambda: list(spill.glob("*.spill")), timeout=30, what="spilling")
    before = runner.stats.messages
    await asyncio.sleep(1.5)
    assert runner.stats.messages > before + 1000 and not runner.backlog_full  # still reading
    assert runner.stats.backlog_bytes > 1 << 20
    server.start()
    await eventually(lambda: not list(spill.glob("*.spill")), timeout=60, what="spill drained")
    await s.stop()
    await sim.stop()
    archived = read_lines(s.data, "kalshi")
    published = [body for _, body in await stream_messages(server.url, "KALSHI")]
    assert published == archived  # in order: the spill is published before anything newer
