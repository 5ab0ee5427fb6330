"""Errors are counted as incidents: an outage once, however many retries — and a different
failure as a new incident of its own kind."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ssmd_connector.backoff import Backoff
from ssmd_connector.connectors.websocket import WebSocketConnector
from ssmd_connector.metrics import FeedStats
from ssmd_connector.runner import Runner
from ssmd_connector.writers.jsonl import JsonlWriter

from ..helpers import free_port
from .harness import rejecting_server, until


async def test_a_rejected_handshake_after_a_refused_connection_is_counted_as_its_own_incident(
    tmp_path: Path,
) -> None:
    """Both used one incident key: the auth failure that followed a connect failure was never
    counted, logged or written to the ledger."""
    port = free_port()
    stats = FeedStats("f")
    runner = Runner(
        "f",
        [WebSocketConnector(f"ws://127.0.0.1:{port}/ws", label="f")],
        [JsonlWriter(tmp_path)],
        stats=stats,
        backoff=Backoff(0.05, 0.1),
    )
    task = asyncio.create_task(runner.run())
    await until(lambda: stats.reconnects >= 3, what="connection attempts refused")

    app_runner, _ = await rejecting_server(port)
    attempts = stats.reconnects
    await until(lambda: stats.reconnects >= attempts + 3, what="handshakes rejected")
    runner.stop()
    await task
    await app_runner.cleanup()
    assert (stats.errors["connect"], stats.errors["auth"]) == (1, 1)
    assert any("authentication failed" in r for r in runner.not_ready_reasons())
