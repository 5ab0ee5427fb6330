"""A small local WebSocket feed for demos: JSON ticks at a steady rate over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import msgspec
from aiohttp import web


async def _send_ticks(ws: web.WebSocketResponse, rate: float) -> None:
    rng = random.Random(7)
    seq = 0
    price = 0.5
    while not ws.closed:
        seq += 1
        price = min(0.99, max(0.01, price + rng.uniform(-0.01, 0.01)))
        frame = {"type": "tick", "seq": seq, "price": f"{price:.4f}", "ts_ms": time.time_ns() // 1_000_000}
        await ws.send_str(msgspec.json.encode(frame).decode())
        await asyncio.sleep(1 / rate)


async def _feed(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=None)
    await ws.prepare(request)
    sender = asyncio.create_task(_send_ticks(ws, request.app["rate"]))
    try:
        async for _ in ws:  # reading is what answers the client's close handshake
            pass
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
            await sender
    return ws


async def start_local_feed(host: str, port: int, rate: float = 200.0) -> web.AppRunner:
    app = web.Application()
    app["rate"] = rate
    app.router.add_get("/feed", _feed)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
