"""``ssmd replay``: an archive served as Kalshi's WebSocket v2 (see :mod:`ssmd_connector.replay.server`)."""

from __future__ import annotations

import argparse
import math
import sys

from ..archive.line import ts_ns
from ..replay.server import ReplayConfig, ReplayServer
from ..replay.source import feeds_in
from .read import normalize_ts
from .sim import load_keys, serve_until_signalled


async def run_replay(args: argparse.Namespace) -> int:
    if not args.path.is_dir():
        print(f"ssmd replay: {args.path}: not a directory (expected the storage root or a day)", file=sys.stderr)
        return 2
    try:
        keys = load_keys(args)
    except ValueError as exc:
        print(f"ssmd replay: {exc}", file=sys.stderr)
        return 2
    times = []
    for flag, text in (("--from", args.start), ("--to", args.end)):
        try:
            times.append(normalize_ts(text))
        except ValueError:
            print(
                f"ssmd replay: {flag}: not a time: {text!r} (expected ISO 8601, e.g. 2026-11-24T10:30; UTC unless it "
                "says otherwise)",
                file=sys.stderr,
            )
            return 2
    start, end = times
    feeds = sorted(feeds_in(args.path))
    if args.feed is None and len(feeds) > 1:
        print(
            f"ssmd replay: {args.path} holds several feeds ({', '.join(feeds)}): choose one with --feed",
            file=sys.stderr,
        )
        return 2
    if not feeds or (args.feed is not None and args.feed not in feeds):
        print(f"ssmd replay: {args.path}: no archive of feed {args.feed or '(any)'} here", file=sys.stderr)
        return 2
    if args.speed is not None and not (0 < args.speed < math.inf):
        print(f"ssmd replay: --speed must be a number above 0, got {args.speed:g}", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"ssmd replay: --port must be 0..65535, got {args.port}", file=sys.stderr)
        return 2
    if start and end and end <= start:
        print(f"ssmd replay: --to ({end}) must be after --from ({start})", file=sys.stderr)
        return 2
    config = ReplayConfig(
        root=args.path,
        feed=args.feed or feeds[0],
        start_ns=ts_ns(start) if start else 0,
        end_ns=ts_ns(end) if end else 0,
        speed=None if args.max_speed else args.speed,
        host=args.host,
        port=args.port,
        public_keys=keys,
    )
    server = ReplayServer(config)
    try:
        await server.start()
    except OSError as exc:
        print(f"ssmd replay: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    pace = "as fast as the client reads" if config.speed is None else f"{config.speed:g}x"
    print(
        f"replaying {args.path} on {server.ws_url} ({pace}); each connection starts at its first subscription; "
        f"{len(server.index.markets)} market(s) listed at {server.rest_url}/markets",
        flush=True,
    )
    await serve_until_signalled(server.stop)
    return 0
