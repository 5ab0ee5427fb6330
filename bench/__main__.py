"""``python -m bench`` (or ``./dev bench``): the recorder's throughput, CPU, memory and latency.

In one run, over real loopback sockets, against a Kalshi firehose in a separate process:

1. sustained frames/s, CPU µs per frame, peak RSS and bytes/s for N frames (default 1,000,000),
   for the full recorder *and* two baselines on the same WebSocket library (picows): a bare
   receive-and-discard loop and a minimal receive-stamp-append loop; repeated, medians reported,
   with the recorder's ratio to each baseline;
2. at paced rates (default 1k, 20k, 100k frames/s): the recorder's CPU % and µs per frame, and the
   latency from a frame's arrival to its line being handed to the OS (p50 / p99 / max);
3. memory: the recorder's RSS after 1 M and after 5 M frames.

Results go to a JSON file and a short table. Shared, noisy 2-core machines: read the medians and
the ratios, not single times. The server and the client are pinned to different cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ssmd_connector import __version__

KINDS = ("bare", "minimal", "recorder", "recorder-zstd")


@contextmanager
def firehose(frames: int, rate: float = 0.0) -> Iterator[tuple[str, int]]:
    cmd = [sys.executable, "-m", "bench.firehose", "--frames", str(frames), "--rate", str(rate), "--cpu", _cpu(0)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        yield f"ws://127.0.0.1:{info['port']}/trade-api/ws/v2", int(info["payload_bytes"])
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _cpu(cpu: int) -> str:
    """Server on CPU 0, clients on CPU 1, when there are two; otherwise no pinning."""
    return str(cpu) if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2 else "-1"


def client(kind: str, url: str, frames: int, *extra: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ssmd-bench-") as d:
        cmd = [
            sys.executable,
            "-m",
            "bench.clients",
            kind,
            "--url",
            url,
            "--frames",
            str(frames),
            "--dir",
            d,
            "--cpu",
            _cpu(1),
            *extra,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    if out.returncode != 0:
        raise SystemExit(f"bench client {kind} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["fps"] = frames / result["seconds"]
    result["cpu_us_per_frame"] = result["cpu_s"] / frames * 1e6
    return result


def median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(r[key]) for r in rows if key in r))


def throughput(frames: int, repeat: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    with firehose(frames) as (url, payload_bytes):
        for i in range(repeat):
            for kind in KINDS:
                r = client(kind, url, frames)
                runs[kind].append(r)
                print(
                    f"  run {i + 1}/{repeat} {kind:9s} {r['fps']:>12,.0f} frames/s  "
                    f"{r['cpu_us_per_frame']:6.2f} µs/frame",
                    flush=True,
                )
    summary: dict[str, Any] = {"frames": frames, "repeat": repeat, "payload_bytes": payload_bytes, "runs": runs}
    for kind in KINDS:
        rows = runs[kind]
        summary[kind] = {
            "fps": median(rows, "fps"),
            "cpu_us_per_frame": median(rows, "cpu_us_per_frame"),
            "peak_rss_mb": median(rows, "peak_rss_mb"),
            "bytes_per_s": statistics.median(r.get("bytes_written", 0) / r["seconds"] for r in rows),
        }
    rec = [r["fps"] for r in runs["recorder"]]
    summary["ratio_to_minimal"] = statistics.median(a / b["fps"] for a, b in zip(rec, runs["minimal"], strict=True))
    summary["ratio_to_bare"] = statistics.median(a / b["fps"] for a, b in zip(rec, runs["bare"], strict=True))
    return summary


def paced(rates: list[float], seconds: float) -> list[dict[str, Any]]:
    out = []
    for rate in rates:
        frames = int(rate * seconds)
        with firehose(frames, rate) as (url, _):
            r = client("recorder", url, frames, "--probe-latency")
        r.update(
            rate=rate,
            cpu_percent=100 * r["steady_cpu_s"] / r["steady_seconds"],
            cpu_us_per_frame=r["steady_cpu_s"] / frames * 1e6,
        )
        lat = r.get("latency_s", {})
        print(
            f"  paced {rate:>9,.0f}/s  CPU {r['cpu_percent']:5.1f} %  {r['cpu_us_per_frame']:6.2f} µs/frame  "
            f"latency p50 {lat.get('p50', 0):.3f}s p99 {lat.get('p99', 0):.3f}s max {lat.get('max', 0):.3f}s",
            flush=True,
        )
        out.append(r)
    return out


def memory(frames: int, at: int) -> dict[str, Any]:
    with firehose(frames) as (url, _):
        r = client("recorder", url, frames, "--rss-at", str(at))
    rss = r["rss_at_mb"]
    r["growth_mb"] = rss[str(frames)] - rss[str(at)]
    print(
        f"  RSS after {at:,} frames {rss[str(at)]:.1f} MB, after {frames:,} {rss[str(frames)]:.1f} MB "
        f"(growth {r['growth_mb']:+.1f} MB); peak {r['peak_rss_mb']:.1f} MB",
        flush=True,
    )
    return r


def table(t: dict[str, Any]) -> str:
    lines = [f"{'':14s} {'frames/s':>12s} {'µs CPU/frame':>13s} {'peak RSS MB':>12s} {'MB/s written':>13s}"]
    for kind in KINDS:
        k = t[kind]
        lines.append(
            f"{kind:10s} {k['fps']:>12,.0f} {k['cpu_us_per_frame']:>13.2f} {k['peak_rss_mb']:>12.1f} "
            f"{k['bytes_per_s'] / 1e6:>13.1f}"
        )
    lines.append(
        f"recorder / minimal = {t['ratio_to_minimal']:.2f}    recorder / bare = {t['ratio_to_bare']:.2f}"
        f"    (medians of {t['repeat']} runs of {t['frames']:,} frames)"
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--frames", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--paced", default="1000,20000,100000", help="comma-separated rates (frames/s); '' to skip")
    p.add_argument("--paced-seconds", type=float, default=10.0)
    p.add_argument("--rss-frames", type=int, default=5_000_000, help="frames for the memory run; 0 to skip")
    p.add_argument("--out", type=Path, default=Path("bench/results/latest.json"))
    a = p.parse_args()
    started = time.time()
    result: dict[str, Any] = {
        "version": __version__,
        "python": platform.python_version(),
        "picows": version("picows"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    print(f"throughput: {a.frames:,} frames x {a.repeat} runs per receiver", flush=True)
    result["throughput"] = throughput(a.frames, a.repeat)
    if a.paced:
        print(f"paced: {a.paced_seconds:g}s per rate", flush=True)
        result["paced"] = paced([float(x) for x in a.paced.split(",")], a.paced_seconds)
    if a.rss_frames:
        print("memory:", flush=True)
        result["memory"] = memory(a.rss_frames, min(1_000_000, a.rss_frames // 5))
    result["seconds"] = round(time.time() - started, 1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print()
    print(table(result["throughput"]))
    print(f"\nresults: {a.out}")


if __name__ == "__main__":
    main()
