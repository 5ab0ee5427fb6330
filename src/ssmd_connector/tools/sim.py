"""``ssmd sim``: the Kalshi simulator as a standalone server."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from ..kalshi.auth import load_public_key
from ..sim import SimConfig, SimServer


def load_keys(args: argparse.Namespace) -> dict[str, rsa.RSAPublicKey] | None:
    """``--public-key KEY_ID=PEM_FILE`` entries; ``None`` with ``--no-auth``. Raises ValueError."""
    if args.no_auth:
        return None
    keys = {}
    for item in args.public_key:
        key_id, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--public-key expects KEY_ID=PEM_FILE, got {item!r}")
        try:
            keys[key_id] = load_public_key(Path(path).read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"--public-key {key_id}: cannot load {path}: {exc}") from None
    return keys


async def serve_until_signalled(stop: Callable[[], Awaitable[None]]) -> None:
    """Wait for SIGINT or SIGTERM, then ``stop`` the server (also if the wait is cancelled): how
    ``ssmd sim`` and ``ssmd replay`` run until the user ends them."""
    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signalled.set)
    try:
        await signalled.wait()
    finally:
        await stop()


async def run_sim(args: argparse.Namespace, keys: dict[str, rsa.RSAPublicKey] | None) -> int:
    config = SimConfig(
        host=args.host,
        port=args.port,
        markets=args.markets,
        rate=args.rate,
        seed=args.seed,
        ping_interval=args.ping_interval,
        public_keys=keys,
        faults=args.fault,
        buffer_limit=args.buffer_limit,
        churn=args.churn,
        lifetime=args.lifetime,
    )
    server = SimServer(config)
    try:
        await server.start()
    except OSError as exc:
        print(f"ssmd sim: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(
        f"Kalshi simulator: {server.ws_url} (REST {server.rest_url}); "
        f"{args.markets} markets, {args.rate:g} events/s, auth {'off' if keys is None else 'on'}",
        flush=True,
    )
    await serve_until_signalled(server.stop)
    return 0
