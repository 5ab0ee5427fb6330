"""``ssmd replay``: an archive served as Kalshi's WebSocket v2, one clock per connection.

A client connects to ``/trade-api/ws/v2`` and subscribes as it would on Kalshi. Its clock starts
at its first subscription, at ``--from`` (or the archive's start): from then on every archived
message of the channels and markets it subscribed reaches it in receive order, paced by the
archived receive times (divided by ``speed``; ``None``: as fast as the socket takes), with ``sid`` and a
gap-free ``seq`` of its own and the ``msg`` byte for byte. Commands, replies and errors are the
server session's (:class:`~ssmd_connector.kalshi.server.ServerSession`, the simulator's too);
order-book snapshots — on subscribe and for ``get_snapshot`` — are the book at the connection's
replay time (:mod:`.books`). At the end of the window the connection is closed normally (1000).

URL query parameters override the defaults for one connection, for clients that can set a URL:
``?from=2026-11-24T10:00&to=…&speed=10`` (``speed=max``: as fast as it reads). Several
connections replay side by side, each from its own start. The archive is read in a worker
thread a batch at a time, and a connection reads no further ahead than its socket takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import WSCloseCode, WSMsgType, web
from cryptography.hazmat.primitives.asymmetric import rsa

from ..kalshi.auth import handshake_problem, unauthorized_body
from ..kalshi.server import ServerSession, Subscription
from ..kalshi.wire import (
    EVENT_LIFECYCLE,
    MARKET_LIFECYCLE_V2,
    MULTIVARIATE_MARKET_LIFECYCLE,
    ORDERBOOK_DELTA,
    ORDERBOOK_SNAPSHOT,
    TICKER,
    TRADE,
    WS_PATH,
)
from .books import Books
from .source import Recorded, messages

log = logging.getLogger(__name__)

CHANNEL_OF = {
    ORDERBOOK_DELTA: ORDERBOOK_DELTA,
    ORDERBOOK_SNAPSHOT: ORDERBOOK_DELTA,
    TICKER: TICKER,
    TRADE: TRADE,
    MARKET_LIFECYCLE_V2: MARKET_LIFECYCLE_V2,
    EVENT_LIFECYCLE: MARKET_LIFECYCLE_V2,
    MULTIVARIATE_MARKET_LIFECYCLE: MULTIVARIATE_MARKET_LIFECYCLE,
}
"""Archived message type → the channel a client subscribes to get it."""

BATCH = 2000
"""Messages read from the archive per worker-thread call."""
AHEAD = 10_000
"""Frames queued for one connection before its replay waits for the socket."""


@dataclass
class ReplayConfig:
    root: Path
    feed: str | None = None
    start_ns: int = 0
    end_ns: int = 0
    speed: float | None = 1.0
    """Replay-time seconds per wall-clock second; ``None``: as fast as the client reads."""
    host: str = "127.0.0.1"
    port: int = 0
    public_keys: dict[str, rsa.RSAPublicKey] | None = None
    """key id → public key; ``None`` accepts unauthenticated connections (``--no-auth``)."""
    max_skew: float = 300.0


@dataclass(frozen=True)
class Window:
    """One connection's replay: from, to (ns; 0: open) and speed."""

    start_ns: int
    end_ns: int
    speed: float | None


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    window: Window
    books: Books = field(default_factory=Books)
    out: deque[bytes] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    session: ServerSession | None = None
    sent: int = 0
    replay: asyncio.Task[None] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    close_code: int = WSCloseCode.OK
    close_reason: str = "end of replay"

    def enqueue(self, frame: bytes, sub: Subscription | None = None) -> None:
        self.out.append(frame)
        self.wake.set()


