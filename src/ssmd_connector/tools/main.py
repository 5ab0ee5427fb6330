"""``ssmd``: the recorder's companion tools.

* ``ssmd demo`` — the main job, offline: the Kalshi simulator in-process and the recorder against
  it with ``examples/config``, for a bounded time, then a summary of what was recorded.
* ``ssmd sim``  — run the Kalshi simulator on its own (for ``ssmd-connector``, demos, drills).
* ``ssmd validate`` — check configuration without connecting.
* ``ssmd verify`` / ``cat`` / ``stats`` / ``book`` — check and read archives.
* ``ssmd export`` — the archive as Parquet research datasets.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from ..sim.faults import FAULT_KINDS, parse_fault


def _fault(text: str) -> object:
    try:
        return parse_fault(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _health_addr(text: str) -> tuple[str, int]:
    from ..settings import parse_addr  # noqa: PLC0415

    try:
        return parse_addr(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssmd", description="ssmd-connector tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="record the built-in Kalshi simulator for a while, then summarise")
    demo.add_argument("--config-dir", type=Path, default=Path("examples/config"), metavar="DIR")
    demo.add_argument("--env", default="demo", metavar="NAME", help="environment to record (default demo)")
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to record (default 20; Ctrl-C stops early)")
    demo.add_argument("--rate", type=float, default=3000.0, help="simulated exchange events per second")
    demo.add_argument("--health-addr", default="127.0.0.1:0", metavar="HOST:PORT")
    demo.add_argument("--no-faults", action="store_true", help="do not inject the demo's faults")

    sim = sub.add_parser("sim", help="run the Kalshi simulator (WebSocket v2 + REST markets)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8765)
    sim.add_argument("--markets", type=int, default=50, help="number of markets (default 50)")
    sim.add_argument("--rate", type=float, default=500.0, help="exchange events per second (default 500)")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--ping-interval", type=float, default=10.0, help="seconds between heartbeat pings")
    auth = sim.add_mutually_exclusive_group(required=True)
    auth.add_argument(
        "--public-key",
        action="append",
        metavar="KEY_ID=PEM_FILE",
        default=[],
        help="accept handshakes signed by this key (repeatable)",
    )
    auth.add_argument("--no-auth", action="store_true", help="accept unauthenticated connections")
    sim.add_argument(
        "--fault",
        action="append",
        type=_fault,
        default=[],
        metavar="KIND@SECONDS[:ARG][#CONN]",
        help=f"schedule a fault; kinds: {', '.join(FAULT_KINDS)}",
    )
    sim.add_argument(
        "--churn",
        type=float,
        default=0.0,
        metavar="PER_SECOND",
        help="new markets per second: the universe lives (events listed, opened, closed, settled); default 0",
    )
    sim.add_argument(
        "--lifetime", type=float, default=60.0, metavar="SECONDS", help="seconds a new market trades (default 60)"
    )
    sim.add_argument(
        "--buffer-limit",
        type=int,
        default=100_000,
        help="frames queued per connection before error 25 (slow reader)",
    )
    rp = sub.add_parser("replay", help="serve an archive as Kalshi's WebSocket v2, for unmodified clients")
    rp.add_argument("path", type=Path, metavar="DIR", help="storage root or a day directory")
    rp.add_argument("--host", default="127.0.0.1")
    rp.add_argument("--port", type=int, default=8766)
    rp.add_argument("--feed", default=None, help="the feed to replay (default: every file under DIR)")
    rp.add_argument("--from", dest="start", metavar="TS", help="replay from this time (UTC, ISO 8601)")
    rp.add_argument("--to", dest="end", metavar="TS", help="up to (excluding) this time, then close")
    pace = rp.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="replay seconds per wall-clock second (default 1)")
    pace.add_argument("--max-speed", action="store_true", help="as fast as the client reads")
    rp_auth = rp.add_mutually_exclusive_group(required=True)
    rp_auth.add_argument(
        "--public-key", action="append", metavar="KEY_ID=PEM_FILE", default=[], help="accept this key (repeatable)"
    )
    rp_auth.add_argument("--no-auth", action="store_true", help="accept unauthenticated connections")
    arch = sub.add_parser("archive", help="JetStream → sealed segments + manifest, exactly once (needs a nats block)")
    arch.add_argument("--config-dir", type=Path, required=True, metavar="DIR")
    arch.add_argument("--env", required=True, metavar="NAME")
    arch.add_argument(
        "--health-addr",
        type=_health_addr,
        default=None,
        metavar="HOST:PORT",
        help="serve /health, /ready and /metrics here (e.g. 0.0.0.0:9101; port 0 = any free port); default: off",
    )

    validate = sub.add_parser("validate", help="check configuration files without connecting")
    validate.add_argument("--config-dir", type=Path, required=True, metavar="DIR")
    validate.add_argument("--env", metavar="NAME", help="one environment (default: all)")

    verify = sub.add_parser("verify", help="check sealed segments against their manifests; exit 1 on problems")
    verify.add_argument("path", type=Path, metavar="PATH", help="storage root or a day directory")

    for name, text in (
        ("cat", "print archived lines (or --data: the frames)"),
        ("stats", "summarise an archive: frames by type/ticker, rates, gaps"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("path", type=Path, metavar="PATH", help="an archive file, a day directory or the root")
        cmd.add_argument("--from", dest="start", metavar="TS", help="from this time (UTC, ISO 8601)")
        cmd.add_argument("--to", dest="end", metavar="TS", help="up to (excluding) this time")
        cmd.add_argument("--type", dest="kind", metavar="TYPE", help="only this message type")
        cmd.add_argument("--ticker", metavar="TICKER", help="only this market")
        if name == "cat":
            cmd.add_argument("--data", action="store_true", help="print the original frames, byte for byte")

    book = sub.add_parser("book", help="rebuild a market's order book from snapshots and deltas")
    cov = sub.add_parser(
        "coverage", help="per market: created, subscribed intervals, gaps, frames, status (from the archive alone)"
    )
    cov.add_argument("path", type=Path, metavar="PATH", help="storage root or a day directory")
    cov.add_argument("--from", dest="start", metavar="TS", help="from this time (UTC, ISO 8601)")
    cov.add_argument("--to", dest="end", metavar="TS", help="up to (excluding) this time")
    cov.add_argument("--ticker", metavar="TICKER", help="only this market")
    cov.add_argument("--series", metavar="SERIES", help="only this series")
    cov.add_argument("--json", action="store_true", help="one JSON object per market")
    book.add_argument("path", type=Path, metavar="PATH")
    book.add_argument("--ticker", required=True)
    book.add_argument("--at", metavar="TS", help="the book as of this time (default: the end)")
    convention = book.add_mutually_exclusive_group()
    convention.add_argument(
        "--yes-price",
        dest="yes_price",
        action="store_true",
        default=None,
        help="NO-side levels were recorded in YES prices (use_yes_price: true); default: from the ledger",
    )
    convention.add_argument(
        "--no-price", dest="yes_price", action="store_false", help="NO-side levels were recorded in NO prices"
    )
    ex = sub.add_parser("export", help="the archive as Parquet research datasets (trades, books, quotes, ...)")
    ex.add_argument("path", type=Path, metavar="DIR", help="storage root, a day directory or an archive file")
    ex.add_argument("--out", type=Path, required=True, metavar="OUT", help="output directory (OUT/<table>/date=…/)")
    ex.add_argument("--from", dest="start", metavar="TS", help="rows from this time (UTC, ISO 8601)")
    ex.add_argument("--to", dest="end", metavar="TS", help="up to (excluding) this time")
    ex.add_argument("--series", metavar="S,…", help="only these series")
    ex.add_argument("--tickers", metavar="T,…", help="only these markets")
    ex.add_argument("--tables", metavar="NAME,…", help="only these tables (default: all)")
    ex.add_argument("--snapshot-every", type=float, default=1.0, metavar="SECONDS", help="book snapshot interval")
    ex.add_argument("--depth", type=int, default=25, metavar="N", help="levels per side in book_snapshots")
    ex.add_argument("--feed", default=None, help="the feed to export (default: every archive file under DIR)")
    ex.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="processes sharing the work, by market (default: one per 128 MB of archive, at most one per core "
        "and 8; 1: this process only)",
    )
    ex_conv = ex.add_mutually_exclusive_group()
    ex_conv.add_argument("--yes-price", dest="yes_price", action="store_true", default=None)
    ex_conv.add_argument("--no-price", dest="yes_price", action="store_false")
    for cmd in (sub.choices["cat"], sub.choices["stats"], book, cov, ex):
        cmd.add_argument(
            "--strict",
            action="store_true",
            help="exit 1 when lines had to be skipped (torn, corrupt); they are always reported on stderr",
        )
    return parser


def _archive_command(args: argparse.Namespace) -> int:
    from .book import book  # noqa: PLC0415
    from .coverage import coverage  # noqa: PLC0415
    from .read import Filter, cat, normalize_ts, stats  # noqa: PLC0415
    from .verify import verify  # noqa: PLC0415

    if not args.path.exists():
        print(f"ssmd {args.command}: {args.path}: no such file or directory", file=sys.stderr)
        return 2
    try:
        if args.command == "verify":
            return verify(args.path)
        if args.command == "book":
            at = normalize_ts(args.at)
        else:
            kind = getattr(args, "kind", None)
            flt = Filter(normalize_ts(args.start), normalize_ts(args.end), kind, args.ticker)
    except ValueError as exc:
        print(f"ssmd {args.command}: {exc}", file=sys.stderr)
        return 2
    if args.command == "book":
        return book(args.path, args.ticker, at, args.strict, args.yes_price)
    if args.command == "coverage":
        return coverage(args.path, flt, args.series, args.json, args.strict)
    return cat(args.path, flt, args.data, args.strict) if args.command == "cat" else stats(args.path, flt, args.strict)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .. import logs  # noqa: PLC0415

    if args.command == "demo":
        from .demo import run_demo  # noqa: PLC0415

        logs.setup("WARNING")
        try:
            return asyncio.run(run_demo(args))
        except KeyboardInterrupt:
            return 0
    if args.command == "archive":
        from nats.errors import Error as NatsError  # noqa: PLC0415

        from ..errors import ConfigError, SsmdError  # noqa: PLC0415
        from ..server import AddressInUse  # noqa: PLC0415
        from .archiver import AlreadyRunning, run_archive  # noqa: PLC0415

        logs.setup("INFO")
        try:
            return asyncio.run(run_archive(args.config_dir, args.env, args.health_addr))
        except ConfigError as exc:
            for problem in exc.problems:
                print(f"ssmd archive: config error: {problem}", file=sys.stderr)
            return 2
        except (AddressInUse, AlreadyRunning) as exc:
            print(f"ssmd archive: {exc}", file=sys.stderr)
            return 2
        except (SsmdError, NatsError) as exc:  # e.g. the disk is full: the checkpoint stays consistent
            print(f"ssmd archive: {exc}", file=sys.stderr)
            return 1
    if args.command == "validate":
        from .validate import validate  # noqa: PLC0415

        logs.setup("ERROR")
        return validate(args.config_dir, args.env)
    if args.command in ("verify", "cat", "stats", "book", "coverage"):
        try:
            return _archive_command(args)
        except BrokenPipeError:  # e.g. `ssmd stats … | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    if args.command == "export":
        from .export import export  # noqa: PLC0415

        try:
            return export(
                args.path,
                args.out,
                start=args.start,
                end=args.end,
                series=args.series,
                tickers=args.tickers,
                tables=args.tables,
                snapshot_every=args.snapshot_every,
                depth=args.depth,
                yes_price=args.yes_price,
                feed=args.feed,
                strict=args.strict,
                jobs=args.jobs,
            )
        except BrokenPipeError:
            return 0
    if args.command == "replay":
        from .replay import run_replay  # noqa: PLC0415

        logs.setup("INFO")
        try:
            return asyncio.run(run_replay(args))
        except KeyboardInterrupt:
            return 0
    if args.command == "sim":
        from .sim import load_keys, run_sim  # noqa: PLC0415

        logs.setup("INFO")
        try:
            keys = load_keys(args)
        except ValueError as exc:
            print(f"ssmd sim: {exc}", file=sys.stderr)
            return 2
        try:
            return asyncio.run(run_sim(args, keys))
        except KeyboardInterrupt:
            return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
