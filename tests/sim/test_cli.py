"""The two console scripts together, as separate processes: ``ssmd sim`` and ``ssmd-connector``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from ssmd_connector.kalshi.auth import generate_key_pair

from ..helpers import free_port, write_config

BIN = Path(sys.executable).parent


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 20) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} not printed")


def test_recorder_process_records_simulator_process(tmp_path: Path) -> None:
    key, pem = generate_key_pair()
    pub = tmp_path / "pub.pem"
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    port = free_port()
    sim = subprocess.Popen(
        [
            str(BIN / "ssmd"),
            "sim",
            "--port",
            str(port),
            "--markets",
            "12",
            "--rate",
            "800",
            "--public-key",
            f"cli-key={pub}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    rec = None
    try:
        wait_for_line(sim, "Kalshi simulator: ws://127.0.0.1")
        data = tmp_path / "data"
        cfg = write_config(
            tmp_path / "cfg",
            feed_name="kalshi",
            env=f"name: test\nfeed: kalshi\nkeys:\n  - {{name: k, source: 'env:KALSHI_API_KEY,KALSHI_PRIVATE_KEY'}}\n"
            f"storage: {{type: local, path: {data}}}\n"
            "subscription:\n  channels: [orderbook_delta, trade, ticker, market_lifecycle_v2]\n"
            "  discover: {status: open}\n  max_markets_per_connection: 5\n",
            feed=f"name: kalshi\ntype: websocket\nversions:\n"
            f"  - {{version: sim, endpoint: 'ws://127.0.0.1:{port}/trade-api/ws/v2', active: true}}\n",
        )
        env = dict(os.environ, KALSHI_API_KEY="cli-key", KALSHI_PRIVATE_KEY=pem)
        rec = subprocess.Popen(
            [str(BIN / "ssmd-connector"), "--env", "test", "--config-dir", str(cfg), "--health-addr", "127.0.0.1:0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        archive = None
        while time.monotonic() < deadline:
            found = list(data.glob("*/kalshi.jsonl"))
            if found and found[0].stat().st_size > 50_000:
                archive = found[0]
                break
            time.sleep(0.2)
        assert archive is not None, "nothing recorded"
        rec.send_signal(signal.SIGINT)
        assert rec.wait(30) == 0
        _, err = rec.communicate()
        assert "Traceback" not in err and pem.splitlines()[1] not in err
        lines = archive.read_bytes().splitlines()
        types = {json.loads(x)["data"]["type"] for x in lines}
        assert {"subscribed", "orderbook_snapshot", "orderbook_delta"} <= types
        events = [
            json.loads(x)["event"]
            for x in (data / archive.parent.name / "kalshi.events.jsonl").read_text().splitlines()
        ]
        assert events.count("connect") == 3  # 11 open markets, 5 per connection
    finally:
        for proc in (rec, sim):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    assert sim.returncode == 0


def test_kill_9_mid_segment_leaves_no_corrupt_sealed_file(tmp_path: Path) -> None:
    """kill -9 the recorder mid-segment, restart it: the open segment is repaired and sealed,
    every sealed file verifies against the manifest, and nothing is left open."""
    port = free_port()
    sim = subprocess.Popen(
        [str(BIN / "ssmd"), "sim", "--port", str(port), "--markets", "10", "--rate", "3000", "--no-auth"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    data = tmp_path / "data"
    cfg = write_config(
        tmp_path / "cfg",
        feed_name="kalshi",
        env=f"name: test\nfeed: kalshi\nstorage:\n  type: local\n  path: {data}\n  rotation: 1h\n"
        "  compression: zstd\n  flush_interval: 0.2\n"
        "subscription:\n  channels: [orderbook_delta, trade]\n  discover: {status: open}\n",
        feed=f"name: kalshi\ntype: websocket\nversions:\n"
        f"  - {{version: sim, endpoint: 'ws://127.0.0.1:{port}/trade-api/ws/v2', active: true}}\n",
    )
    cmd = [str(BIN / "ssmd-connector"), "--env", "test", "--config-dir", str(cfg), "--health-addr", "127.0.0.1:0"]
    try:
        wait_for_line(sim, "Kalshi simulator")
        first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            opened = list(data.glob("*/.kalshi-*.jsonl.zst.open"))
            if opened and opened[0].stat().st_size > 20_000:
                break
            time.sleep(0.1)
        time.sleep(0.13)  # land somewhere inside a flush
        first.kill()  # SIGKILL: no drain, no seal
        first.wait(10)
        assert list(data.glob("*/.kalshi-*.open")), "a crash mid-segment leaves the segment open"
        second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(data.glob("*/kalshi-*.jsonl.zst")):
            time.sleep(0.1)
        time.sleep(1.0)
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(10)
    assert not list(data.glob("*/.kalshi-*.open"))
    sealed = sorted(p.name for p in data.glob("*/kalshi-*.jsonl.zst"))
    assert len(sealed) >= 2  # the crashed run's segment, and the restarted run's part (more across an hour)
    verify = subprocess.run(
        [str(BIN / "ssmd"), "verify", str(data)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verify.returncode == 0, verify.stdout
    assert "0 problem(s)" in verify.stdout
