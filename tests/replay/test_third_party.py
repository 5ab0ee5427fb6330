"""A third-party Kalshi client — pykalshi, unmodified — against the replay: its REST client
discovers the archive's markets (every ``Market`` passes its pydantic model) and its WebSocket feed
receives every archived message of its subscriptions as a typed message, none failing validation.

pykalshi has no setting for its WebSocket address (it picks Kalshi's production or demo host from
the REST base), so the test sets the feed's ``_ws_url``: the one line a user pointing it at a
replay would write too."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from pydantic import BaseModel

from ssmd_connector.replay.server import ReplayConfig, ReplayServer
from ssmd_connector.sim import SimConfig

from ..conftest import StartSim
from ..helpers import read_lines
from ..kalshi_helpers import KEY, KEY_ID, PEM, eventually, record

pykalshi = pytest.importorskip("pykalshi", reason="pykalshi is in the dev extra: pip install -e '.[dev]'")

TYPED = ("orderbook_snapshot", "orderbook_delta", "trade", "ticker")


async def test_pykalshi_discovers_and_streams_a_replay_with_every_message_typed(
    tmp_path: Path, start_sim: StartSim, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await start_sim(SimConfig(port=0, markets=20, rate=2000, public_keys={KEY_ID: KEY.public_key()}))
    tickers = sim.model.open_tickers[:4]
    channels = "  channels: [orderbook_delta, ticker, trade]\n"
    rec = await record(tmp_path / "live", sim, channels + f"  markets: [{', '.join(tickers)}]\n")
    await eventually(lambda: rec.recorder.runner.stats.messages > 1500, what="1,500 frames recorded")
    await rec.stop()
    archived = [json.loads(x)["data"] for x in read_lines(rec.data, "kalshi")]
    expected = sum(1 for f in archived if isinstance(f, dict) and f.get("type") in TYPED)

    key_file = tmp_path / "key.pem"
    key_file.write_text(PEM)
    replay = ReplayServer(ReplayConfig(rec.data, "kalshi", speed=None, public_keys={KEY_ID: KEY.public_key()}))
    await replay.start()
    caplog.set_level(logging.WARNING, logger="pykalshi")
    client = pykalshi.AsyncKalshiClient(api_key_id=KEY_ID, private_key_path=str(key_file), api_base=replay.rest_url)
    try:
        markets = await client.get_markets(status=pykalshi.MarketStatus.OPEN, fetch_all=True)
        assert sorted(m.data.ticker for m in markets) == sorted(tickers)
        one = await client.get_market(tickers[0])
        assert one.data.status is not None

        feed = client.feed()
        feed._ws_url = replay.ws_url  # (no public setting: see the module's docstring)
        for channel in ("orderbook_delta", "trade", "ticker"):
            feed.subscribe(channel, market_tickers=tickers)
        received: list[object] = []

        async def consume() -> None:
            async for msg in feed:
                received.append(msg)
                if len(received) == expected:
                    return

        await asyncio.wait_for(consume(), 60)
        await feed.disconnect()
    finally:
        await client.aclose()
        await replay.stop()
    untyped = [m for m in received if not isinstance(m, BaseModel)]
    assert not untyped, f"{len(untyped)} message(s) pykalshi could not type, e.g. {untyped[:1]}"
    assert not [r for r in caplog.records if "Failed to validate" in r.getMessage()]
    kinds = {type(m).__name__ for m in received}
    assert {"OrderbookSnapshotMessage", "OrderbookDeltaMessage", "TradeMessage", "TickerMessage"} <= kinds
