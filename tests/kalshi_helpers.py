"""Recording the simulator with the real recorder, for end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from ssmd_connector.assembly.recorder import Recorder
from ssmd_connector.config import load
from ssmd_connector.kalshi.auth import generate_key_pair
from ssmd_connector.metrics import FeedStats, make_registry
from ssmd_connector.secrets import Secret
from ssmd_connector.sim import SimServer

from .helpers import write_config

KEY, PEM = generate_key_pair()
KEY_ID = "e2e-key-id"
SECRETS = {"KALSHI_API_KEY": Secret(KEY_ID), "KALSHI_PRIVATE_KEY": Secret(PEM)}


@dataclass
class Session:
    recorder: Recorder
    task: asyncio.Task[None]
    data: Path

    async def stop(self) -> None:
        self.recorder.runner.stop()
        await self.task

    def ledger(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.data.glob("*/kalshi.events.jsonl")):
            out += [json.loads(line) for line in path.read_text().splitlines()]
        return out

    def count(self, event: str) -> int:
        """Ledger events recorded so far (in memory, flushed or not)."""
        return self.recorder.ledger.events.get(event, 0)


async def record(
    tmp_path: Path,
    sim: SimServer,
    subscription: str,
    *,
    secrets: dict[str, Secret] | None = None,
    storage: str = "",
) -> Session:
    data = tmp_path / "data"
    cfg = write_config(
        tmp_path / "cfg",
        feed_name="kalshi",
        env=f"name: test\nfeed: kalshi\nstorage: {{type: local, path: {data}{storage}}}\nsubscription:\n{subscription}",
        feed="name: kalshi\ntype: websocket\nversions:\n"
        f"  - {{version: sim, endpoint: '{sim.ws_url}', active: true}}\n",
    )
    recorder = Recorder.build(load(cfg, "test"), SECRETS if secrets is None else secrets)
    task = asyncio.create_task(recorder.run("127.0.0.1", 0, handle_signals=False))
    return Session(recorder, task, data)


def exported(stats: FeedStats, name: str) -> float:
    """The value ``/metrics`` shows for the feed-labelled series ``name``."""
    text = generate_latest(make_registry([stats])).decode()
    prefix = f'{name}{{feed="{stats.feed}"}} '
    return float(next(line for line in text.splitlines() if line.startswith(prefix))[len(prefix) :])


async def eventually(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.02)
