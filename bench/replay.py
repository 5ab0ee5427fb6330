"""``python -m bench.replay``: how fast ``ssmd replay --max-speed`` serves one client, and how
exactly it paces at 1x and 10x.

Why against the recorder: replay is for backtests, and a backtest is only as fast as its slowest
part — the replay must never be it. So in one run, on the same machine: (1) ``ssmd replay
--max-speed`` in its own process (pinned to one core) serving an archive of N frames to a counting
picows client (on the other core), and (2) the recorder receiving the same number of frames from
the benchmark's firehose (``bench.clients recorder``): the ratio of the two is the figure.

The archive is the export benchmark's (:mod:`bench.archive_gen`: the simulator's market model,
order-book snapshots first, then deltas, trades, tickers and lifecycle messages; it crosses
midnight, so two day files). Every run is checked:
the client must receive exactly the archive's messages of its channels, every sequenced
subscription's ``seq`` gap-free from 1, and a normal close (1000) at the end — otherwise the run
fails and prints no figure.

``--pacing``: a 60 s stretch at 1x (and 6 s at 10x) — wall time from the subscription to the close
against the stretch, which must hold to ±1 % (±5 % at 10x).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from ssmd_connector.process import peak_rss_mb

from .__main__ import _cpu, client, firehose, median
from .archive_gen import write_archive

CHANNELS = ["orderbook_delta", "ticker", "trade", "market_lifecycle_v2"]
CHANNEL_OF = {
    "orderbook_snapshot": "orderbook_delta",
    "orderbook_delta": "orderbook_delta",
    "ticker": "ticker",
    "trade": "trade",
    "market_lifecycle_v2": "market_lifecycle_v2",
    "event_lifecycle": "market_lifecycle_v2",
}


class RunInvalid(SystemExit):
    def __init__(self, why: str) -> None:
        super().__init__(f"invalid benchmark run: {why}")


class _Client(WSListener):
    """Counts data frames per sid, checks each sequenced sid's seq, notes the close."""

    def __init__(self, subscribe: bytes) -> None:
        self.subscribe = subscribe
        self.frames = 0
        self.by_type: dict[str, int] = {}
        self.seq: dict[int, int] = {}
        self.problems: list[str] = []
        self.first = self.last = self.subscribed_at = 0.0
        self.close_code: int | None = None
        self.done = asyncio.get_running_loop().create_future()
        self._type = msgspec.json.Decoder(_Head)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.subscribed_at = time.perf_counter()
        transport.send(WSMsgType.TEXT, self.subscribe)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            self.close_code = frame.get_close_code().value
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        now = time.perf_counter()
        head = self._type.decode(frame.get_payload_as_memoryview())
        if head.type in ("subscribed", "ok"):
            return
        if head.type == "error":
            self.problems.append(f"error frame: {frame.get_payload_as_ascii_text()[:200]}")
            return
        if not self.frames:
            self.first = now
        self.last = now
        self.frames += 1
        self.by_type[head.type] = self.by_type.get(head.type, 0) + 1
        if head.seq is not None:
            want = self.seq.get(head.sid, 0) + 1
            if head.seq != want and len(self.problems) < 5:
                self.problems.append(f"sid {head.sid}: seq {head.seq}, expected {want}")
            self.seq[head.sid] = head.seq

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _Head(msgspec.Struct):
    type: str
    sid: int = 0
    seq: int | None = None


