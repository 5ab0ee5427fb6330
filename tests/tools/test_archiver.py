"""The archiver: JetStream → sealed segments, exactly once, even when killed mid-run."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ssmd_connector.archive import archive_files, read_lines
from ssmd_connector.archive.line import ArchivedLines, LineEncoder
from ssmd_connector.message import Message
from ssmd_connector.tools.archiver import archive, archived_message
from ssmd_connector.tools.jetstream_pull import stream_sequence
from ssmd_connector.writers.nats import NatsWriter

from ..helpers import archiver_cmd, free_port, write_config
from ..kalshi_helpers import eventually
from ..natsserver import NatsServer

BIN = Path(sys.executable).parent
T0 = 1_795_000_000 * 10**9


def test_archive_lines_are_written_back_byte_for_byte() -> None:
    enc = LineEncoder()
    originals = [
        Message(T0 + 123_456_000, "kalshi", b'{"type":"trade","x":1.50}', json_valid=True, kind="trade"),
        Message(T0 + 999_999_000, "kalshi", b"not json {"),
        Message(T0, "kalshi", b"\x00\xff", binary=True),
        Message(T0 + 1_000, "kalshi", b'{\n "a":1}'),
    ]
    lines = [enc.encode(m)[:-1] for m in originals]
    back = [
        archived_message(line, f"ssmd.kalshi.{m.kind or '_'}.X", "kalshi", 2)
        for line, m in zip(lines, originals, strict=True)
    ]
    assert all(b is not None for b in back)
    assert [(b.received_ns, b.kind) for b in back if b] == [(m.received_ns, m.kind) for m in originals]
    assert ArchivedLines().encode_batch([b for b in back if b]) == (b"\n".join(lines) + b"\n", 4)
    for junk in (b"hello", b'{"ts":"yesterday","data":1}', b'{"ts":"2026-11-24T10:00:00Z"}\n{"x":1}'):
        assert archived_message(junk, "ssmd.kalshi.trade.X", "kalshi", 2) is None


def test_stream_sequences_from_ack_subjects() -> None:
    assert stream_sequence("$JS.ACK.KALSHI.archiver-kalshi.1.4711.12.1795000000000000000.3") == 4711
    assert stream_sequence("$JS.ACK.hub.ACC123.KALSHI.archiver-kalshi.1.4711.12.1795000000000000000.3.rnd") == 4711
    with pytest.raises(ValueError, match="not a JetStream ack subject"):
        stream_sequence("_INBOX.abc")


async def publish(url: str, n: int, first: int = 0) -> None:
    """Frames with Kalshi ``seq`` first..n-1, published by the recorder's writer."""
    w = NatsWriter(url, "KALSHI", "ssmd", create_stream=True)
    for start in range(first, n, 5000):
        await w.write(
            [
                Message(
                    T0 + i * 1000,
                    "kalshi",
                    b'{"type":"orderbook_delta","sid":1,"seq":%d,"msg":{"market_ticker":"KX-%d"}}' % (i, i % 7),
                    False,
                    True,
                    "orderbook_delta",
                )
                for i in range(start, min(n, start + 5000))
            ]
        )
    await w.close()


def archiver_config(tmp_path: Path, server: NatsServer) -> Path:
    return write_config(
        tmp_path / "cfg",
        feed_name="kalshi",
        env=f"name: arch\nfeed: kalshi\nstorage:\n  type: local\n  path: {tmp_path / 'archive'}\n  rotation: 1h\n"
        f"  compression: zstd\nnats: {{url: '{server.url}', stream: KALSHI}}\n",
        feed="name: kalshi\ntype: websocket\nversions:\n"
        "  - {version: x, endpoint: 'ws://127.0.0.1:9/x', active: true}\n",
        env_name="arch",
    )


