"""The benchmark's firehose: a Kalshi-protocol WebSocket server in its own process.

It pre-renders the whole stream once — realistic simulator messages (order-book deltas, trades,
tickers, lifecycle events from :class:`ssmd_connector.sim.MarketModel`) with correct per-sid
sequence numbers — as raw WebSocket wire bytes, so serving costs almost nothing and the server is
never what the benchmark measures. Each connection gets the same stream: it answers the client's
``subscribe`` commands with one ``subscribed`` per channel (sids 1..4, as a fresh Kalshi
connection would) and, once all four channels are subscribed — the recorder subscribes the global
``market_lifecycle_v2`` in a second command — sends the N frames as fast as the socket accepts,
or paced at a fixed rate.

The stream is written in whole frames only (chunks end at frame boundaries), so a reply sent
through picows between two writes can never land inside a frame: a benchmark must never corrupt
the stream it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import sys
from array import array

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from ssmd_connector.kalshi.wire import SEQUENCED_CHANNELS, render
from ssmd_connector.sim.market import MarketModel

SIDS = {"orderbook_delta": 1, "trade": 2, "ticker": 3, "market_lifecycle_v2": 4}
CHANNELS = list(SIDS)


def ws_header(n: int) -> bytes:
    if n < 126:
        return bytes((0x81, n))
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big")
    return b"\x81\x7f" + n.to_bytes(8, "big")


def render_stream(frames: int, markets: int = 200, seed: int = 7) -> tuple[bytearray, array[int], int]:
    """Wire bytes of ``frames`` server frames, the end offset of each, and the payload byte count."""
    model = MarketModel(markets, seed, now=1_795_000_000.0)
    # A pool of realistic payloads, cycled: rendering 5M distinct events would take minutes.
    pool: list[tuple[str, str, bytes]] = []
    ts = 1_795_000_000.0
    while len(pool) < 20_000:
        ts += 0.001
        for channel, _ticker, kind, msg in model.step(ts):
            pool.append((channel, kind, msgspec.json.encode(msg)))
    seq = dict.fromkeys(SIDS, 0)
    wire = bytearray()
    ends: array[int] = array("Q")
    payload_bytes = 0
    for i in range(frames):
        channel, kind, body = pool[i % len(pool)]
        sid = SIDS[channel]
        if channel in SEQUENCED_CHANNELS:
            seq[channel] += 1
            payload = render(kind, body, sid=sid, seq=seq[channel])
        else:
            payload = render(kind, body, sid=sid)
        payload_bytes += len(payload)
        wire += ws_header(len(payload))
        wire += payload
        ends.append(len(wire))
    return wire, ends, payload_bytes


class _Listener(WSListener):
    def __init__(self, server: Firehose) -> None:
        self.server = server
        self.transport: WSTransport | None = None
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.task: asyncio.Task[None] | None = None
        self.subscribed: set[str] = set()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            cmd = json.loads(frame.get_payload_as_bytes())
            if cmd.get("cmd") == "subscribe":
                for channel in cmd["params"]["channels"]:
                    body = {"id": cmd["id"], "type": "subscribed", "msg": {"channel": channel, "sid": SIDS[channel]}}
                    transport.send(WSMsgType.TEXT, json.dumps(body).encode())
                    self.subscribed.add(channel)
                if self.task is None and self.subscribed >= set(SIDS):  # every reply before the stream
                    self.task = asyncio.get_running_loop().create_task(self.stream())
        elif frame.msg_type == WSMsgType.CLOSE:
            if self.task is not None:
                self.task.cancel()
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    async def stream(self) -> None:
        assert self.transport is not None
        out = self.transport.underlying_transport
        wire, ends, rate = self.server.wire, self.server.ends, self.server.rate
        view = memoryview(wire)
        pos = 0
        fault = self.server.fault
        if fault is not None:
            await self.faulty(fault)
            return
        if not rate:
            chunk = 1 << 20
            while pos < len(wire):
                await self.can_write.wait()
                # End the write at a frame boundary (the last frame ending within the chunk, or
                # the one frame longer than a chunk), never inside a frame.
                i = bisect.bisect_right(ends, pos + chunk) - 1
                end = ends[i] if i >= 0 and ends[i] > pos else ends[bisect.bisect_right(ends, pos)]
                out.write(view[pos:end])
                pos = end
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        while sent < len(ends):
            await asyncio.sleep(0.001)
            due = min(len(ends), int((loop.time() - start) * rate))
            if due > sent:
                end = ends[due - 1]
                out.write(view[pos:end])
                pos, sent = end, due

    async def faulty(self, fault: str) -> None:
        """The stream with one fault, for the tests that prove a broken run fails instead of
        reporting: ``drop`` leaves out frame 1,000; ``gap`` too, but sends the last frame twice
        (the count is right); ``disconnect`` closes the connection after frame 1,000; ``corrupt``
        sends a control frame inside a data frame (what unaligned writes did)."""
        assert self.transport is not None
        out = self.transport.underlying_transport
        wire, ends = self.server.wire, self.server.ends
        view = memoryview(wire)
        cut = ends[999]
        out.write(view[:cut])
        if fault == "disconnect":
            self.transport.disconnect(graceful=False)
            return
        if fault == "drop":
            out.write(view[ends[1000] :])
            return
        if fault == "gap":  # frame 1,000 left out and the last sent twice: the right count, a gap
            out.write(view[ends[1000] :])
            out.write(view[ends[-2] : ends[-1]])
            return
        half = cut + (ends[1000] - cut) // 2
        out.write(view[cut:half])
        self.transport.send(WSMsgType.TEXT, b'{"type":"subscribed","msg":{"channel":"ticker","sid":9}}')
        out.write(view[half:])


class Firehose:
    def __init__(self, frames: int, rate: float, fault: str | None = None) -> None:
        self.wire, self.ends, self.payload_bytes = render_stream(frames)
        self.rate = rate
        self.fault = fault

    def factory(self, _request: WSUpgradeRequest) -> WSListener:
        return _Listener(self)


async def serve(frames: int, rate: float, port: int, fault: str | None = None) -> None:
    fh = Firehose(frames, rate, fault)
    server = await ws_create_server(fh.factory, "127.0.0.1", port)
    actual = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": actual, "frames": frames, "payload_bytes": fh.payload_bytes}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    server.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, required=True)
    p.add_argument("--rate", type=float, default=0.0, help="frames/s; 0 = as fast as the socket accepts")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cpu", type=int, default=-1, help="pin this process to one CPU")
    p.add_argument("--fault", choices=["drop", "gap", "disconnect", "corrupt"], help="break the stream (for tests)")
    a = p.parse_args()
    if a.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {a.cpu})
    asyncio.run(serve(a.frames, a.rate, a.port, a.fault))


if __name__ == "__main__":
    main()
