"""The three receivers the benchmark compares, all on picows, each run in its own process.

* ``bare``     — receive and discard: the ceiling for this WebSocket library on this machine.
* ``minimal``  — receive, stamp, wrap verbatim, buffered append to a file: the least a recorder
                 can do (no sequence tracking, no metrics, no queue, no crash safety).
* ``recorder`` — the real thing: ``ssmd_connector.assembly.recorder.Recorder`` with the Kalshi connector
                 (sequence tracking, ledger, metrics), the bounded queue and the JSONL writer.

Each prints one JSON object: frames, seconds from the first frame to the last line handed to the
OS, CPU seconds (user + system) of the process, peak RSS, bytes written, and for ``recorder``
optionally the arrival → handed-to-the-OS latency distribution.

A run that is not clean prints no figure: it exits non-zero saying why (:class:`RunInvalid`) —
a disconnect or reconnect, a sequence gap, an error of any kind, a frame count other than the
stream's (received, written to the archive, or published to JetStream), or no progress for
:data:`STALL` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from ssmd_connector.assembly.recorder import Recorder
from ssmd_connector.clock import TimestampFormatter
from ssmd_connector.config import load
from ssmd_connector.message import Message
from ssmd_connector.writers.jsonl import JsonlWriter

SUBSCRIBE = json.dumps(
    {
        "id": 1,
        "cmd": "subscribe",
        "params": {
            "channels": ["orderbook_delta", "ticker", "trade", "market_lifecycle_v2"],
            "market_tickers": ["ALL"],
        },
    }
).encode()
CONTROL_FRAMES = 4  # the firehose's ``subscribed`` replies
STALL = 60.0
"""Seconds without a new frame after which a run is declared broken."""


class RunInvalid(SystemExit):
    """The run saw something that makes its figures meaningless: exit non-zero, print no figure."""

    def __init__(self, why: str) -> None:
        super().__init__(f"invalid benchmark run: {why}")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


class _Counting(WSListener):
    """Shared by bare and minimal: counts frames, records the first/last arrival."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first = 0.0
        self.done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send(WSMsgType.TEXT, SUBSCRIBE)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.done.done():
            self.done.set_exception(RunInvalid(f"disconnected after {self.count} of {self.expected} frames"))

    def arrived(self) -> None:
        self.count += 1
        if self.count == 1:
            self.first = time.perf_counter()
        if self.count == self.expected:
            self.finish()

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(time.perf_counter())


class Bare(_Counting):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            frame.get_payload_as_bytes()
            self.arrived()


class Minimal(_Counting):
    def __init__(self, expected: int, path: Path) -> None:
        super().__init__(expected)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.buf = bytearray()
        self.fmt = TimestampFormatter().format
        self.written = 0

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            ts = time.time_ns()
            self.buf += b'{"ts":"' + self.fmt(ts) + b'","feed":"kalshi","data":' + frame.get_payload_as_bytes() + b"}\n"
            if len(self.buf) >= 1 << 20:
                self.flush()
            self.arrived()

    def flush(self) -> None:
        self.written += os.write(self.fd, self.buf)
        self.buf.clear()

    def finish(self) -> None:
        self.flush()
        super().finish()


async def run_listener(kind: str, url: str, frames: int, directory: Path) -> dict[str, Any]:
    expected = frames + CONTROL_FRAMES
    cpu0 = cpu_seconds()
    listener: _Counting = Bare(expected) if kind == "bare" else Minimal(expected, directory / "minimal.jsonl")
    transport, _ = await ws_connect(lambda: listener, url, enable_auto_ping=False)
    seen = -1
    while not listener.done.done():  # progress, or a broken run
        await asyncio.wait([listener.done], timeout=STALL)
        if not listener.done.done() and listener.count == seen:
            raise RunInvalid(f"no frame for {STALL:g}s after {listener.count} of {expected}")
        seen = listener.count
    end = listener.done.result()
    cpu = cpu_seconds() - cpu0
    await asyncio.sleep(0.2)  # anything more than the stream is wrong too
    if listener.count != expected or transport.is_disconnected:
        raise RunInvalid(
            f"{listener.count} frames received, expected {expected}; disconnected {transport.is_disconnected}"
        )
    transport.disconnect()
    result: dict[str, Any] = {"seconds": end - listener.first, "cpu_s": cpu}
    if isinstance(listener, Minimal):
        result["bytes_written"] = listener.written
    return result


