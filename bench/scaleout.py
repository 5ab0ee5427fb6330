"""``python -m bench.scaleout``: compression and the JetStream path, measured in one run.

1. zstd levels on simulator output: compression ratio and MB/s (medians), compressing in 1 MiB
   flushes as the writer does.
2. Over loopback, against the same firehose: the recorder writing files only, the recorder
   writing files and publishing to JetStream (every frame acknowledged), the archiver turning the
   stream back into sealed segments, the JetStream writer alone (fast batches and per-message
   PubAcks), and end to end — recorder and archiver at once, from the first frame sent until the
   last is archived — frames/s for each, medians of repeated runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zstandard

from ssmd_connector.archive.line import LineEncoder
from ssmd_connector.message import Message
from ssmd_connector.sim.market import MarketModel
from ssmd_connector.writers.nats import PublishMode

from .__main__ import _cpu, client, firehose
from .clients import RunInvalid, archived_lines, stream_messages

NATS_SERVER = Path(sys.executable).parent / "nats-server"


def sample_lines(n: int) -> bytes:
    """Archive lines of simulator output (realistic, not a repeated pool)."""
    import msgspec  # noqa: PLC0415

    from ssmd_connector.kalshi.wire import render  # noqa: PLC0415

    model = MarketModel(200, 11, now=1_795_000_000.0)
    enc = LineEncoder()
    out: list[bytes] = []
    ts = 1_795_000_000.0
    seq = 0
    while len(out) < n:
        ts += 0.0005
        for channel, _t, kind, msg in model.step(ts):
            seq += 1
            frame = render(kind, msgspec.json.encode(msg), sid=1 if channel == "orderbook_delta" else 2, seq=seq)
            out.append(enc.encode(Message(int(ts * 1e9), "kalshi", frame, False, True)))
    return b"".join(out)


def compression(n: int, levels: list[int]) -> list[dict[str, Any]]:
    data = sample_lines(n)
    chunks = [data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    rows = []
    for level in levels:
        speeds, size = [], 0
        for _ in range(3):
            c = zstandard.ZstdCompressor(level=level)
            t = time.perf_counter()
            size = sum(len(c.compress(chunk)) for chunk in chunks)
            speeds.append(len(data) / (time.perf_counter() - t) / 1e6)
        row = {
            "level": level,
            "ratio": len(data) / size,
            "mb_per_s": statistics.median(speeds),
            "input_mb": len(data) / 1e6,
        }
        print(f"  zstd {level:2d}: ratio {row['ratio']:5.2f}  {row['mb_per_s']:7.1f} MB/s", flush=True)
        rows.append(row)
    return rows


def start_nats(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(NATS_SERVER), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    return proc, f"nats://127.0.0.1:{port}"


async def archive_all(url: str, frames: int, directory: Path, since: float | None = None) -> float:
    """Run the archiver until it has written ``frames`` frames; returns frames/s, counted from the
    first frame archived or, given ``since`` (a ``perf_counter`` time), from then."""
    from ssmd_connector.tools.archiver import archive  # noqa: PLC0415

    cfg = directory / "cfg"
    (cfg / "environments").mkdir(parents=True)
    (cfg / "feeds").mkdir(parents=True)
    (cfg / "feeds" / "kalshi.yaml").write_text(
        "name: kalshi\ntype: websocket\nversions:\n  - {version: x, endpoint: 'ws://127.0.0.1:9/x', active: true}\n"
    )
    (cfg / "environments" / "arch.yaml").write_text(
        f"name: arch\nfeed: kalshi\nstorage:\n  type: local\n  path: '{directory / 'archive'}'\n  rotation: 1h\n"
        f"nats: {{url: '{url}', stream: BENCH}}\n"
    )
    stop = asyncio.Event()
    ckpt = directory / "archive" / ".archiver-kalshi.json"
    task = asyncio.create_task(archive(cfg, "arch", stop, batch=4096))
    start = time.perf_counter()
    first = 0.0
    while True:
        await asyncio.sleep(0.02)
        seq = json.loads(ckpt.read_text())["stream_seq"] if ckpt.exists() else 0
        if seq and not first:
            first = time.perf_counter()
        if seq >= frames:
            break
        if time.perf_counter() - start > 600 or task.done():
            stop.set()
            raise RunInvalid(f"the archiver reached stream sequence {seq} of {frames} and stopped making progress")
    elapsed = time.perf_counter() - (since if since is not None else first or start)
    stop.set()
    await task
    lines = archived_lines(directory / "archive")
    if seq != frames or lines != frames:
        raise RunInvalid(f"archiver: stream sequence {seq}, {lines} lines archived; expected exactly {frames}")
    return frames / elapsed


async def end_to_end(url: str, nats_url: str, frames: int, directory: Path) -> float:
    """Recorder (files + JetStream) and archiver running at once: frames/s from the recorder's
    start until the archiver has sealed-segment-written, fsynced and checkpointed the last frame."""
    import nats  # noqa: PLC0415

    start = time.perf_counter()
    recorder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.clients",
        "recorder-nats",
        "--url",
        url,
        "--frames",
        str(frames),
        "--dir",
        str(directory / "rec"),
        "--cpu",
        _cpu(1),
        "--nats-url",
        nats_url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    nc = await nats.connect(nats_url)
    try:
        while True:  # the recorder creates the stream; the archiver needs it
            try:
                await nc.jetstream().stream_info("BENCH")
                break
            except nats.js.errors.NotFoundError:
                await asyncio.sleep(0.01)
    finally:
        await nc.close()
    fps = await archive_all(nats_url, frames + 4, directory / "arch", since=start)
    _, err = await recorder.communicate()
    if recorder.returncode != 0:
        raise SystemExit(f"recorder failed: {err.decode()}")
    return fps


async def writer_alone(url: str, frames: int, publish: PublishMode = "fast-batch") -> float:
    """The JetStream writer on its own: pre-built messages published, every one acknowledged."""
    from ssmd_connector.writers.nats import NatsWriter  # noqa: PLC0415

    from .firehose import render_stream  # noqa: PLC0415

    wire, ends, _ = render_stream(frames)
    msgs, pos, ts = [], 0, time.time_ns()
    for end in ends:
        hdr = 2 if wire[pos + 1] < 126 else 4
        msgs.append(Message(ts, "kalshi", bytes(wire[pos + hdr : end]), False, True, "orderbook_delta"))
        pos = end
    stream = "ALONE" if publish == "fast-batch" else "ALONEPM"
    w = NatsWriter(url, stream, stream.lower(), create_stream=True, max_pending=8192, publish=publish)
    await w.write(msgs[:1])
    await w.flush()
    start = time.perf_counter()
    for i in range(1, len(msgs), 4096):
        await w.write(msgs[i : i + 4096])
    await w.flush()
    elapsed = time.perf_counter() - start
    await w.close()
    published = await stream_messages(url, stream)
    if published != len(msgs):
        raise RunInvalid(f"JetStream writer alone: {published} messages stored, expected {len(msgs)}")
    return (len(msgs) - 1) / elapsed


def pipeline(frames: int, repeat: int) -> dict[str, Any]:
    runs: dict[str, list[float]] = {
        "jetstream-writer-alone": [],
        "jetstream-writer-alone-per-message-acks": [],
        "recorder-file": [],
        "recorder-file+jetstream": [],
        "archiver": [],
        "end-to-end": [],
    }
    with firehose(frames) as (url, _):
        for i in range(repeat):
            with tempfile.TemporaryDirectory(prefix="ssmd-js-") as d:
                nats, nats_url = start_nats(Path(d) / "js")
                try:
                    file_only = client("recorder", url, frames)["fps"]
                    with_js = client("recorder-nats", url, frames, "--nats-url", nats_url)["fps"]
                    # The stream holds the frames plus the firehose's 4 subscribed replies.
                    arch = asyncio.run(archive_all(nats_url, frames + 4, Path(d)))
                    alone = asyncio.run(writer_alone(nats_url, frames))
                    per_message = asyncio.run(writer_alone(nats_url, frames, "per-message"))
                finally:
                    nats.terminate()
                    nats.wait(10)
                nats, nats_url = start_nats(Path(d) / "js2")
                try:
                    e2e = asyncio.run(end_to_end(url, nats_url, frames, Path(d) / "e2e"))
                finally:
                    nats.terminate()
                    nats.wait(10)
            runs["recorder-file"].append(file_only)
            runs["recorder-file+jetstream"].append(with_js)
            runs["archiver"].append(arch)
            runs["jetstream-writer-alone"].append(alone)
            runs["jetstream-writer-alone-per-message-acks"].append(per_message)
            runs["end-to-end"].append(e2e)
            print(
                f"  run {i + 1}/{repeat}: file {file_only:,.0f}/s  file+JetStream {with_js:,.0f}/s  "
                f"archiver {arch:,.0f}/s  JetStream writer alone {alone:,.0f}/s "
                f"(per-message PubAcks {per_message:,.0f}/s)  end to end {e2e:,.0f}/s",
                flush=True,
            )
    return {k: {"fps": statistics.median(v), "runs": v} for k, v in runs.items()}


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.scaleout", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--frames", type=int, default=300_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--sample", type=int, default=200_000, help="lines of simulator output for compression")
    p.add_argument("--levels", default="1,3,6,9,19")
    p.add_argument("--out", type=Path, default=Path("bench/results/scaleout.json"))
    a = p.parse_args()
    print(f"compression of {a.sample:,} simulator lines:", flush=True)
    result: dict[str, Any] = {"compression": compression(a.sample, [int(x) for x in a.levels.split(",")])}
    print(f"pipeline: {a.frames:,} frames x {a.repeat}", flush=True)
    result["pipeline"] = pipeline(a.frames, a.repeat)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    pipe = result["pipeline"]
    print("medians: " + "  ".join(f"{k} {v['fps']:,.0f}/s" for k, v in pipe.items()))
    file_fps = pipe["recorder-file"]["fps"]
    print(
        f"ratios: file+JetStream / file-only {pipe['recorder-file+jetstream']['fps'] / file_fps:.2f}, "
        f"archiver / file-only {pipe['archiver']['fps'] / file_fps:.2f}, "
        f"end to end / file-only {pipe['end-to-end']['fps'] / file_fps:.2f}, fast batches / per-message PubAcks "
        f"{pipe['jetstream-writer-alone']['fps'] / pipe['jetstream-writer-alone-per-message-acks']['fps']:.2f}"
    )
    print(f"results: {a.out}")


if __name__ == "__main__":
    main()
