"""``ssmd``: the recorder's companion tools.

* ``ssmd demo`` — the main job, offline: the Kalshi simulator in-process and the recorder against
  it with ``examples/config``, for a bounded time, then a summary of what was recorded.
* ``ssmd sim``  — run the Kalshi simulator on its own (for ``ssmd-connector``, demos, drills).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ..sim.faults import FAULT_KINDS, parse_fault


def _fault(text: str) -> object:
    try:
        return parse_fault(text)
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
        "--buffer-limit",
        type=int,
        default=100_000,
        help="frames queued per connection before error 25 (slow reader)",
    )
    return parser


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