def archived_seqs(data: Path) -> list[int]:
    """Kalshi ``seq`` of every archived frame, in archive order; ``ssmd verify`` must pass too."""
    assert not list(data.glob("*/.*.open"))
    seqs: list[int] = []
    for seg in archive_files(data, "kalshi"):  # in time order
        seqs += [json.loads(x)["data"]["seq"] for x in read_lines(seg)]
    verify = subprocess.run([str(BIN / "ssmd"), "verify", str(data)], capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stdout
    return seqs


def test_killed_archiver_resumes_without_loss_or_duplicates(server: NatsServer, tmp_path: Path) -> None:
    n = 30_000
    asyncio.run(publish(server.url, n))
    data = tmp_path / "archive"
    cfg = archiver_config(tmp_path, server)
    cmd = archiver_cmd(cfg)
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = data / ".archiver-kalshi.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ckpt.exists() and 0 < json.loads(ckpt.read_text())["stream_seq"] < n:
            break
        time.sleep(0.01)
    first.kill()  # mid-run: no flush, no seal, no ack of the current batch
    first.wait(10)
    second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ckpt.exists() and json.loads(ckpt.read_text())["stream_seq"] == n:
            break
        time.sleep(0.1)
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0, second.stderr.read() if second.stderr else ""
    assert sorted(archived_seqs(data)) == list(range(n))  # every frame, exactly once


async def test_archiver_rides_out_a_nats_restart(server: NatsServer, tmp_path: Path) -> None:
    n = 20_000
    await publish(server.url, n)
    cfg = archiver_config(tmp_path, server)
    ckpt = tmp_path / "archive" / ".archiver-kalshi.json"

    def progress() -> int:
        return int(json.loads(ckpt.read_text())["stream_seq"]) if ckpt.exists() else 0

    stop = asyncio.Event()
    task = asyncio.create_task(archive(cfg, "arch", stop, batch=500))
    await eventually(lambda: progress() > 0, what="archiving started")
    server.kill()  # pull requests in flight are lost with the server, silently
    await asyncio.sleep(1.0)
    server.start()
    await publish(server.url, 0)  # (reconnects; the stream and the durable consumer survived)
    await eventually(lambda: progress() == n, timeout=60, what="everything archived after the restart")
    stop.set()
    assert await task == 0
    assert archived_seqs(tmp_path / "archive") == list(range(n))  # in stream order, once each


def test_archiver_waits_for_a_missing_stream_and_archives_once_it_exists(server: NatsServer, tmp_path: Path) -> None:
    """At boot the archiver may start before the recorder created the stream. It used to exit 2
    (a configuration error: systemd's RestartPreventExitStatus=2 left it dead); now it waits with
    backoff, ``/ready`` naming the stream, and starts archiving once the stream exists."""
    cfg = archiver_config(tmp_path, server)
    port = free_port()
    cmd = archiver_cmd(cfg, health_port=port)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:

        def ready() -> tuple[int, dict[str, Any]]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        deadline = time.monotonic() + 20
        while True:
            try:
                status, body = ready()
                if "no stream 'KALSHI'" in str(body.get("reasons")):
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the archiver gave up on the stream"
            time.sleep(0.1)
        assert status == 503
        asyncio.run(publish(server.url, 100))  # the recorder creates the stream
        ckpt = tmp_path / "archive" / ".archiver-kalshi.json"
        deadline = time.monotonic() + 30
        while not (ckpt.exists() and json.loads(ckpt.read_text())["stream_seq"] == 100):
            assert proc.poll() is None and time.monotonic() < deadline, "not archived"
            time.sleep(0.1)
        assert ready()[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert err.count("no stream 'KALSHI'") == 1 and "Traceback" not in err  # said once, not per retry
    assert archived_seqs(tmp_path / "archive") == list(range(100))


def test_a_second_archiver_of_the_same_feed_and_storage_exits_2(server: NatsServer, tmp_path: Path) -> None:
    """Two archivers of one feed in one storage path would write the same segments and
    checkpoint: the second one exits 2 with one line, the first one goes on."""
    cfg = archiver_config(tmp_path, server)
    cmd = archiver_cmd(cfg)
    log = tmp_path / "first.log"
    with log.open("w") as out:
        first = subprocess.Popen(cmd, stdout=out, stderr=out, text=True)
    try:
        # No stream yet: the first one took the lock, then waits for the stream (and says so).
        deadline = time.monotonic() + 20
        while "no stream 'KALSHI'" not in log.read_text():
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        assert second.returncode == 2, second.stderr
        lines = [x for x in second.stderr.splitlines() if "ssmd archive:" in x]
        assert lines == [
            f"ssmd archive: another ssmd archive is running for feed 'kalshi' in {tmp_path / 'archive'} "
            "(it holds .archiver-kalshi.lock): one archiver per feed and storage path"
        ], second.stderr
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(30)
    assert first.returncode == 0, log.read_text()
