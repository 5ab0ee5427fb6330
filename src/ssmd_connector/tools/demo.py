"""``ssmd demo``: the main job, offline.

Starts the Kalshi simulator in-process where ``examples/config`` expects it — a living one: new
markets are listed, open, close and settle while it runs — records it with the real recorder
(signed handshake, discovery, the market universe followed, shards, sequence tracking, recovery)
for a bounded time while injecting a few faults, shows live progress, and ends with a summary and
the coverage report's verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from ..archive import Reader, archive_files, read_lines
from ..archive.reading import silent
from ..assembly.recorder import Recorder
from ..config import load
from ..errors import ConfigError, KeySourceError
from ..kalshi.auth import KEY_ID_VAR, PRIVATE_KEY_VAR, generate_key_pair, load_private_key
from ..kalshi.wire import UNPARSED
from ..keys import resolve_all
from ..secrets import Secret
from ..settings import parse_addr
from ..sim import Fault, SimConfig, SimServer
from .coverage import build
from .read import Filter

CHURN = 2.0
"""New markets per second in the demo's simulator (each trades 8 s, then closes and settles)."""

DEMO_FAULTS = [
    Fault("gap", 5.0),
    Fault("reset", 9.0, connection=0),
    Fault("error25", 13.0),
    Fault("nonjson", 16.0),
]


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _demo_key() -> tuple[str, Secret, bool]:
    """The key the recorder will sign with: the user's, or a fresh one for this run."""
    if os.environ.get(KEY_ID_VAR) and os.environ.get(PRIVATE_KEY_VAR):
        return os.environ[KEY_ID_VAR], Secret(os.environ[PRIVATE_KEY_VAR]), False
    _, pem = generate_key_pair()
    os.environ[KEY_ID_VAR] = "demo-key"
    os.environ[PRIVATE_KEY_VAR] = pem
    return "demo-key", Secret(pem), True


async def run_demo(args: argparse.Namespace) -> int:
    key_id, pem, generated = _demo_key()
    try:
        config = load(args.config_dir, args.env)
        secrets = resolve_all([(k.name, k.source) for k in config.environment.keys])
        public = load_private_key(pem).public_key()
        recorder = Recorder.build(config, secrets)
    except (ConfigError, KeySourceError) as exc:
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        for p in problems:
            print(f"ssmd demo: config error: {p}", file=sys.stderr)
        return 2
    endpoint = urlparse(config.feed.active_version().endpoint)
    sim = SimServer(
        SimConfig(
            host=endpoint.hostname or "127.0.0.1",
            port=endpoint.port or 80,
            markets=60,
            rate=args.rate,
            public_keys={key_id: public},
            faults=[] if args.no_faults else DEMO_FAULTS,
            churn=CHURN,
            lifetime=8.0,
        )
    )
    try:
        await sim.start()
    except OSError as exc:
        print(
            f"ssmd demo: cannot start the simulator on {endpoint.netloc}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    host, port = parse_addr(args.health_addr)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, recorder.runner.stop)
    task = asyncio.create_task(recorder.run(host, port, handle_signals=False))
    stats = recorder.runner.stats
    print(
        f"Kalshi simulator on {sim.ws_url} ({len(sim.model.markets)} markets, {CHURN:g} new per second, "
        f"{args.rate:g} events/s"
        f"{', faults: ' + ', '.join(f'{f.kind}@{f.at:g}s' for f in DEMO_FAULTS) if not args.no_faults else ''})"
    )
    print(
        f"recording environment {config.environment.name!r} (feed {config.feed.name!r}, signed with key id "
        f"{key_id!r}{' generated for this run' if generated else ''}) for {args.seconds:g}s; Ctrl-C stops early"
    )
    start = time.monotonic()
    last_n, last_t = 0, start
    try:
        while not task.done() and time.monotonic() - start < args.seconds:
            await asyncio.wait([task], timeout=1.0)
            now = time.monotonic()
            rate = (stats.messages - last_n) / max(now - last_t, 1e-9)
            last_n, last_t = stats.messages, now
            shards = stats.shards.values()
            conns = [up for label, up in stats.connections.items() if not label.endswith("-discovery")]
            up = sum(conns)
            gaps = sum(s.gaps for s in shards)
            done = sum(s.recoveries["completed"] for s in shards)
            events = recorder.ledger.events
            print(
                f"  {now - start:5.1f}s {rate:9,.0f} frames/s  total {stats.messages:9,d}  "
                f"shards {up}/{len(conns)}  "
                f"markets +{events.get('market_added', 0)} -{events.get('market_removed', 0)}  "
                f"gaps {gaps}  recovered {done}  written {_human(stats.bytes_written)}",
                flush=True,
            )
    finally:
        recorder.runner.stop()
        await task
        await sim.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    _summary(recorder, config.environment.storage.path, config.feed.name)
    return 0


def _summary(recorder: Recorder, root: Path, feed: str) -> None:
    stats = recorder.runner.stats
    by_type: dict[str, int] = {}
    for shard in stats.shards.values():
        for kind, n in shard.frames_by_type.items():
            by_type[kind] = by_type.get(kind, 0) + n
    events = recorder.ledger.events
    print(f"\nrecorded {stats.messages:,} frames on {len(stats.shards)} connection(s); {stats.reconnects} reconnect(s)")
    unparsed = by_type.pop(UNPARSED, 0)
    print("frames by type: " + ", ".join(f"{k} {v:,}" for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])))
    if unparsed:
        print(f"frames that were not JSON (stored as strings): {unparsed}")
    print(
        f"sequence gaps detected: {events.get('gap', 0)}; snapshots requested: "
        f"{events.get('recovery_requested', 0)}; recoveries completed: {events.get('recovery_completed', 0)}; "
        f"resubscribed: {events.get('resubscribe_requested', 0)}; reconnects: {stats.reconnects}"
    )
    added, removed = events.get("market_added", 0), events.get("market_removed", 0)
    print(
        f"market universe: {added} market(s) added (at start-up and as Kalshi listed them), {removed} released "
        f"after settling; {events.get('shard_retired', 0)} connection(s) closed as they emptied"
    )
    coverage = build(root, Filter(), Reader(on_problem=silent))
    matched = [m for m in coverage if m.matched]
    missed = [m.ticker for m in matched if not m.recorded]
    print(
        f"coverage: {len(matched)} market(s) matched the discovery filter, {len(matched) - len(missed)} recorded, "
        f"{len(missed)} never recorded{' (' + ', '.join(missed[:5]) + ')' if missed else ''}"
    )
    print(f"archive under {root}:")
    files = archive_files(root, feed) + sorted(root.glob(f"*/{feed}.events.jsonl"))
    for path in files:
        lines = sum(1 for _ in read_lines(path))
        print(f"  {path.relative_to(root)}  {lines:,} lines  {_human(path.stat().st_size)}")
    print("read it with, e.g.:")
    print(f"  ssmd cat {root} --type trade --data | head")
    print(f"  ssmd stats {root}")
    print(f"  ssmd coverage {root} | tail")
    print(f'  jq -c \'select(.event=="gap" or .event=="recovery_completed")\' {root}/*/{feed}.events.jsonl')
