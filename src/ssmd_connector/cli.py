"""``ssmd-connector``: record one environment's feed until stopped.

Exit codes: 0 clean shutdown; 2 usage or configuration error (one readable line per problem, no
traceback); 1 any other failure at run time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from ._version import __version__
from .errors import ConfigError, KeySourceError, SsmdError
from .settings import parse_addr

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("ssmd_connector")


def _health_addr(value: str) -> tuple[str, int]:
    try:
        return parse_addr(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ssmd-connector",
        description="Record a market-data feed: every WebSocket frame, verbatim and timestamped, "
        "into <storage.path>/<YYYY-MM-DD>/<feed>.jsonl.",
        epilog="Exit codes: 0 clean shutdown (SIGINT/SIGTERM), 2 usage or configuration error, 1 other failure.",
    )
    p.add_argument(
        "--env",
        required=True,
        metavar="NAME",
        help="environment to run: reads CONFIG_DIR/environments/NAME.yaml",
    )
    p.add_argument(
        "--config-dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="directory holding environments/ and feeds/",
    )
    p.add_argument(
        "--health-addr",
        type=_health_addr,
        default=("0.0.0.0", 8080),  # noqa: S104 - a health endpoint is meant to be scraped
        metavar="HOST:PORT",
        help="where to serve /health, /ready and /metrics (default 0.0.0.0:8080; port 0 = any free port)",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default INFO)",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def fail(message: str, code: int) -> int:
    for line in message.splitlines():
        print(f"ssmd-connector: {line}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import logs  # noqa: PLC0415
    from .assembly.recorder import Recorder, confidential  # noqa: PLC0415
    from .config import load  # noqa: PLC0415
    from .keys import resolve_all  # noqa: PLC0415
    from .server import AddressInUse  # noqa: PLC0415

    logs.setup(args.log_level)
    try:
        config = load(args.config_dir, args.env)
        env_label = f"environments/{args.env}.yaml"
        try:
            secrets = resolve_all([(k.name, k.source) for k in config.environment.keys])
        except KeySourceError as exc:
            raise ConfigError([f"{env_label}: {exc}"]) from None
        logs.REDACTOR.add(confidential(secrets))
        recorder = Recorder.build(config, secrets)
    except ConfigError as exc:
        return fail("\n".join(f"config error: {p}" for p in exc.problems), EXIT_USAGE)
    host, port = args.health_addr
    try:
        asyncio.run(recorder.run(host, port))
    except AddressInUse as exc:
        return fail(str(exc), EXIT_USAGE)
    except SsmdError as exc:
        return fail(f"error: {exc}", EXIT_RUNTIME)
    except OSError as exc:  # e.g. the storage became unusable during the shutdown
        return fail(f"error: {exc}", EXIT_RUNTIME)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