class ProbedWriter(JsonlWriter):
    """The product's writer, timing each message from its receive stamp to the OS hand-off."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.pending: list[int] = []
        self.latencies: array[float] = array("d")

    async def write(self, batch: Sequence[Message]) -> None:
        self.pending.extend(m.received_ns for m in batch)
        await super().write(batch)

    async def flush(self) -> None:
        n = len(self.pending)
        await super().flush()
        now = time.time_ns()
        self.latencies.extend((now - t) / 1e9 for t in self.pending[:n])
        del self.pending[:n]


def _config_dir(directory: Path, url: str, compression: str = "none", nats_url: str = "") -> Path:
    cfg = directory / "config"
    (cfg / "environments").mkdir(parents=True, exist_ok=True)
    (cfg / "feeds").mkdir(parents=True, exist_ok=True)
    (cfg / "feeds" / "kalshi.yaml").write_text(
        f"name: kalshi\ntype: websocket\nversions:\n  - {{version: bench, endpoint: '{url}', active: true}}\n"
    )
    (cfg / "environments" / "bench.yaml").write_text(
        f"name: bench\nfeed: kalshi\nstorage:\n  type: local\n  path: '{directory / 'data'}'\n"
        f"  compression: {compression}\n"
        + (f"nats: {{url: '{nats_url}', stream: BENCH, create_stream: true, max_pending: 8192}}\n" if nats_url else "")
        + "subscription:\n  channels: [orderbook_delta, ticker, trade, market_lifecycle_v2]\n  markets: [ALL]\n"
        "  stale_after: 60\n"
    )
    return cfg


async def run_recorder(
    url: str, frames: int, directory: Path, probe: bool, rss_at: int, compression: str = "none", nats_url: str = ""
) -> dict[str, Any]:
    recorder = Recorder.build(load(_config_dir(directory, url, compression, nats_url), "bench"), {})
    runner = recorder.runner
    writer = ProbedWriter(directory / "data") if probe else None
    if writer is not None:
        runner.writers[0] = writer
    expected = frames + CONTROL_FRAMES
    cpu0 = cpu_seconds()
    task = asyncio.create_task(recorder.run("127.0.0.1", 0, handle_signals=False))
    stats = runner.stats
    first = cpu_first = 0.0
    rss_mid = 0.0
    progress = (time.perf_counter(), 0)
    while stats.messages < expected:
        await asyncio.sleep(0.002)
        if not first and stats.messages:
            first, cpu_first = time.perf_counter(), cpu_seconds()
        if rss_at and not rss_mid and stats.messages >= rss_at:
            rss_mid = rss_mb()
        if stats.messages != progress[1]:
            progress = (time.perf_counter(), stats.messages)
        gaps = sum(shard.gaps for shard in stats.shards.values())
        if time.perf_counter() - progress[0] > STALL or stats.reconnects or gaps or task.done():
            runner.stop()
            await asyncio.wait([task], timeout=30)
            raise RunInvalid(
                f"{stats.messages} of {expected} frames, {stats.reconnects} reconnect(s), {gaps} gap(s), "
                f"errors {_nonzero(stats.errors)}, recorder {'stopped' if task.done() else 'running'}"
            )
    last, cpu_last = time.perf_counter(), cpu_seconds()
    await asyncio.sleep(0.2)  # anything more than the stream is wrong too
    runner.stop()
    await task
    end = time.perf_counter()
    cpu = cpu_seconds() - cpu0
    await check_recorder_run(recorder, expected, directory / "data", nats_url)
    result: dict[str, Any] = {
        "seconds": end - first,
        "cpu_s": cpu,
        "bytes_written": stats.bytes_written,
        # Steady state only (first frame to last frame received): what paced runs report.
        "steady_seconds": last - first,
        "steady_cpu_s": cpu_last - cpu_first,
    }
    shards = list(stats.shards.values())
    result["gaps"] = sum(s.gaps for s in shards)
    if rss_at:
        result["rss_at_mb"] = {str(rss_at): round(rss_mid, 1), str(frames): round(rss_mb(), 1)}
    if writer is not None and writer.latencies:
        lat = sorted(writer.latencies)
        result["latency_s"] = {"p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)], "max": lat[-1]}
    return result


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def archived_lines(root: Path) -> int:
    from ssmd_connector.archive import Reader, archive_files  # noqa: PLC0415

    reader = Reader()
    n = sum(1 for f in archive_files(root) for _ in reader.lines(f)) if root.exists() else 0
    if reader.problems:
        raise RunInvalid(f"{reader.problems} unreadable line(s) in the archive")
    return n


async def check_recorder_run(recorder: Recorder, expected: int, data: Path, nats_url: str) -> None:
    """Raise :class:`RunInvalid` unless the recorder received, archived (and published) exactly
    the stream, on one connection, with no gap and no error of any kind."""
    stats = recorder.runner.stats
    gaps = sum(s.gaps for s in stats.shards.values())
    problems = []
    if stats.messages != expected:
        problems.append(f"{stats.messages} frames received, expected {expected}")
    if stats.reconnects or gaps or any(stats.errors.values()):
        problems.append(f"{stats.reconnects} reconnect(s), {gaps} gap(s), errors {_nonzero(stats.errors)}")
    lines = archived_lines(data)
    if lines != expected:
        problems.append(f"{lines} lines archived, expected {expected}")
    if nats_url:
        published = await stream_messages(nats_url, "BENCH")
        if published != expected:
            problems.append(f"{published} messages in the JetStream stream, expected {expected}")
    if problems:
        raise RunInvalid("; ".join(problems))


async def stream_messages(nats_url: str, stream: str) -> int:
    import nats  # noqa: PLC0415

    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(stream)
    finally:
        await nc.close()
    return int(info.state.messages)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["bare", "minimal", "recorder", "recorder-zstd", "recorder-nats"])
    p.add_argument("--nats-url", default="")
    p.add_argument("--url", required=True)
    p.add_argument("--frames", type=int, required=True)
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--probe-latency", action="store_true")
    p.add_argument("--rss-at", type=int, default=0)
    p.add_argument("--cpu", type=int, default=-1, help="pin this process to one CPU")
    p.add_argument("--stall", type=float, default=STALL, help="seconds without a frame that make a run invalid")
    a = p.parse_args()
    globals()["STALL"] = a.stall
    if a.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {a.cpu})
    a.dir.mkdir(parents=True, exist_ok=True)
    if a.kind.startswith("recorder"):
        compression = "zstd" if a.kind == "recorder-zstd" else "none"
        result = asyncio.run(run_recorder(a.url, a.frames, a.dir, a.probe_latency, a.rss_at, compression, a.nats_url))
    else:
        result = asyncio.run(run_listener(a.kind, a.url, a.frames, a.dir))
    result.update(kind=a.kind, frames=a.frames, peak_rss_mb=round(peak_rss_mb(), 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
