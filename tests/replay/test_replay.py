"""Replay, end to end: the simulator recorded by the real recorder, that archive replayed, the
replay recorded again by the real recorder (finding its markets through the replay's REST
listing, as its discovery does on Kalshi) — the same messages, in the same order, with sids and
sequence numbers of the replay's own, and the same books."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path

from ssmd_connector.archive.line import ts_ns
from ssmd_connector.assembly.recorder import Recorder
from ssmd_connector.config import load
from ssmd_connector.replay.server import ReplayConfig, ReplayServer
from ssmd_connector.sim import SimConfig

from ..conftest import StartSim
from ..faults.harness import SSMD, ssmd
from ..helpers import read_lines, write_config
from ..kalshi_helpers import KEY, KEY_ID, eventually, record

CHANNELS = "  channels: [orderbook_delta, ticker, trade]\n"


def bodies(data: Path) -> dict[tuple[str, str], list[bytes]]:
    """Per (type, market): the archived ``msg`` of every data message, in order."""
    out: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for line in read_lines(data, "kalshi"):
        frame = json.loads(line)["data"]
        msg = frame.get("msg") if isinstance(frame, dict) else None
        if isinstance(msg, dict) and frame["type"] in ("orderbook_snapshot", "orderbook_delta", "ticker", "trade"):
            out[frame["type"], msg["market_ticker"]].append(json.dumps(msg).encode())
    return out


async def test_a_replay_recorded_again_holds_the_same_messages_and_books(tmp_path: Path, start_sim: StartSim) -> None:
    sim = await start_sim(SimConfig(port=0, markets=20, rate=3000, public_keys={KEY_ID: KEY.public_key()}))
    tickers = sim.model.open_tickers[:5]
    markets = f"  markets: [{', '.join(tickers)}]\n"
    first = await record(tmp_path / "live", sim, CHANNELS + markets)
    await eventually(lambda: first.recorder.runner.stats.messages > 4000, what="4,000 frames recorded")
    await first.stop()

    replay = ReplayServer(ReplayConfig(first.data, "kalshi", speed=None))
    await replay.start()
    try:
        data = tmp_path / "again" / "data"
        cfg = write_config(
            tmp_path / "again" / "cfg",
            feed_name="kalshi",
            # the markets found as a user's recorder would: discovery over the replay's REST listing
            env=f"name: test\nfeed: kalshi\nstorage: {{type: local, path: {data}}}\nsubscription:\n{CHANNELS}"
            "  discover: {status: open}\n",
            feed="name: kalshi\ntype: websocket\nversions:\n"
            f"  - {{version: r, endpoint: '{replay.ws_url}', active: true}}\n",
        )
        again = Recorder.build(load(cfg, "test"), {})
        task = asyncio.create_task(again.run("127.0.0.1", 0, handle_signals=False))
        started = time.monotonic()
        await eventually(lambda: replay.finished == 1, timeout=60, what="the replay played to its end")
        again.runner.stop()  # before its reconnect starts the replay over
        await task
    finally:
        await replay.stop()
    live, replayed = bodies(first.data), bodies(data)
    assert sum(map(len, live.values())) > 3900  # (the 4,000 frames counted include replies)
    assert replayed == live  # the same messages per channel and market, in the same order, byte for byte
    ledger = [json.loads(x) for x in (next(data.glob("*/kalshi.events.jsonl"))).read_text().splitlines()]
    assert not [e for e in ledger if e["event"] == "gap"]  # each sid's seq gap-free
    for ticker in tickers[:2]:
        a, b = ssmd("book", str(first.data), "--ticker", ticker), ssmd("book", str(data), "--ticker", ticker)
        assert a.returncode == 0 and b.returncode == 0
        assert a.stdout.splitlines()[2:] == b.stdout.splitlines()[2:]  # the same book (not the same times)
    assert time.monotonic() - started < 60


async def test_the_cli_paces_a_replay_by_the_archived_receive_times(tmp_path: Path, start_sim: StartSim) -> None:
    """``ssmd replay`` as a user runs it: at 1x a recorded stretch takes as long as it did, at 10x
    a tenth; a connection's clock starts at its first subscription; the end is a normal close."""
    import aiohttp  # noqa: PLC0415

    from ..helpers import free_port  # noqa: PLC0415

    sim = await start_sim(SimConfig(port=0, markets=10, rate=1500, public_keys={KEY_ID: KEY.public_key()}))
    tickers = sim.model.open_tickers[:3]
    live = await record(tmp_path, sim, CHANNELS + f"  markets: [{', '.join(tickers)}]\n")
    await asyncio.sleep(4.0)
    await live.stop()
    stamps = [json.loads(x)["ts"] for x in read_lines(live.data, "kalshi")]
    span = _seconds(stamps[-1]) - _seconds(stamps[0])
    # (the server's --speed, the URL's query, the pace expected): the URL overrides per connection
    for flag, query, speed in ((1.0, "", 1.0), (10.0, "", 10.0), (1.0, "?speed=10", 10.0)):
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            str(SSMD), "replay", str(live.data), "--port", str(port), "--no-auth", "--speed", str(flag),
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await _listening(port)
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(f"ws://127.0.0.1:{port}/trade-api/ws/v2{query}") as ws,
            ):
                params = {"channels": ["orderbook_delta", "ticker", "trade"], "market_tickers": tickers}
                began = time.monotonic()
                await ws.send_str(json.dumps({"id": 1, "cmd": "subscribe", "params": params}))
                frames = 0
                async for msg in ws:
                    frames += msg.type == aiohttp.WSMsgType.TEXT
                took = time.monotonic() - began
                assert ws.close_code == 1000
        finally:
            proc.terminate()
            await proc.wait()
        assert frames > 1000
        assert abs(took - span / speed) <= max(0.05 * span / speed, 0.15), (speed, took, span)


