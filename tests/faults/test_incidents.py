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


async def test_a_bad_key_at_start_up_is_a_state_that_lasts_until_the_key_works(tmp_path: Path) -> None:
    """A bad key fails market discovery (REST 401) before any WebSocket connection exists: no
    per-shard ``ssmd_auth_failures_total``, and ``ssmd_errors_total{kind="auth"}`` moves once.
    ``ssmd_auth_failing`` stays 1 while every retry is rejected, and 0 once one is accepted."""
    from ssmd_connector.kalshi.auth import generate_key_pair  # noqa: PLC0415
    from ssmd_connector.sim import SimConfig, SimServer  # noqa: PLC0415

    from ..kalshi_helpers import KEY, KEY_ID, eventually, exported, record  # noqa: PLC0415

    other, _ = generate_key_pair()
    sim = SimServer(SimConfig(port=0, markets=4, rate=100, public_keys={KEY_ID: other.public_key()}))
    await sim.start()
    s = await record(tmp_path, sim, "  channels: [ticker]\n  discover: {refresh: 60}\n")
    stats = s.recorder.runner.stats

    try:
        await eventually(lambda: stats.errors["auth"] == 1, what="discovery rejected")
        assert exported(stats, "ssmd_auth_failing") == 1
        assert stats.shards == {}  # no connection exists: the per-shard counter cannot say it
        await asyncio.sleep(1.5)  # retries, all rejected: still failing, still one incident
        assert exported(stats, "ssmd_auth_failing") == 1 and stats.errors["auth"] == 1
        assert sim.config.public_keys is not None
        sim.config.public_keys[KEY_ID] = KEY.public_key()  # the operator fixes the key
        await eventually(lambda: stats.connected, timeout=15, what="recording with the right key")
        assert exported(stats, "ssmd_auth_failing") == 0
    finally:
        await s.stop()
        await sim.stop()
