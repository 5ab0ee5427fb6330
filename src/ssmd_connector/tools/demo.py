"""``ssmd demo``: the main job, offline — a local feed, the recorder, live progress, a summary."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from ..app import Recorder
from ..cli import parse_addr
from ..config import load
from ..errors import ConfigError
from ..keys import resolve_all
from .localfeed import start_local_feed


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


async def run_demo(config_dir: Path, env_name: str, seconds: float, health_addr: str) -> int:
    try:
        config = load(config_dir, env_name)
        secrets = resolve_all([(k.name, k.source) for k in config.environment.keys])
    except ConfigError as exc:
        for p in exc.problems:
            print(f"ssmd demo: config error: {p}", file=sys.stderr)
        return 2
    endpoint = urlparse(config.feed.active_version().endpoint)
    feed_server = await start_local_feed(endpoint.hostname or "127.0.0.1", endpoint.port or 80)
    recorder = Recorder.build(config, secrets)
    host, port = parse_addr(health_addr)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, recorder.runner.stop)
    task = asyncio.create_task(recorder.run(host, port, handle_signals=False))
    stats = recorder.runner.stats
    print(
        f"recording feed {config.feed.name!r} from {config.feed.active_version().endpoint} "
        f"for {seconds:.0f}s (Ctrl-C stops early) ..."
    )
    start = time.monotonic()
    last_n, last_t = 0, start
    try:
        while not task.done() and time.monotonic() - start < seconds:
            await asyncio.wait([task], timeout=1.0)
            now = time.monotonic()
            rate = (stats.messages - last_n) / max(now - last_t, 1e-9)
            last_n, last_t = stats.messages, now
            print(
                f"  {now - start:5.1f}s  {rate:8.0f} frames/s  total {stats.messages:8d}  "
                f"connected {'yes' if stats.connected else 'no '}  written {_human(stats.bytes_written)}"
            )
    finally:
        recorder.runner.stop()
        await task
        await feed_server.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    root = config.environment.storage.path
    print(f"\nrecorded {stats.messages} frames; {stats.reconnects} reconnects; archive under {root}:")
    for path in sorted(root.glob("*/*.jsonl")):
        with path.open("rb") as f:
            lines = sum(1 for _ in f)
        print(f"  {path.relative_to(root)}  {lines} lines  {_human(path.stat().st_size)}")
    print(f"read it with:  head -n 3 {root}/*/{config.feed.name}.jsonl")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 0
