"""The simulator's servers: Kalshi WebSocket v2 and REST, on one aiohttp port.

* ``GET /trade-api/ws/v2`` — RSA-PSS signed handshake (401 + JSON body when it does not verify),
  then subscribe / unsubscribe / update_subscription / list_subscriptions with Kalshi's reply
  shapes and error codes, per-sid ``seq``, and a ``heartbeat`` ping every ``ping_interval`` s.
* ``GET /trade-api/v2/markets`` (cursor pagination; ``status``, ``series_ticker``,
  ``event_ticker``, ``tickers`` filters) and ``GET /trade-api/v2/markets/{ticker}``.

The protocol is :mod:`ssmd_connector.kalshi.server` — the server session, in the same vocabulary
as the recorder's client (:mod:`ssmd_connector.kalshi.wire`); this module is its I/O: aiohttp,
the market model's clock, faults. Each connection has an outbound buffer of ``buffer_limit``
frames; a reader too slow to drain it gets Kalshi's terminal error 25 on the subscription that
overflowed, as a real slow reader would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import WSMsgType, web
from cryptography.hazmat.primitives.asymmetric import rsa

from ..kalshi.auth import handshake_problem, unauthorized_body
from ..kalshi.server import ServerSession, Subscription
from ..kalshi.wire import MARKET_LIFECYCLE_V2, REST_PREFIX, TICKER, WS_PATH, ErrorCode, endpoint_urls
from .faults import Fault
from .market import MarketModel

log = logging.getLogger(__name__)

_encode = msgspec.json.encode
_SENDING_TS_CHANNELS = frozenset({TICKER, MARKET_LIFECYCLE_V2})


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 0
    markets: int = 50
    rate: float = 500.0
    """Exchange events per second across all markets (a trade counts once, emits two messages)."""
    seed: int = 1
    ping_interval: float = 10.0
    public_keys: dict[str, rsa.RSAPublicKey] | None = None
    """key id → public key; ``None`` accepts unauthenticated connections (``--no-auth``)."""
    max_skew: float = 300.0
    buffer_limit: int = 100_000
    faults: list[Fault] = field(default_factory=list)
    record_sent: bool = False
    """Keep every frame sent (tests compare them with the archive)."""
    page_limit_default: int = 100
    page_limit_max: int = 1000
    """Largest page REST returns whatever ``limit`` asks (small values exercise pagination)."""
    market_limit: int = 0
    """Market subscriptions one connection may hold, over all its sids (0: no limit): error 26 past it."""
    churn: float = 0.0
    """New markets per second (events of four), each trading ``lifetime`` seconds then settling."""
    lifetime: float = 60.0


class SimConnection:
    """One client connection's I/O: its outbound buffer (bounded: a slow reader gets error 25 on
    the subscription that overflowed), the sender and pinger tasks, and the faults that act on
    the connection. What the connection says is :class:`~ssmd_connector.kalshi.server.ServerSession`'s."""

    def __init__(self, server: SimServer, ws: web.WebSocketResponse, index: int, transport: Any) -> None:
        self.server = server
        self.ws = ws
        self.index = index
        self.transport = transport
        self.session = ServerSession(self.enqueue, server.model.snapshot_for, market_limit=server.config.market_limit)
        self.out: deque[tuple[float, bytes]] = deque()
        self._wake = asyncio.Event()
        self.silent_until = 0.0
        self.deaf_until = 0.0
        self.delay = 0.0
        self.delay_until = 0.0
        self.sent: list[bytes] = []
        self.closed = False

    # -- outbound --------------------------------------------------------------------------
    def enqueue(self, frame: bytes, sub: Subscription | None = None) -> None:
        if sub is not None and len(self.out) >= self.server.config.buffer_limit:
            self.server.overflows += sub.sid in self.session.subs
            self.session.overflow(sub)
            return
        self.out.append((time.monotonic(), frame))
        self._wake.set()

    async def sender(self) -> None:
        ws = self.ws
        record = self.server.config.record_sent
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
            while self.out and not self.closed:
                now = time.monotonic()
                if now < self.silent_until:
                    await asyncio.sleep(min(0.1, self.silent_until - now))
                    continue
                if self.delay and now < self.delay_until + self.delay:
                    ready_at = self.out[0][0] + self.delay
                    if now < ready_at:
                        await asyncio.sleep(ready_at - now)
                        continue
                _, frame = self.out.popleft()
                await ws.send_frame(frame, WSMsgType.TEXT)
                if record:
                    self.sent.append(frame)

    async def pinger(self) -> None:
        interval = self.server.config.ping_interval
        while not self.closed:
            await asyncio.sleep(interval)
            if time.monotonic() >= self.silent_until and not self.ws.closed:
                await self.ws.ping(b"heartbeat")

    def command(self, raw: str) -> None:
        if time.monotonic() < self.deaf_until:
            return  # fault: commands go unanswered
        self.session.command(raw.encode())

    # -- faults ----------------------------------------------------------------------------
    def reset(self) -> None:
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if self.transport is not None:
            self.transport.abort()