class ReplayServer:
    """Owns the listening socket and every replaying connection."""

    def __init__(self, config: ReplayConfig) -> None:
        self.config = config
        self.port = 0
        self.connections = 0
        self.finished = 0
        self._runner: web.AppRunner | None = None
        self._open: set[_Connection] = set()

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}{WS_PATH}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(WS_PATH, self._ws_handler)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port

    async def stop(self) -> None:
        for conn in list(self._open):  # (aiohttp would wait a minute for each handler)
            conn.stop.set()
            with contextlib.suppress(Exception):
                await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"replay server stopping")
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _auth_problem(self, request: web.Request) -> str | None:
        keys = self.config.public_keys
        if keys is None:
            return None
        return handshake_problem(
            keys, request.headers, request.method, request.path, now=time.time(), max_skew=self.config.max_skew
        )

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        problem = self._auth_problem(request)
        if problem is not None:
            return web.json_response(unauthorized_body(problem), status=401)
        try:
            window = self._window(request)
        except ValueError as exc:
            body = {"error": {"code": "bad_request", "message": f"invalid replay parameter: {exc}"}}
            return web.json_response(body, status=400)
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        self.connections += 1
        conn = _Connection(ws, window)
        conn.session = ServerSession(conn.enqueue, conn.books.snapshot)
        self._open.add(conn)
        sender = asyncio.create_task(self._send(conn))
        reader = asyncio.create_task(self._read(conn))
        try:
            # Until the client leaves, or the replay has handed everything over: then the close is
            # made here, with nothing else reading the socket, so it is a full closing handshake.
            ended = asyncio.create_task(conn.ended.wait())
            await asyncio.wait([reader, ended], return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
            if not reader.done():
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                await ws.close(code=conn.close_code, message=conn.close_reason.encode())
        finally:
            conn.stop.set()  # (the archive is read in a thread: it stops at its next line)
            tasks = [t for t in (conn.replay, sender, reader) if t is not None]
            for task in tasks:
                task.cancel()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, Exception) and not isinstance(result, ConnectionError | RuntimeError):
                    log.error("replay connection: %r", result)
            self._open.discard(conn)
        return ws

    async def _read(self, conn: _Connection) -> None:
        """The client's commands; the replay starts at the first subscription."""
        session = conn.session
        assert session is not None
        async for msg in conn.ws:
            if msg.type == WSMsgType.TEXT:
                session.command(msg.data.encode())
                if conn.replay is None and session.subs:
                    conn.replay = asyncio.create_task(self._replay(conn))
                    conn.replay.add_done_callback(lambda task: self._replay_done(conn, task))
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break

    def _replay_done(self, conn: _Connection, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug, or an archive it cannot read: said, and the client told
            log.error("replay failed: %r", exc, exc_info=exc)
            conn.close_code, conn.close_reason = WSCloseCode.INTERNAL_ERROR, "replay failed"
        conn.ended.set()

    def _window(self, request: web.Request) -> Window:
        """The server's window, with the URL's ``from`` / ``to`` / ``speed`` in its place."""
        cfg, q = self.config, request.query
        start = _ns(q["from"]) if "from" in q else cfg.start_ns
        end = _ns(q["to"]) if "to" in q else cfg.end_ns
        speed = cfg.speed
        if "speed" in q:
            speed = None if q["speed"] == "max" else float(q["speed"])
            if speed is not None and not speed > 0:
                raise ValueError(f"speed must be above 0 or 'max', got {q['speed']!r}")
        return Window(start, end, speed)

    async def _send(self, conn: _Connection) -> None:
        while True:
            await conn.wake.wait()
            conn.wake.clear()
            while conn.out:
                await conn.ws.send_frame(conn.out.popleft(), WSMsgType.TEXT)
                conn.sent += 1
            conn.drained.set()

    async def _replay(self, conn: _Connection) -> None:
        """Deliver the archive to this connection's subscriptions, paced by its own clock."""
        cfg, session, window = self.config, conn.session, conn.window
        assert session is not None
        loop = asyncio.get_running_loop()
        stream = messages(cfg.root, cfg.feed, window.start_ns, window.end_ns, conn.stop)
        began = 0.0
        first_ns = window.start_ns or None
        while batch := await asyncio.to_thread(_take, stream, BATCH):
            for m in batch:
                if not m.live:  # before the window: only the books it starts with
                    conn.books.apply(m.kind, m.ticker, m.msg)
                    continue
                if not began:  # the clock starts with the first message of the window
                    began = loop.time()
                    first_ns = first_ns or m.ns
                    for sub in session.by_channel.get(ORDERBOOK_DELTA, ()):  # the books as the window opens
                        for ticker in sub.order:
                            session.snapshot(sub, ticker)
                assert first_ns is not None
                if window.speed is not None:
                    due = began + (m.ns - first_ns) / 1e9 / window.speed
                    if (wait := due - loop.time()) > 0:
                        await asyncio.sleep(wait)
                conn.books.apply(m.kind, m.ticker, m.msg)
                channel = CHANNEL_OF.get(m.kind)
                if channel is not None:
                    session.deliver(channel, m.ticker, m.kind, m.msg)
                if len(conn.out) > AHEAD:
                    conn.drained.clear()
                    await conn.drained.wait()
        while conn.out:  # everything handed over before the normal close
            conn.drained.clear()
            await conn.drained.wait()
        self.finished += 1
        log.info("replay finished after %d frames: closing the connection", conn.sent)


def _take(stream: Iterator[Recorded], n: int) -> list[Recorded]:
    out: list[Recorded] = []
    for m in stream:
        out.append(m)
        if len(out) >= n:
            break
    return out


def _ns(text: str) -> int:
    """A URL's time (ISO 8601, UTC unless it says otherwise) → ns since the epoch."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
