"""Replay under what users and networks do: mistakes on the command line, clients that stop
reading or read slowly, HTTP clients that spell header names their own way, and questions about
times the archive cannot answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ssmd_connector.kalshi.auth import Signer
from ssmd_connector.replay import server as replay_server
from ssmd_connector.replay.server import ReplayConfig, ReplayServer

from ..faults.harness import ssmd
from ..kalshi_helpers import KEY, KEY_ID
from .archive_builder import ArchiveBuilder, delta, snapshot

A, B = "KXBTCD-26SEP21-T90000", "KXETHD-26SEP21-T3000"


def small_archive(root: Path) -> Path:
    arc = ArchiveBuilder(root)
    arc.frame(0, "orderbook_snapshot", snapshot(A, [["0.4000", "10.00"]]), seq=1)
    arc.frame(10, "orderbook_delta", delta(A, "0.4000", "1.00"), seq=2)
    return arc.write()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["{missing}"], "not a directory"),
        (["{empty}"], "no archive of feed"),
        (["{archive}", "--from", "yesterday"], "--from: not a time"),
        (["{archive}", "--from", "2026-09-21T15:00", "--to", "2026-09-21T14:00"], "must be after --from"),
        (["{archive}", "--speed", "0"], "--speed must be a number above 0"),
        (["{archive}", "--speed", "nan"], "--speed must be a number above 0"),
        (["{archive}", "--port", "99999"], "--port must be 0..65535"),
        (["{archive}", "--public-key", "k=/no/such.pem"], "k"),
    ],
)
def test_a_mistake_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "empty").mkdir()
    small_archive(tmp_path / "archive")
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "archive": tmp_path / "archive"}
    auth = [] if "--public-key" in args else ["--no-auth"]
    run = ssmd("replay", *[a.format(**paths) for a in args], *auth)
    assert run.returncode == 2, run.stdout + run.stderr
    assert says in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


async def test_a_client_that_stops_reading_holds_a_bounded_amount_of_the_archive(tmp_path: Path) -> None:
    """200 snapshots of ~50 KB (10 MB): a client that reads nothing for a second has at most
    what one flush and the socket's buffers hold waiting for it, not a batch of 4,000 frames."""
    arc = ArchiveBuilder(tmp_path)
    levels = [[f"0.{i:04d}", "1.00"] for i in range(1, 2500)]
    for i in range(200):
        arc.frame(i, "orderbook_snapshot", snapshot(A, levels), seq=i + 1)
    server = ReplayServer(ReplayConfig(arc.write(), "kalshi", speed=None))
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        writer.write(
            f"GET /trade-api/ws/v2 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await reader.readuntil(b"\r\n\r\n")
        sub = json.dumps(
            {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_tickers": [A]}}
        )
        payload = sub.encode()
        mask = b"\x01\x02\x03\x04"
        writer.write(bytes((0x81, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        await asyncio.sleep(1.0)  # and read nothing
        (conn,) = server.open
        waiting = conn.transport.underlying_transport.get_write_buffer_size() if conn.transport else 0
        assert waiting < 2 * replay_server.FLUSH_BYTES + 200_000, waiting  # one flush + a frame, not 10 MB
        assert conn.sent < 150  # the replay waited for the client
        writer.close()
    finally:
        await server.stop()


async def test_the_end_of_a_replay_reaches_a_slow_reader_as_a_normal_close(tmp_path: Path) -> None:
    """The client's code is 6 s behind its socket when the replay ends: its library has the close
    queued, and answers it only when the application gets there."""
    arc = ArchiveBuilder(tmp_path)
    arc.frame(0, "orderbook_snapshot", snapshot(A, [["0.4000", "10.00"]]), seq=1)
    for i in range(150):
        arc.frame(1 + i, "orderbook_delta", delta(A, "0.4000", "1.00"), seq=2 + i)
    server = ReplayServer(ReplayConfig(arc.write(), "kalshi", speed=None))
    await server.start()
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
            await ws.send_json(
                {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_tickers": [A]}}
            )
            got = 0
            async for _ in ws:
                got += 1
                await asyncio.sleep(0.04)  # 6 s of reading
            assert ws.close_code == 1000 and got == 152  # the reply, the snapshot, 150 deltas
    finally:
        await server.stop()


async def test_signed_requests_are_accepted_whatever_the_case_of_the_header_names(tmp_path: Path) -> None:
    server = ReplayServer(
        ReplayConfig(small_archive(tmp_path), "kalshi", speed=None, public_keys={KEY_ID: KEY.public_key()})
    )
    await server.start()
    signer = Signer(KEY_ID, KEY)
    try:
        async with aiohttp.ClientSession() as http:
            for spell in (str, str.lower, lambda h: "-".join(p.capitalize() for p in h.split("-"))):
                headers = {spell(k): v for k, v in signer.headers("GET", "/trade-api/v2/markets").items()}
                async with http.get(server.rest_url + "/markets", headers=headers) as r:
                    assert r.status == 200, (spell, await r.text())
            async with http.get(server.rest_url + "/markets") as r:
                assert r.status == 401
    finally:
        await server.stop()


async def test_rest_answers_what_the_archive_cannot_know_and_every_other_path_in_json(tmp_path: Path) -> None:
    server = ReplayServer(ReplayConfig(small_archive(tmp_path), "kalshi", speed=None))
    await server.start()

    async def get(path: str, **query: str) -> tuple[int, Any]:
        async with http.get(f"http://127.0.0.1:{server.port}{path}", params=query) as r:
            return r.status, await r.json()

    try:
        async with aiohttp.ClientSession() as http:
            status, body = await get("/trade-api/v2/markets", **{"from": "2020-01-01"})  # before the archive
            assert status == 200 and body["markets"] == []
            status, body = await get("/trade-api/v2/markets", mve_filter="sometimes")
            assert status == 400 and "mve_filter" in body["error"]["message"]
            status, body = await get("/trade-api/v2/events")
            assert status == 404 and body["error"]["code"] == "not_found"
    finally:
        await server.stop()


async def test_a_client_joining_inside_a_hole_gets_no_book_until_the_archived_one(tmp_path: Path) -> None:
    """Inside a hole the archive's book is missing deltas: serving it would present a wrong book
    as whole. The client gets the market's next archived snapshot instead."""
    arc = ArchiveBuilder(tmp_path)
    arc.frame(0, "orderbook_snapshot", snapshot(A, [["0.4000", "10.00"]]), seq=1)
    arc.frame(30, "orderbook_delta", delta(A, "0.4000", "5.00"), seq=4)  # 2 and 3 lost
    arc.event(30, "gap", sid=1, channel="orderbook_delta", expected=2, got=4, missing=2, tickers=[A])
    arc.frame(40, "orderbook_delta", delta(A, "0.4000", "1.00"), seq=5)
    arc.frame(50, "orderbook_snapshot", snapshot(A, [["0.4000", "22.00"]]), seq=6)
    arc.frame(60, "orderbook_delta", delta(A, "0.4000", "1.00"), seq=7)
    server = ReplayServer(ReplayConfig(arc.write(), "kalshi", speed=None))
    await server.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(server.ws_url + "?from=2026-09-21T14:13:20.045") as ws,
        ):
            await ws.send_json(
                {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_tickers": [A]}}
            )
            frames = [json.loads(m.data) async for m in ws]
        data = [
            (f["type"], f["msg"].get("yes_dollars_fp") or f["msg"].get("delta_fp"))
            for f in frames
            if "msg" in f and "market_ticker" in f["msg"]
        ]
        assert data == [("orderbook_snapshot", [["0.4000", "22.00"]]), ("orderbook_delta", "1.00")]
    finally:
        await server.stop()
