"""The archiver: JetStream → sealed segments, exactly once, even when killed mid-run."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from ssmd_connector.message import LineEncoder, Message
from ssmd_connector.tools.archiver import to_message
from ssmd_connector.writers.nats import NatsWriter
from ssmd_connector.writers.segments import decompress_all

from .helpers import write_config
from .natsserver import NatsServer

BIN = Path(sys.executable).parent
T0 = 1_795_000_000 * 10**9


def test_archive_lines_round_trip_through_messages() -> None:
    enc = LineEncoder()
    for m in (
        Message(T0 + 123_456_000, "kalshi", b'{"type":"trade","x":1.50}', False, True, "trade"),
        Message(T0, "kalshi", b"not json {"),
        Message(T0, "kalshi", b"\x00\xff", True),
        Message(T0, "kalshi", b'{\n "a":1}'),
    ):
        line = enc.encode(m)
        assert enc.encode(to_message(line[:-1], "kalshi")) == line


def test_killed_archiver_resumes_without_loss_or_duplicates(server: NatsServer, tmp_path: Path) -> None:
    n = 30_000
    feed_frames = [
        b'{"type":"orderbook_delta","sid":1,"seq":%d,"msg":{"market_ticker":"KX-%d"}}' % (i, i % 7) for i in range(n)
    ]

    async def publish() -> None:
        w = NatsWriter(server.url, "KALSHI", "ssmd", create_stream=True)
        for start in range(0, n, 5000):
            await w.write(
                [
                    Message(T0 + i * 1000, "kalshi", feed_frames[i], False, True, "orderbook_delta")
                    for i in range(start, min(n, start + 5000))
                ]
            )
        await w.close()

    asyncio.run(publish())
    data = tmp_path / "archive"
    cfg = write_config(
        tmp_path / "cfg",
        feed_name="kalshi",
        env=f"name: arch\nfeed: kalshi\nstorage:\n  type: local\n  path: {data}\n  rotation: 1h\n"
        f"  compression: zstd\nnats: {{url: '{server.url}', stream: KALSHI}}\n",
        feed="name: kalshi\ntype: websocket\nversions:\n"
        "  - {version: x, endpoint: 'ws://127.0.0.1:9/x', active: true}\n",
        env_name="arch",
    )
    cmd = [str(BIN / "ssmd"), "archive", "--config-dir", str(cfg), "--env", "arch"]
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
    assert not list(data.glob("*/.*.open"))
    archived: list[bytes] = []
    for seg in sorted(data.glob("*/kalshi-*.jsonl.zst")):
        archived += [
            json.dumps(json.loads(x)["data"], separators=(",", ":")).encode()
            for x in decompress_all(seg.read_bytes(), "zstd").splitlines()
        ]
    seqs = [json.loads(x)["seq"] for x in archived]
    assert sorted(seqs) == list(range(n))  # every frame, exactly once
    verify = subprocess.run([str(BIN / "ssmd"), "verify", str(data)], capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stdout
