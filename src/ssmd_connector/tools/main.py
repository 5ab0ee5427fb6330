"""``ssmd``: the recorder's companion tools.

``ssmd demo`` runs the main job offline: a local feed and the recorder against it, with the
configuration in ``examples/config``, for a bounded time, then a summary of what was recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .demo import run_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ssmd", description="ssmd-connector tools")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="record a local feed for a while and summarise the archive")
    demo.add_argument("--config-dir", type=Path, default=Path("examples/config"), metavar="DIR")
    demo.add_argument("--env", default="demo", metavar="NAME")
    demo.add_argument(
        "--seconds", type=float, default=20.0, help="how long to record (default 20; Ctrl-C stops early)"
    )
    demo.add_argument("--health-addr", default="127.0.0.1:0", metavar="HOST:PORT")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return asyncio.run(run_demo(args.config_dir, args.env, args.seconds, args.health_addr))
    return 2


if __name__ == "__main__":
    sys.exit(main())
