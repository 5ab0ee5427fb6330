"""The simulator speaks Kalshi: handshake auth, commands, error codes, seq, books, REST, pings."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from ssmd_connector.kalshi.auth import Signer, generate_key_pair
from ssmd_connector.sim import SimConfig, SimServer, parse_fault

from ..conftest import StartSim
from ..simclient import SimClient, reply_to

KEY, _ = generate_key_pair()
SIGNER = Signer("test-key", KEY)


@pytest.fixture
async def sim(start_sim: StartSim) -> SimServer:
    config = SimConfig(
        port=0, markets=20, rate=2000, public_keys={"test-key": KEY.public_key()}, ping_interval=0.3, page_limit_max=7
    )
    return await start_sim(config)


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[SimClient]:
    c = await SimClient.connect(sim, SIGNER)
    yield c
    await c.close()


def open_tickers(sim: SimServer, n: int) -> list[str]:
    return sim.model.open_tickers[:n]


async def test_handshake_without_or_with_a_bad_signature_is_401(sim: SimServer) -> None:
    async with aiohttp.ClientSession() as http:
        for headers in (
            {},
            {**SIGNER.headers("GET", "/trade-api/ws/v2"), "KALSHI-ACCESS-TIMESTAMP": "1"},
            Signer("test-key", generate_key_pair()[0]).headers("GET", "/trade-api/ws/v2"),
            Signer("other-id", KEY).headers("GET", "/trade-api/ws/v2"),
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(sim.ws_url, headers=headers)
            assert info.value.status == 401
    assert sim.rejected == 4 and sim.accepted == 0


async def test_subscribe_replies_once_per_channel_then_snapshot_first(sim: SimServer, client: SimClient) -> None:
    tickers = open_tickers(sim, 3)
    cid = await client.cmd("subscribe", {"channels": ["orderbook_delta", "ticker"], "market_tickers": tickers})
    first = await client.until(reply_to(cid, "subscribed"))
    second = await client.until(reply_to(cid, "subscribed"))
    assert {first["msg"]["channel"], second["msg"]["channel"]} == {"orderbook_delta", "ticker"}
    assert first["msg"]["sid"] != second["msg"]["sid"]
    ob_sid = first["msg"]["sid"] if first["msg"]["channel"] == "orderbook_delta" else second["msg"]["sid"]
    await client.until(lambda f: sum(x.get("type") == "orderbook_snapshot" for x in client.frames) == 3)
    snaps = [f for f in client.frames if f.get("type") == "orderbook_snapshot"]
    first_data = next(f for f in client.frames if f.get("sid") == ob_sid and "seq" in f)
    assert first_data["type"] == "orderbook_snapshot"  # nothing for the sid before its snapshot
    assert [s["seq"] for s in snaps] == [1, 2, 3]
    assert {s["msg"]["market_ticker"] for s in snaps} == set(tickers)
    assert all(s["sid"] == ob_sid for s in snaps)
    tick = await client.until(lambda f: f.get("type") == "ticker")
    assert "seq" not in tick  # ticker carries no seq


async def test_per_sid_sequence_is_contiguous_and_shared_by_markets(sim: SimServer, client: SimClient) -> None:
    tickers = open_tickers(sim, 5)
    await client.cmd("subscribe", {"channels": ["orderbook_delta", "trade"], "market_tickers": tickers})
    await client.collect(1.0)
    by_sid: dict[int, list[int]] = {}
    markets: dict[int, set[str]] = {}
    for f in client.frames:
        if "seq" in f:
            by_sid.setdefault(f["sid"], []).append(f["seq"])
            markets.setdefault(f["sid"], set()).add(f["msg"]["market_ticker"])
    assert len(by_sid) == 2
    for seqs in by_sid.values():
        assert seqs == list(range(1, len(seqs) + 1))
    assert any(len(m) > 1 for m in markets.values())


async def test_snapshot_plus_deltas_rebuild_the_true_book_exactly(sim: SimServer, client: SimClient) -> None:
    tickers = open_tickers(sim, 4)
    await client.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": tickers})
    await client.collect(1.5)
    sim.paused = True  # freeze the market, then drain what is in flight
    await client.collect(0.3)
    books: dict[str, dict[str, dict[Decimal, Decimal]]] = {}
    deltas = 0
    for f in client.frames:
        if f.get("type") == "orderbook_snapshot":
            m = f["msg"]
            books[m["market_ticker"]] = {
                side: {Decimal(p): Decimal(q) for p, q in m.get(f"{side}_dollars_fp", [])} for side in ("yes", "no")
            }
        elif f.get("type") == "orderbook_delta":
            deltas += 1
            m = f["msg"]
            level = books[m["market_ticker"]][m["side"]]
            price = Decimal(m["price_dollars"])
            size = level.get(price, Decimal(0)) + Decimal(m["delta_fp"])
            assert size >= 0, "a delta took a level negative"
            if size:
                level[price] = size
            else:
                level.pop(price, None)
    assert deltas > 20
    for ticker in tickers:
        truth = sim.model.snapshot_msg(ticker)
        for side in ("yes", "no"):
            expected = {Decimal(p): Decimal(q) for p, q in truth.get(f"{side}_dollars_fp", [])}
            assert books[ticker][side] == expected, (ticker, side)
        yes, no = books[ticker]["yes"], books[ticker]["no"]
        if yes and no:
            assert max(yes) + max(no) < 1, "book crossed"


async def test_update_subscription_actions(sim: SimServer, client: SimClient) -> None:
    a, b, c = open_tickers(sim, 3)
    cid = await client.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": [a]})
    sid = (await client.until(reply_to(cid, "subscribed")))["msg"]["sid"]
    cid = await client.cmd("update_subscription", {"sid": sid, "action": "add_markets", "market_tickers": [b, c]})
    ok = await client.until(reply_to(cid, "ok"))
    assert ok["msg"]["market_tickers"] == [a, b, c] and ok["sid"] == sid and "seq" in ok
    cid = await client.cmd("update_subscription", {"sids": [sid], "action": "delete_markets", "market_ticker": b})
    assert (await client.until(reply_to(cid, "ok")))["msg"]["market_tickers"] == [a, c]
    cid = await client.cmd("update_subscription", {"sid": sid, "action": "get_snapshot", "market_tickers": [c]})
    snap = await client.until(reply_to(cid, "orderbook_snapshot"))
    assert snap["msg"]["market_ticker"] == c and snap["sid"] == sid
    cid = await client.cmd("list_subscriptions")
    listing = await client.until(reply_to(cid, "ok"))
    assert listing["msg"] == [{"channel": "orderbook_delta", "sid": sid}]
    cid = await client.cmd("unsubscribe", {"sids": [sid]})
    unsub = await client.until(reply_to(cid, "unsubscribed"))
    assert unsub["sid"] == sid and isinstance(unsub["seq"], int)


@pytest.mark.parametrize(
    ("cmd", "params", "code"),
    [
        ("frobnicate", {}, 5),
        ("subscribe", None, 2),
        ("subscribe", {}, 3),
        ("subscribe", {"channels": ["nope"]}, 8),
        ("subscribe", {"channels": ["orderbook_delta"]}, 14),
        ("subscribe", {"channels": ["ticker"], "market_ticker": "A", "market_tickers": ["B"]}, 11),
        ("unsubscribe", {}, 4),
        ("unsubscribe", {"sids": [99]}, 7),
        ("update_subscription", {"sid": 1}, 15),
        ("update_subscription", {"sid": 1, "action": "explode"}, 13),
        ("update_subscription", {"sids": [1, 2], "action": "add_markets"}, 12),
        ("update_subscription", {"sid": 42, "action": "add_markets", "market_tickers": ["X"]}, 7),
    ],
)
async def test_error_codes(client: SimClient, cmd: str, params: dict[str, Any] | None, code: int) -> None:
    cid = await client.cmd(cmd, params)
    err = await client.until(reply_to(cid, "error"))
    assert err["msg"]["code"] == code
    assert isinstance(err["msg"]["msg"], str) and err["msg"]["msg"]


async def test_get_snapshot_on_a_non_orderbook_sid_is_unsupported(sim: SimServer, client: SimClient) -> None:
    cid = await client.cmd("subscribe", {"channels": ["ticker"], "market_tickers": open_tickers(sim, 1)})
    sid = (await client.until(reply_to(cid, "subscribed")))["msg"]["sid"]
    cid = await client.cmd("update_subscription", {"sid": sid, "action": "get_snapshot"})
    assert (await client.until(reply_to(cid, "error")))["msg"]["code"] == 13


async def test_heartbeat_pings(client: SimClient) -> None:
    ping = await client.until(lambda f: "_ping" in f, timeout=3)
    assert ping["_ping"] == "heartbeat"


async def test_rest_markets_pagination_filters_and_auth(sim: SimServer) -> None:
    async with aiohttp.ClientSession() as http:
        url = sim.rest_url + "/markets"
        async with http.get(url, params={"status": "open"}) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "authentication_error"
        seen: list[str] = []
        cursor, pages = "", 0
        while True:
            params = {"status": "open", "limit": "1000", **({"cursor": cursor} if cursor else {})}
            async with http.get(url, params=params, headers=SIGNER.headers("GET", "/trade-api/v2/markets")) as r:
                body = await r.json()
            pages += 1
            seen += [m["ticker"] for m in body["markets"]]
            assert all(m["status"] == "active" for m in body["markets"])
            cursor = body["cursor"]
            if not cursor:
                break
        assert pages == 3  # 18 open markets, pages of at most 7
        assert seen == sim.model.open_tickers
        headers = SIGNER.headers("GET", "/trade-api/v2/markets")
        async with http.get(url, params={"series_ticker": "KXBTCD"}, headers=headers) as r:
            assert {m["ticker"].split("-")[0] for m in (await r.json())["markets"]} == {"KXBTCD"}
        ticker = seen[0]
        path = f"/trade-api/v2/markets/{ticker}"
        async with http.get(sim.rest_url + f"/markets/{ticker}", headers=SIGNER.headers("GET", path)) as r:
            assert (await r.json())["market"]["ticker"] == ticker
        path = "/trade-api/v2/markets/NOPE"
        async with http.get(sim.rest_url + "/markets/NOPE", headers=SIGNER.headers("GET", path)) as r:
            assert r.status == 404


async def test_injected_faults(sim: SimServer, client: SimClient) -> None:
    tickers = open_tickers(sim, 3)
    cid = await client.cmd("subscribe", {"channels": ["orderbook_delta"], "market_tickers": tickers})
    sid = (await client.until(reply_to(cid, "subscribed")))["msg"]["sid"]
    await client.collect(0.3)
    await sim.inject("gap")
    await sim.inject("nonjson")
    await client.until(lambda f: "_not_json" in f)
    await client.collect(0.3)
    seqs = [f["seq"] for f in client.frames if f.get("sid") == sid and "seq" in f]
    jumps = [b - a for a, b in itertools.pairwise(seqs) if b - a != 1]
    assert jumps == [2]
    await sim.inject("error25")
    err = await client.until(lambda f: f.get("type") == "error")
    assert err["msg"]["code"] == 25 and err["sid"] == sid
    await sim.inject("close")
    with pytest.raises(AssertionError, match="connection ended"):
        await client.collect_until_closed()


def test_fault_specs_parse() -> None:
    f = parse_fault("silence@20:40#1")
    assert (f.kind, f.at, f.arg, f.connection) == ("silence", 20.0, 40.0, 1)
    with pytest.raises(ValueError, match="unknown fault"):
        parse_fault("meteor@1")
    with pytest.raises(ValueError, match="expected KIND@SECONDS"):
        parse_fault("gap@soon")


async def test_slow_reader_gets_error_25(sim: SimServer) -> None:
    """A client that stops reading: the server's buffer overflows and it sends terminal error 25."""
    sim.config.buffer_limit = 200
    sim.config.rate = 30_000
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", sim.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    headers = SIGNER.headers("GET", "/trade-api/ws/v2")
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /trade-api/ws/v2 HTTP/1.1\r\nHost: 127.0.0.1:{sim.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    )
    writer.write(request.encode())
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    body = json.dumps(
        {
            "id": 1,
            "cmd": "subscribe",
            "params": {"channels": ["orderbook_delta"], "market_tickers": open_tickers(sim, 10)},
        }
    ).encode()
    # A masked text frame (zero mask) with a 16-bit length.
    writer.write(struct.pack("!BBH", 0x81, 0x80 | 126, len(body)) + b"\0\0\0\0" + body)
    await writer.drain()
    deadline = time.monotonic() + 20
    while sim.overflows == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # read nothing meanwhile
    assert sim.overflows >= 1
    found = b""
    while b'"code":25' not in found and time.monotonic() < deadline:
        found = found[-64:] + await reader.read(1 << 20)
    assert b'"code":25' in found
    writer.close()
