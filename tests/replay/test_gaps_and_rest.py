"""Replay over an archive with a hole, and the REST listing as of the replay clock.

The archives are written line by line (:mod:`.archive_builder`) so every message's time is known."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ssmd_connector.replay.server import ReplayConfig, ReplayServer

from .archive_builder import T0, ArchiveBuilder, delta, snapshot

A, B = "KXBTCD-26SEP21-T90000", "KXETHD-26SEP21-T3000"


async def replay_all(root: Path, channels: list[str], tickers: list[str] | None = None) -> list[dict[str, Any]]:
    """Every frame a client subscribing to ``channels`` receives, up to the normal close."""
    server = ReplayServer(ReplayConfig(root, "kalshi", speed=None))
    await server.start()
    frames: list[dict[str, Any]] = []
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
            params: dict[str, Any] = {"channels": channels}
            if tickers:
                params["market_tickers"] = tickers
            await ws.send_json({"id": 1, "cmd": "subscribe", "params": params})
            async for msg in ws:
                frames.append(json.loads(msg.data))
            assert ws.close_code == 1000
    finally:
        await server.stop()
    return [f for f in frames if f["type"] not in ("subscribed", "ok")]


async def test_deltas_after_an_archived_gap_are_held_until_the_markets_next_snapshot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    arc = ArchiveBuilder(tmp_path)
    arc.frame(0, "orderbook_snapshot", snapshot(A, [["0.4000", "10.00"]]), seq=1)
    arc.frame(1, "orderbook_snapshot", snapshot(B, [["0.2000", "5.00"]]), seq=2)
    arc.frame(10, "orderbook_delta", delta(A, "0.4000", "1.00"), seq=3)
    arc.frame(20, "orderbook_delta", delta(B, "0.2000", "1.00"), seq=4)
    # seq 5 and 6 never reached the recorder: the frames after the hole are not the exchange's book
    arc.frame(30, "orderbook_delta", delta(A, "0.4100", "7.00"), seq=7)
    arc.event(30, "gap", sid=1, channel="orderbook_delta", expected=5, got=7, missing=2, tickers=[A, B])
    arc.frame(31, "orderbook_delta", delta(B, "0.2100", "2.00"), seq=8)
    arc.frame(40, "orderbook_delta", delta(A, "0.4100", "1.00"), seq=9)
    arc.frame(50, "orderbook_snapshot", snapshot(A, [["0.4000", "11.00"], ["0.4100", "9.00"]]), seq=10)
    arc.frame(60, "orderbook_delta", delta(A, "0.4100", "-1.00"), seq=11)
    arc.frame(70, "orderbook_snapshot", snapshot(B, [["0.2000", "6.00"]]), seq=12)
    arc.frame(80, "orderbook_delta", delta(B, "0.2000", "-6.00"), seq=13)
    caplog.set_level(logging.WARNING, logger="ssmd_connector.replay")
    frames = await replay_all(arc.write(), ["orderbook_delta"], [A, B])

    got = [(f["type"], f["msg"]["market_ticker"], f["msg"].get("delta_fp")) for f in frames]
    assert got == [
        ("orderbook_snapshot", A, None),
        ("orderbook_snapshot", B, None),
        ("orderbook_delta", A, "1.00"),
        ("orderbook_delta", B, "1.00"),
        ("orderbook_snapshot", A, None),  # A's two deltas after the hole held back; its book resent
        ("orderbook_delta", A, "-1.00"),
        ("orderbook_snapshot", B, None),  # B's one
        ("orderbook_delta", B, "-6.00"),
    ]
    assert [f["seq"] for f in frames] == list(range(1, 9))  # the client's own numbering, gap-free
    said = caplog.text
    assert "order books have a hole here (gap, 2 market(s))" in said
    assert f"{A} resumes at its next snapshot: 2 delta(s)" in said
    assert f"{B} resumes at its next snapshot: 1 delta(s)" in said


def lifecycle(ticker: str, event_type: str, **extra: Any) -> dict[str, Any]:
    return {"market_ticker": ticker, "event_type": event_type, **extra}


async def test_rest_lists_the_archives_markets_with_their_status_at_the_replay_time(tmp_path: Path) -> None:
    t0 = T0 // 1_000_000_000
    arc = ArchiveBuilder(tmp_path)
    arc.frame(0, "orderbook_snapshot", snapshot(A, [["0.4000", "10.00"]]), seq=1)
    meta = {"event_ticker": "KXETHD-26SEP21", "title": "ETH above 3000?"}
    created = lifecycle(B, "created", open_ts=t0 + 2, close_ts=t0 + 10, additional_metadata=meta)
    arc.frame(1000, "market_lifecycle_v2", created, sid=2, seq=1)
    arc.frame(5000, "market_lifecycle_v2", lifecycle(B, "determined"), sid=2, seq=2)
    arc.frame(6000, "market_lifecycle_v2", lifecycle(A, "deactivated"), sid=2, seq=3)
    arc.frame(9000, "market_lifecycle_v2", lifecycle(B, "settled"), sid=2, seq=4)
    arc.write()
    server = ReplayServer(ReplayConfig(tmp_path, "kalshi", speed=None))
    await server.start()

    async def get(path: str, **query: str) -> tuple[int, Any]:
        async with http.get(server.rest_url + path, params=query) as r:
            return r.status, await r.json()

    def at(seconds: float) -> str:
        return f"2026-09-21T14:13:{20 + seconds:09.6f}"

    try:
        async with aiohttp.ClientSession() as http:
            status, body = await get("/markets")  # at the archive's start: B not created yet
            assert status == 200 and [m["ticker"] for m in body["markets"]] == [A]
            assert body["markets"][0]["status"] == "active" and body["cursor"] == ""
            status, _ = await get(f"/markets/{B}")
            assert status == 404

            def statuses(body: Any) -> dict[str, str]:
                return {m["ticker"]: m["status"] for m in body["markets"]}

            assert statuses((await get("/markets", **{"from": at(1.5)}))[1]) == {A: "active", B: "initialized"}
            assert statuses((await get("/markets", **{"from": at(3)}))[1]) == {A: "active", B: "active"}
            assert statuses((await get("/markets", **{"from": at(5.5)}))[1]) == {A: "active", B: "determined"}
            assert statuses((await get("/markets", **{"from": at(7)}))[1]) == {A: "inactive", B: "determined"}
            assert statuses((await get("/markets", **{"from": at(9.5)}))[1]) == {A: "inactive", B: "finalized"}
            # the filters the recorder's discovery sends, and pages
            assert statuses((await get("/markets", status="open", **{"from": at(3)}))[1]) == {A: "active", B: "active"}
            assert statuses((await get("/markets", status="closed", **{"from": at(5.5)}))[1]) == {B: "determined"}
            assert statuses((await get("/markets", status="settled", **{"from": at(9.5)}))[1]) == {B: "finalized"}
            only_eth = (await get("/markets", series_ticker="KXETHD", **{"from": at(3)}))[1]
            assert statuses(only_eth) == {B: "active"} and only_eth["markets"][0]["event_ticker"] == "KXETHD-26SEP21"
            page = (await get("/markets", limit="1", **{"from": at(3)}))[1]
            assert [m["ticker"] for m in page["markets"]] == [A] and page["cursor"]
            rest = (await get("/markets", limit="1", cursor=page["cursor"], **{"from": at(3)}))[1]
            assert [m["ticker"] for m in rest["markets"]] == [B] and rest["cursor"] == ""
            status, one = await get(f"/markets/{B}", **{"from": at(3)})
            assert status == 200 and one["market"]["title"] == "ETH above 3000?"
            assert one["market"]["close_time"] == "2026-09-21T14:13:30Z"
            for bad in ({"limit": "0"}, {"status": "sideways"}, {"cursor": "!!"}, {"from": "yesterday"}):
                status, body = await get("/markets", **bad)
                assert status == 400 and body["error"]["code"] == "bad_request", bad
    finally:
        await server.stop()


async def test_after_a_recorder_restart_every_markets_deltas_wait_for_its_snapshot(tmp_path: Path) -> None:
    arc = ArchiveBuilder(tmp_path)
    arc.frame(0, "orderbook_snapshot", snapshot(A, [["0.4000", "10.00"]]), seq=1)
    arc.frame(1, "orderbook_snapshot", snapshot(B, [["0.2000", "5.00"]]), seq=2)
    arc.event(5, "recorder_started")
    # the new recorder's first frames: a delta of B before B's snapshot came back (a stale book)
    arc.frame(10, "orderbook_delta", delta(B, "0.2000", "1.00"), sid=1, seq=1)
    arc.frame(11, "orderbook_snapshot", snapshot(A, [["0.4000", "12.00"]]), sid=1, seq=2)
    arc.frame(12, "orderbook_delta", delta(A, "0.4000", "1.00"), sid=1, seq=3)
    arc.frame(13, "orderbook_snapshot", snapshot(B, [["0.2000", "7.00"]]), sid=1, seq=4)
    arc.frame(14, "orderbook_delta", delta(B, "0.2000", "2.00"), sid=1, seq=5)
    frames = await replay_all(arc.write(), ["orderbook_delta"], [A, B])
    got = [(f["type"], f["msg"]["market_ticker"], f["msg"].get("delta_fp")) for f in frames]
    assert got == [
        ("orderbook_snapshot", A, None),
        ("orderbook_snapshot", B, None),
        ("orderbook_snapshot", A, None),
        ("orderbook_delta", A, "1.00"),
        ("orderbook_snapshot", B, None),  # B's delta before it was held back
        ("orderbook_delta", B, "2.00"),
    ]


async def test_a_gap_is_revealed_only_by_a_frame_of_the_markets_it_names(tmp_path: Path) -> None:
    """Two connections number their sids alike: a frame of another market with the gap's sid and
    seq must not start the hold early (B's last good delta would be held back)."""
    arc = ArchiveBuilder(tmp_path)
    arc.frame(0, "orderbook_snapshot", snapshot(A, [["0.4000", "10.00"]]), sid=1, seq=1)  # connection 0
    arc.frame(1, "orderbook_snapshot", snapshot(B, [["0.2000", "5.00"]]), sid=1, seq=1)  # connection 1
    for i, ms in enumerate((10, 12, 14, 20)):  # A: seq 2..5 on connection 0's sid 1
        arc.frame(ms, "orderbook_delta", delta(A, "0.4000", f"{i + 1}.00"), sid=1, seq=2 + i)
    arc.frame(25, "orderbook_delta", delta(B, "0.2000", "1.00"), sid=1, seq=2)  # B's last good delta
    arc.frame(29, "orderbook_delta", delta(B, "0.2100", "9.00"), sid=1, seq=5)  # B: 3 and 4 lost
    arc.event(30, "gap", sid=1, channel="orderbook_delta", expected=3, got=5, missing=2, tickers=[B])
    arc.frame(40, "orderbook_snapshot", snapshot(B, [["0.2000", "6.00"]]), sid=1, seq=6)
    frames = await replay_all(arc.write(), ["orderbook_delta"], [A, B])
    got = [(f["type"], f["msg"]["market_ticker"], f["msg"].get("delta_fp")) for f in frames]
    assert got == [
        ("orderbook_snapshot", A, None),
        ("orderbook_snapshot", B, None),
        *[("orderbook_delta", A, f"{i}.00") for i in (1, 2, 3, 4)],
        ("orderbook_delta", B, "1.00"),
        ("orderbook_snapshot", B, None),  # the delta after B's gap held back
    ]


async def test_use_yes_price_prices_the_no_side_as_yes_and_market_ids_are_refused_not_ignored(tmp_path: Path) -> None:
    arc = ArchiveBuilder(tmp_path)
    arc.frame(0, "orderbook_snapshot", snapshot(A, [["0.4000", "10.00"]], no=[["0.5500", "3.00"]]), seq=1)
    arc.frame(10, "orderbook_delta", delta(A, "0.5500", "1.00", side="no"), seq=2)
    arc.frame(20, "orderbook_delta", delta(A, "0.4000", "1.00", side="yes"), seq=3)
    root = arc.write()
    server = ReplayServer(ReplayConfig(root, "kalshi", speed=None))
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(server.ws_url) as ws:
                params = {"channels": ["orderbook_delta"], "market_tickers": [A], "use_yes_price": True}
                await ws.send_json({"id": 1, "cmd": "subscribe", "params": params})
                frames = [json.loads(m.data) async for m in ws]
            msgs = [f["msg"] for f in frames if f["type"] in ("orderbook_snapshot", "orderbook_delta")]
            assert msgs[0]["no_dollars_fp"] == [["0.4500", "3.00"]] and msgs[0]["yes_dollars_fp"] == [
                ["0.4000", "10.00"]
            ]
            assert (msgs[1]["side"], msgs[1]["price_dollars"]) == ("no", "0.4500")
            assert (msgs[2]["side"], msgs[2]["price_dollars"]) == ("yes", "0.4000")  # YES levels as they were
            async with http.ws_connect(server.ws_url) as ws:
                await ws.send_json(
                    {"id": 2, "cmd": "subscribe", "params": {"channels": ["ticker"], "market_ids": ["x"]}}
                )
                reply = json.loads((await ws.receive()).data)
                assert reply["type"] == "error" and reply["id"] == 2
    finally:
        await server.stop()