def _seconds(ts: str) -> float:
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


async def _listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_a_replay_from_the_middle_starts_with_the_books_as_they_were_then(
    tmp_path: Path, start_sim: StartSim
) -> None:
    """Subscribing at replay time t sends each market's book at t — rebuilt from the archive
    before t — equal to what ``ssmd book --at t`` (an independent rebuild) says."""
    import aiohttp  # noqa: PLC0415

    sim = await start_sim(SimConfig(port=0, markets=10, rate=2000, public_keys={KEY_ID: KEY.public_key()}))
    ticker = sim.model.open_tickers[0]
    live = await record(tmp_path, sim, CHANNELS + f"  markets: [{ticker}]\n")
    await asyncio.sleep(2.0)
    await live.stop()
    stamps = [json.loads(x)["ts"] for x in read_lines(live.data, "kalshi")]
    middle = stamps[len(stamps) // 2]
    replay = ReplayServer(ReplayConfig(live.data, "kalshi", start_ns=ts_ns(middle), speed=None))
    await replay.start()
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(replay.ws_url) as ws:
            params = {"channels": ["orderbook_delta"], "market_tickers": [ticker]}
            await ws.send_str(json.dumps({"id": 1, "cmd": "subscribe", "params": params}))
            first = None
            async for msg in ws:
                frame = json.loads(msg.data)
                if frame["type"] != "subscribed":
                    first = frame
                    break
    finally:
        await replay.stop()
    assert first is not None and first["type"] == "orderbook_snapshot" and first["seq"] == 1
    out = ssmd("book", str(live.data), "--ticker", ticker, "--at", middle).stdout
    for side in ("yes", "no"):
        shown = next(line for line in out.splitlines() if line.startswith(f"  {side} bids:")).split(": ", 1)[1]
        levels = sorted(first["msg"].get(f"{side}_dollars_fp", []), key=lambda level: -float(level[0]))[:10]
        assert shown == (", ".join(f"{p}x{q}" for p, q in levels) or "(empty)")