class SimServer:
    """One simulated exchange on one port: owns the market model (and the task that moves it),
    every WebSocket connection with its server session, the REST handlers, the faults applied, and
    the counters tests and the demo read (accepted, rejected, overflows, events)."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.model = MarketModel(
            self.config.markets, self.config.seed, churn=self.config.churn, lifetime=self.config.lifetime
        )
        self.connections: list[SimConnection] = []
        self.accepted = 0
        self.rejected = 0
        self.reject_handshakes = 0
        self.overflows = 0
        self.events = 0
        self.faults_applied: list[Fault] = []
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = 0.0
        self.port = 0
        self.paused = False

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(WS_PATH, self._ws_handler)
        app.router.add_get(REST_PREFIX + "/markets", self._markets)
        app.router.add_get(REST_PREFIX + "/markets/{ticker}", self._market)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = int(server.sockets[0].getsockname()[1])
        self._started = time.monotonic()
        self._tasks = [asyncio.create_task(self._generate())]
        self._tasks += [asyncio.create_task(self._scheduled(f)) for f in self.config.faults]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for conn in list(self.connections):
            conn.closed = True
            with contextlib.suppress(Exception):
                await conn.ws.close()
        self._tasks.clear()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @property
    def ws_url(self) -> str:
        return endpoint_urls(self.config.host, self.port)[0]

    @property
    def rest_url(self) -> str:
        return endpoint_urls(self.config.host, self.port)[1]

    def sent_frames(self) -> list[bytes]:
        return [f for c in self.connections for f in c.sent]

    # -- the market ------------------------------------------------------------------------
    async def _generate(self) -> None:
        loop = asyncio.get_running_loop()
        last = last_advance = loop.time()
        carry = 0.0
        while True:
            await asyncio.sleep(0.005)
            now = loop.time()
            carry += (now - last) * self.config.rate
            last = now
            n = int(carry)
            carry -= n
            if self.paused:
                continue
            ts = time.time()
            for event in self.model.advance(ts, now - last_advance):
                self._publish(*event)
            last_advance = now
            for _ in range(n):
                for event in self.model.step(ts):
                    self._publish(*event)
            self.events += n

    def _publish(self, channel: str, ticker: str, kind: str, msg: dict[str, Any]) -> None:
        payload: bytes | None = None
        # Kalshi's documentation shows sending_ts_ms on ticker and lifecycle messages (not in the
        # AsyncAPI spec yet; seen live): when the exchange queued the frame.
        sending = int(time.time() * 1000) if channel in _SENDING_TS_CHANNELS else None
        for conn in self.connections:
            if channel in conn.session.by_channel:
                payload = payload or _encode(msg)  # (encoded once, for every subscriber)
                conn.session.deliver(channel, ticker, kind, payload, sending)

    # -- faults ----------------------------------------------------------------------------
    async def _scheduled(self, fault: Fault) -> None:
        await asyncio.sleep(max(0.0, fault.at - (time.monotonic() - self._started)))
        await self.inject(fault.kind, fault.arg, fault.connection)

    async def inject(self, kind: str, arg: float | None = None, connection: int | None = None) -> None:
        """Apply a fault now, to one connection (by accept order) or to every open one."""
        self.faults_applied.append(Fault(kind, time.monotonic() - self._started, arg, connection))
        log.info("sim: injecting fault %s (arg %s, connection %s)", kind, arg, connection)
        if kind == "auth":
            self.reject_handshakes += int(arg or 1)
            return
        targets = [c for c in self.connections if not c.closed and (connection is None or c.index == connection)]
        for conn in targets:
            if kind == "close":
                await conn.ws.close(code=1001, message=b"simulated close")
            elif kind == "reset":
                conn.reset()
            elif kind == "silence":
                conn.silent_until = time.monotonic() + (arg if arg is not None else 1e9)
            elif kind == "deaf":
                conn.deaf_until = time.monotonic() + (arg if arg is not None else 1e9)
            elif kind == "delay":
                conn.delay, conn.delay_until = (arg or 2.0), time.monotonic() + 5.0
            elif kind == "nonjson":
                conn.enqueue(b"simulated garbage: this frame is not JSON {")
            elif kind == "gap":
                sub = conn.session.pick()
                if sub is not None:
                    sub.skip += 1
            elif kind in ("error25", "error10"):
                sub = conn.session.pick()
                if sub is not None:
                    code = ErrorCode.BUFFER_OVERFLOW if kind == "error25" else ErrorCode.CHANNEL_ERROR
                    conn.session.terminate(sub, code)

    # -- auth ------------------------------------------------------------------------------
    def _auth_problem(self, request: web.Request) -> str | None:
        if self.reject_handshakes > 0:
            self.reject_handshakes -= 1
            return "simulated authentication rejection"
        keys = self.config.public_keys
        if keys is None:
            return None
        return handshake_problem(
            keys, request.headers, request.method, request.path, now=time.time(), max_skew=self.config.max_skew
        )

    @staticmethod
    def _unauthorized(details: str) -> web.Response:
        return web.json_response(unauthorized_body(details), status=401)

    # -- WebSocket --------------------------------------------------------------------------
    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        problem = self._auth_problem(request)
        if problem is not None:
            self.rejected += 1
            return self._unauthorized(problem)
        ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = SimConnection(self, ws, self.accepted, request.transport)
        self.accepted += 1
        self.connections.append(conn)
        tasks = [asyncio.create_task(conn.sender()), asyncio.create_task(conn.pinger())]
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    conn.command(msg.data)
                elif msg.type == WSMsgType.PING and time.monotonic() >= conn.silent_until:
                    await ws.pong(msg.data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            conn.closed = True
            conn._wake.set()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                    await task
            if not self.config.record_sent:
                self.connections.remove(conn)
        return ws

    # -- REST --------------------------------------------------------------------------------
    async def _markets(self, request: web.Request) -> web.Response:
        problem = self._auth_problem(request)
        if problem is not None:
            return self._unauthorized(problem)
        q = request.query
        try:
            limit = int(q.get("limit", self.config.page_limit_default))
            offset = int(base64.urlsafe_b64decode(q["cursor"]).decode()) if q.get("cursor") else 0
        except ValueError:
            return web.json_response(
                {"error": {"code": "bad_request", "message": "invalid limit or cursor"}}, status=400
            )
        if not 1 <= limit <= 1000:
            return web.json_response({"error": {"code": "bad_request", "message": "limit must be 1..1000"}}, status=400)
        markets = list(self.model.markets.values())
        if q.get("status"):
            wanted_status = {q["status"], "determined"} if q["status"] == "closed" else {q["status"]}
            markets = [m for m in markets if m.status in wanted_status]
        try:
            min_created = int(q.get("min_created_ts", 0))
            min_settled = int(q.get("min_settled_ts", 0))
        except ValueError:
            return web.json_response({"error": {"code": "bad_request", "message": "invalid timestamp"}}, status=400)
        if min_created:
            markets = [m for m in markets if m.created_ts >= min_created]
        if min_settled:
            markets = [m for m in markets if m.status == "settled" and m.settled_ts >= min_settled]
        if q.get("mve_filter") == "only":
            markets = []  # (the simulator lists no combo markets)
        if q.get("series_ticker"):
            markets = [m for m in markets if m.series == q["series_ticker"]]
        if q.get("event_ticker"):
            markets = [m for m in markets if m.event_ticker == q["event_ticker"]]
        if q.get("tickers"):
            wanted = set(q["tickers"].split(","))
            markets = [m for m in markets if m.ticker in wanted]
        limit = min(limit, self.config.page_limit_max)
        page = markets[offset : offset + limit]
        more = offset + limit < len(markets)
        cursor = base64.urlsafe_b64encode(str(offset + limit).encode()).decode() if more else ""
        return web.json_response({"markets": [self.model.market_json(m.ticker) for m in page], "cursor": cursor})

    async def _market(self, request: web.Request) -> web.Response:
        problem = self._auth_problem(request)
        if problem is not None:
            return self._unauthorized(problem)
        ticker = request.match_info["ticker"]
        if ticker not in self.model.markets:
            return web.json_response({"error": {"code": "not_found", "message": "market not found"}}, status=404)
        return web.json_response({"market": self.model.market_json(ticker)})