def _server(root: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "ssmd_connector.tools.main", "replay", str(root), "--port", "0", "--no-auth", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if " on ws://" not in line:
        proc.kill()
        raise SystemExit(f"ssmd replay did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
    cpu = _cpu(0)
    if cpu != "-1":
        os.sched_setaffinity(proc.pid, {int(cpu)})
    return proc, line.split(" on ", 1)[1].split()[0]


async def _replay_once(url: str, tickers: list[str]) -> _Client:
    sub = {"id": 1, "cmd": "subscribe", "params": {"channels": CHANNELS, "market_tickers": tickers}}
    client = _Client(json.dumps(sub).encode())
    await ws_connect(lambda: client, url, max_frame_size=1 << 24)
    await asyncio.wait_for(client.done, 3600)
    return client


def replay_run(root: Path, tickers: list[str], counts: dict[str, int], *args: str) -> dict[str, Any]:
    """One replay to one client, checked; its figures."""
    proc, url = _server(root, *args)
    try:
        cpu = _cpu(1)
        if cpu != "-1":
            os.sched_setaffinity(0, {int(cpu)})
        cpu_before = _cpu_seconds(proc.pid)
        c = asyncio.run(_replay_once(url, tickers))
        cpu_s = _cpu_seconds(proc.pid) - cpu_before
        peak_rss_mb = _peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    expected = sum(counts.values())
    got = {CHANNEL_OF[k]: 0 for k in c.by_type}
    for kind, n in c.by_type.items():
        got[CHANNEL_OF[kind]] += n
    if c.problems:
        raise RunInvalid("; ".join(c.problems))
    if c.close_code != 1000:
        raise RunInvalid(f"closed with {c.close_code}, not a normal close (1000)")
    if got != counts:
        raise RunInvalid(f"received {got} frames per channel, the archive holds {counts}")
    seconds = c.last - c.first
    out = {
        "frames": expected,
        "seconds": seconds,
        "fps": expected / seconds,
        "wall": c.last - c.subscribed_at,
        "peak_rss_mb": peak_rss_mb,
        "server_cpu_s": cpu_s,
    }
    if cpu_s >= 0.1:  # (counted in clock ticks, 10 ms: a shorter run says nothing per core)
        out["fps_per_core"] = expected / cpu_s
    return out


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the replay server has used so far (Linux: ``/proc/PID/stat``):
    what it spent serving, measured from the client's connection to its close, says how many
    frames a second one core sustains, whatever the client's own speed."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    """The replay server's peak resident memory so far."""
    mb = peak_rss_mb(pid)
    if mb is None:
        raise SystemExit("cannot read the replay server's peak memory (no /proc)")
    return mb


def memory(frames: int, limit_mb: float) -> dict[str, Any]:
    """Peak RSS of the replay server over a small archive and over one of ``frames``: the
    difference is what the archive's size costs — it must stay under ``limit_mb`` (streaming)."""
    out: dict[str, Any] = {}
    for name, n in (("small", max(1000, frames // 50)), ("large", frames)):
        with tempfile.TemporaryDirectory(prefix="ssmd-bench-replay-") as d:
            root = Path(d)
            g = write_archive(root, n, step_us=10)
            tickers, counts = g.tickers, g.per_channel
            size = sum(p.stat().st_size for p in root.rglob("*.jsonl")) / 1e6
            r = replay_run(root, tickers, counts, "--max-speed")
        out[name] = {"frames": n, "archive_mb": size, "peak_rss_mb": r["peak_rss_mb"]}
        print(f"  {n:>9,} frames, archive {size:7.1f} MB: replay server peak RSS {r['peak_rss_mb']:.1f} MB", flush=True)
    growth = out["large"]["peak_rss_mb"] - out["small"]["peak_rss_mb"]
    out["growth_mb"] = growth
    out["archive_over_growth"] = out["large"]["archive_mb"] / max(growth, 1.0)
    print(
        f"  growth {growth:+.1f} MB for {out['large']['archive_mb'] - out['small']['archive_mb']:.0f} MB more archive "
        f"(limit {limit_mb:g} MB)",
        flush=True,
    )
    if growth > limit_mb:
        raise SystemExit(f"replay memory grew {growth:.1f} MB with the archive's size (limit {limit_mb:g} MB)")
    return out


def throughput(frames: int, repeat: int, markets: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ssmd-bench-replay-") as d:
        root = Path(d)
        t0 = time.perf_counter()
        g = write_archive(root, frames, markets=markets, step_us=10)
        tickers, counts = g.tickers, g.per_channel
        size = sum(p.stat().st_size for p in root.rglob("*.jsonl"))
        print(
            f"  archive: {frames:,} frames, {size / 1e6:.0f} MB, {markets} markets, written in "
            f"{time.perf_counter() - t0:.1f}s",
            flush=True,
        )
        replay: list[dict[str, Any]] = []
        recorder: list[dict[str, Any]] = []
        with firehose(frames) as (url, _):
            for i in range(repeat):
                r = replay_run(root, tickers, counts, "--max-speed")
                replay.append(r)
                rec = client("recorder", url, frames)
                recorder.append(rec)
                print(
                    f"  run {i + 1}/{repeat}  replay --max-speed {r['fps']:>10,.0f} frames/s "
                    f"({r.get('fps_per_core', 0):>9,.0f} per server CPU-second)   "
                    f"recorder receiving {rec['fps']:>10,.0f} frames/s",
                    flush=True,
                )
    ratios = [a["fps"] / b["fps"] for a, b in zip(replay, recorder, strict=True)]
    return {
        "frames": frames,
        "repeat": repeat,
        "replay_fps": median(replay, "fps"),
        "replay_fps_range": [min(r["fps"] for r in replay), max(r["fps"] for r in replay)],
        "replay_fps_per_core": median(replay, "fps_per_core") if any("fps_per_core" in r for r in replay) else 0.0,
        "replay_fps_per_core_range": [
            min(r.get("fps_per_core", 0) for r in replay),
            max(r.get("fps_per_core", 0) for r in replay),
        ],
        "recorder_fps": median(recorder, "fps"),
        "recorder_fps_range": [min(r["fps"] for r in recorder), max(r["fps"] for r in recorder)],
        "ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
    }


def pykalshi_rate(frames: int) -> dict[str, Any]:
    """How fast a typed third-party client (pykalshi's AsyncFeed, pydantic models) takes a
    ``--max-speed`` replay: the replay in its own process, the client here; every message of its
    subscriptions must arrive, typed, or the run fails."""
    import pykalshi  # noqa: PLC0415  (a dev dependency)
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415
    from pydantic import BaseModel  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="ssmd-bench-replay-") as d:
        root = Path(d) / "archive"
        g = write_archive(root, frames, step_us=10)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_file = Path(d) / "key.pem"
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        want = sum(g.per_channel.get(ch, 0) for ch in ("orderbook_delta", "trade", "ticker"))
        proc, url = _server(root, "--max-speed")
        try:

            async def consume() -> tuple[int, int, float]:
                client = pykalshi.AsyncKalshiClient(
                    api_key_id="bench",
                    private_key_path=str(key_file),
                    api_base=url.replace("ws://", "http://").replace("/ws/v2", "/v2"),
                )
                feed = client.feed()
                feed._ws_url = url  # (pykalshi has no setting for its WebSocket address)
                for channel in ("orderbook_delta", "trade", "ticker"):
                    feed.subscribe(channel, market_tickers=g.tickers)
                n = typed = 0
                began = 0.0
                async for msg in feed:
                    began = began or time.perf_counter()
                    n += 1
                    typed += isinstance(msg, BaseModel)
                    if n == want:
                        break
                seconds = time.perf_counter() - began
                await feed.disconnect()
                await client.aclose()
                return n, typed, seconds

            n, typed, seconds = asyncio.run(asyncio.wait_for(consume(), 600))
        finally:
            proc.terminate()
            proc.wait(10)
    if n != want or typed != n:
        raise RunInvalid(f"pykalshi got {n} messages ({typed} typed), the archive holds {want}")
    print(f"  pykalshi AsyncFeed took {n:,} typed messages at {n / seconds:,.0f}/s", flush=True)
    return {"messages": n, "seconds": seconds, "per_s": n / seconds}


def pacing(seconds: float, rate: int) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory(prefix="ssmd-bench-replay-") as d:
        root = Path(d)
        g = write_archive(root, int(seconds * rate), markets=20, step_us=1_000_000 // rate)
        tickers, counts = g.tickers, g.per_channel
        span = (g.last_ns - g.first_ns) / 1e9
        for speed, tolerance in ((1.0, 0.01), (10.0, 0.05)):
            r = replay_run(root, tickers, counts, "--speed", str(speed))
            want = span / speed
            err = r["wall"] / want - 1
            ok = abs(err) <= tolerance
            print(
                f"  {speed:g}x: {span:.1f}s of archive took {r['wall']:.3f}s (want {want:.3f}s, "
                f"{err:+.2%}, limit ±{tolerance:.0%}) {'ok' if ok else 'OUT OF BOUNDS'}",
                flush=True,
            )
            out.append({"speed": speed, "archive_seconds": span, "wall_seconds": r["wall"], "error": err, "ok": ok})
    if not all(r["ok"] for r in out):
        raise SystemExit("pacing out of bounds")
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--frames", type=int, default=500_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--markets", type=int, default=50)
    p.add_argument("--throughput", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--memory", action="store_true", help="also check that memory does not grow with the archive")
    p.add_argument("--memory-frames", type=int, default=1_000_000)
    p.add_argument("--memory-limit-mb", type=float, default=25.0)
    p.add_argument("--pykalshi", action="store_true", help="also measure pykalshi's typed feed on a replay")
    p.add_argument("--pacing", action="store_true", help="also check pacing over a 60 s stretch (1x, 10x)")
    p.add_argument("--pacing-seconds", type=float, default=60.0)
    p.add_argument("--out", type=Path, default=Path("bench/results/replay.json"))
    a = p.parse_args()
    result: dict[str, Any] = {}
    if a.throughput:
        print(f"throughput: {a.frames:,} frames x {a.repeat} runs", flush=True)
        result["throughput"] = t = throughput(a.frames, a.repeat, a.markets)
    if a.memory:
        print(f"memory: {a.memory_frames:,} frames", flush=True)
        result["memory"] = memory(a.memory_frames, a.memory_limit_mb)
    if a.pykalshi:
        print("pykalshi: 100,000 frames", flush=True)
        result["pykalshi"] = pykalshi_rate(100_000)
    if a.pacing:
        print(f"pacing: {a.pacing_seconds:g}s of archive at 100 messages/s", flush=True)
        result["pacing"] = pacing(a.pacing_seconds, 100)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    if a.throughput:
        print(
            f"\nreplay --max-speed to one client: {t['replay_fps']:,.0f} frames/s "
            f"({t['replay_fps_range'][0]:,.0f}-{t['replay_fps_range'][1]:,.0f}), "
            f"{t['replay_fps_per_core']:,.0f} per CPU-second of the server "
            f"({t['replay_fps_per_core_range'][0]:,.0f}-{t['replay_fps_per_core_range'][1]:,.0f}); "
            "the recorder receives "
            f"{t['recorder_fps']:,.0f} frames/s ({t['recorder_fps_range'][0]:,.0f}-{t['recorder_fps_range'][1]:,.0f}); "
            f"replay / recorder = {t['ratio']:.2f} ({t['ratio_range'][0]:.2f}-{t['ratio_range'][1]:.2f}), "
            f"medians of {t['repeat']} runs of {t['frames']:,} frames"
        )
    print(f"results: {a.out}")


if __name__ == "__main__":
    main()
