"""The simulator's servers: Kalshi WebSocket v2 and REST, on one aiohttp port.

* ``GET /trade-api/ws/v2`` — RSA-PSS signed handshake (401 + JSON body when it does not verify),
  then subscribe / unsubscribe / update_subscription / list_subscriptions with Kalshi's reply
  shapes and error codes, per-sid ``seq``, and a ``heartbeat`` ping every ``ping_interval`` s.
* ``GET /trade-api/v2/markets`` (cursor pagination; ``status``, ``series_ticker``,
  ``event_ticker``, ``tickers`` filters) and ``GET /trade-api/v2/markets/{ticker}``.

Messages are built with the same vocabulary as the recorder's client
(:mod:`ssmd_connector.connectors.kalshi.protocol`). Each connection has an outbound buffer of
``buffer_limit`` frames; a reader too slow to drain it gets Kalshi's terminal error 25 on the
subscription that overflowed, as a real slow reader would.
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

from ..archive.line import within_depth
from ..connectors.kalshi import protocol as P
from ..connectors.kalshi.auth import H_KEY, H_SIGNATURE, H_TIMESTAMP, verify
from .faults import Fault
from .market import MarketModel

log = logging.getLogger(__name__)

SEQUENCED_CHANNELS = frozenset({P.ORDERBOOK_DELTA, P.TRADE, P.MARKET_LIFECYCLE_V2, P.MULTIVARIATE_MARKET_LIFECYCLE})
"""Channels whose messages carry ``seq`` (ticker does not)."""
_encode = msgspec.json.encode
_decode = msgspec.json.decode


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


@dataclass
class ServerSub:
    sid: int
    channel: str
    tickers: set[str] | None
    """None = every market (channels that allow no filter)."""
    order: list[str] = field(default_factory=list)
    seq: int = 0
    skip: int = 0

    def next_seq(self) -> int:
        self.seq += 1 + self.skip
        self.skip = 0
        return self.seq


class _InvalidParameter(Exception):
    """A command parameter is malformed (error 11)."""


class SimConnection:
    def __init__(self, server: SimServer, ws: web.WebSocketResponse, index: int, transport: Any) -> None:
        self.server = server
        self.ws = ws
        self.index = index
        self.transport = transport
        self.subs: dict[int, ServerSub] = {}
        self.by_channel: dict[str, list[ServerSub]] = {}
        self._next_sid = 1
        self.out: deque[tuple[float, bytes]] = deque()
        self._wake = asyncio.Event()
        self.silent_until = 0.0
        self.deaf_until = 0.0
        self.delay = 0.0
        self.delay_until = 0.0
        self.sent: list[bytes] = []
        self.closed = False

    # -- outbound --------------------------------------------------------------------------
    def enqueue(self, frame: bytes, sub: ServerSub | None = None) -> None:
        if sub is not None and len(self.out) >= self.server.config.buffer_limit:
            self._overflow(sub)
            return
        self.out.append((time.monotonic(), frame))
        self._wake.set()

    def _overflow(self, sub: ServerSub) -> None:
        if sub.sid not in self.subs:
            return
        seq = sub.next_seq() if sub.channel in SEQUENCED_CHANNELS else None
        self.drop_sub(sub.sid)
        self.out.append((time.monotonic(), P.error_frame(P.ErrorCode.BUFFER_OVERFLOW, sid=sub.sid, seq=seq)))
        self.server.overflows += 1
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

    # -- subscriptions ---------------------------------------------------------------------
    def add_sub(self, channel: str, tickers: list[str] | None) -> ServerSub:
        sub = ServerSub(self._next_sid, channel, None if tickers is None else set(tickers), list(tickers or []))
        self._next_sid += 1
        self.subs[sub.sid] = sub
        self.by_channel.setdefault(channel, []).append(sub)
        return sub

    def drop_sub(self, sid: int) -> None:
        sub = self.subs.pop(sid, None)
        if sub is not None:
            self.by_channel[sub.channel].remove(sub)

    def send(self, kind: str, msg: Any, sub: ServerSub | None = None, cmd_id: int | None = None) -> None:
        """A reply or data message; consumes a seq when the sub's channel is sequenced."""
        seq = sub.next_seq() if sub is not None and sub.channel in SEQUENCED_CHANNELS else None
        sid = sub.sid if sub is not None else None
        self.enqueue(P.message(kind, msg, sid=sid, seq=seq, cmd_id=cmd_id))

    def error(self, code: int, cmd_id: int | None, **extra: Any) -> None:
        self.enqueue(P.error_frame(code, cmd_id, **extra))

    def snapshot(self, sub: ServerSub, ticker: str, cmd_id: int | None = None) -> None:
        model = self.server.model
        if ticker in model.markets:
            self.send(P.ORDERBOOK_SNAPSHOT, model.snapshot_msg(ticker), sub, cmd_id)

    # -- commands --------------------------------------------------------------------------
    def command(self, raw: str) -> None:
        if time.monotonic() < self.deaf_until:
            return  # fault: commands go unanswered
        try:
            body = _decode(raw) if within_depth(raw.encode()) else None
        except msgspec.DecodeError:
            self.error(P.ErrorCode.UNABLE_TO_PROCESS, None)
            return
        if not isinstance(body, dict):
            self.error(P.ErrorCode.UNABLE_TO_PROCESS, None)
            return
        cmd_id = body.get("id") if isinstance(body.get("id"), int) else None
        cmd = body.get("cmd")
        params = body.get("params")
        handler = {
            P.SUBSCRIBE: self._subscribe,
            P.UNSUBSCRIBE: self._unsubscribe,
            P.UPDATE_SUBSCRIPTION: self._update,
            P.LIST_SUBSCRIPTIONS: self._list,
        }.get(cmd if isinstance(cmd, str) else "")
        if handler is None:
            self.error(P.ErrorCode.UNKNOWN_COMMAND, cmd_id)
            return
        if cmd != P.LIST_SUBSCRIPTIONS and not isinstance(params, dict):
            self.error(P.ErrorCode.PARAMS_REQUIRED, cmd_id)
            return
        handler(cmd_id, params if isinstance(params, dict) else {})

    def _market_filter(self, cmd_id: int | None, params: dict[str, Any]) -> tuple[bool, list[str] | None]:
        """The command's market filter; ``(False, None)`` after answering error 11 when malformed."""
        try:
            return True, self._tickers(params)
        except _InvalidParameter:
            self.error(P.ErrorCode.INVALID_PARAMETER, cmd_id)
            return False, None

    @staticmethod
    def _tickers(params: dict[str, Any]) -> list[str] | None:
        """The market filter (``None`` when absent); raises :class:`_InvalidParameter` when malformed."""
        one, many = params.get("market_ticker"), params.get("market_tickers")
        if one is not None and many is not None:
            raise _InvalidParameter
        if one is not None:
            if not isinstance(one, str) or not one:
                raise _InvalidParameter
            return [one]
        if many is not None:
            if not isinstance(many, list) or not many or not all(isinstance(t, str) for t in many):
                raise _InvalidParameter
            return list(dict.fromkeys(many))
        return None

    def _subscribe(self, cmd_id: int | None, params: dict[str, Any]) -> None:
        channels = params.get("channels")
        if not channels:
            self.error(P.ErrorCode.CHANNELS_REQUIRED, cmd_id)
            return
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            self.error(P.ErrorCode.INVALID_PARAMETER, cmd_id)
            return
        unknown = [c for c in channels if c not in P.KNOWN_CHANNELS]
        if unknown:
            self.error(P.ErrorCode.UNKNOWN_CHANNEL, cmd_id)
            return
        ok, tickers = self._market_filter(cmd_id, params)
        if not ok:
            return
        if P.ORDERBOOK_DELTA in channels and not tickers:
            self.error(P.ErrorCode.MARKET_TICKER_REQUIRED, cmd_id)
            return
        for channel in channels:
            sub = self.add_sub(channel, None if channel in P.GLOBAL_CHANNELS else tickers)
            self.enqueue(P.message(P.SUBSCRIBED, {"channel": channel, "sid": sub.sid}, cmd_id=cmd_id))
            if channel == P.ORDERBOOK_DELTA:
                for ticker in sub.order:
                    self.snapshot(sub, ticker)

    def _unsubscribe(self, cmd_id: int | None, params: dict[str, Any]) -> None:
        sids = params.get("sids")
        if not sids or not isinstance(sids, list):
            self.error(P.ErrorCode.SIDS_REQUIRED, cmd_id)
            return
        for sid in sids:
            sub = self.subs.get(sid) if isinstance(sid, int) else None
            if sub is None:
                self.error(P.ErrorCode.UNKNOWN_SID, cmd_id)
                continue
            seq = sub.next_seq()
            self.drop_sub(sub.sid)
            self.enqueue(P.message(P.UNSUBSCRIBED, None, sid=sub.sid, seq=seq, cmd_id=cmd_id))

    def _update(self, cmd_id: int | None, params: dict[str, Any]) -> None:
        action = params.get("action")
        if action is None:
            self.error(P.ErrorCode.ACTION_REQUIRED, cmd_id)
            return
        if action not in (P.ADD_MARKETS, P.DELETE_MARKETS, P.GET_SNAPSHOT):
            self.error(P.ErrorCode.UNSUPPORTED_ACTION, cmd_id)
            return
        sid, sids = params.get("sid"), params.get("sids")
        if (sid is None) == (sids is None) or (sids is not None and (not isinstance(sids, list) or len(sids) != 1)):
            self.error(P.ErrorCode.EXACTLY_ONE_SID, cmd_id)
            return
        sid = sid if sid is not None else sids[0]  # type: ignore[index]
        sub = self.subs.get(sid) if isinstance(sid, int) else None
        if sub is None:
            self.error(P.ErrorCode.UNKNOWN_SID, cmd_id)
            return
        if sub.channel in P.GLOBAL_CHANNELS or sub.channel not in (P.ORDERBOOK_DELTA, P.TICKER, P.TRADE):
            self.error(P.ErrorCode.UNSUPPORTED_ACTION, cmd_id)
            return
        ok, tickers = self._market_filter(cmd_id, params)
        if not ok:
            return
        if action == P.GET_SNAPSHOT:
            if sub.channel != P.ORDERBOOK_DELTA:
                self.error(P.ErrorCode.UNSUPPORTED_ACTION, cmd_id)
                return
            for ticker in tickers or list(sub.order):
                self.snapshot(sub, ticker, cmd_id)
            return
        if not tickers:
            self.error(P.ErrorCode.MARKET_TICKER_REQUIRED, cmd_id)
            return
        if sub.tickers is None:
            sub.tickers, sub.order = set(), []
        added = []
        for ticker in tickers:
            if action == P.ADD_MARKETS and ticker not in sub.tickers:
                sub.tickers.add(ticker)
                sub.order.append(ticker)
                added.append(ticker)
            elif action == P.DELETE_MARKETS and ticker in sub.tickers:
                sub.tickers.discard(ticker)
                sub.order.remove(ticker)
        self.send(P.OK, {"market_tickers": list(sub.order)}, sub, cmd_id)
        if sub.channel == P.ORDERBOOK_DELTA:
            for ticker in added:
                self.snapshot(sub, ticker)

    def _list(self, cmd_id: int | None, _params: dict[str, Any]) -> None:
        listing = [{"channel": s.channel, "sid": s.sid} for s in self.subs.values()]
        self.enqueue(P.message(P.OK, listing, cmd_id=cmd_id))

    # -- faults ----------------------------------------------------------------------------
    def pick_sub(self) -> ServerSub | None:
        for channel in (P.ORDERBOOK_DELTA, P.TRADE, P.MARKET_LIFECYCLE_V2, P.TICKER):
            if self.by_channel.get(channel):
                return self.by_channel[channel][0]
        return None

    def reset(self) -> None:
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if self.transport is not None:
            self.transport.abort()


class SimServer:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.model = MarketModel(self.config.markets, self.config.seed)
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
        app.router.add_get(P.WS_PATH, self._ws_handler)
        app.router.add_get(P.REST_PREFIX + "/markets", self._markets)
        app.router.add_get(P.REST_PREFIX + "/markets/{ticker}", self._market)
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
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}{P.WS_PATH}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.config.host}:{self.port}{P.REST_PREFIX}"

    def sent_frames(self) -> list[bytes]:
        return [f for c in self.connections for f in c.sent]

    # -- the market ------------------------------------------------------------------------
    async def _generate(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        carry = 0.0
        while True:
            await asyncio.sleep(0.005)
            now = loop.time()
            carry += (now - last) * self.config.rate
            last = now
            n = int(carry)
            carry -= n
            if self.paused or not n:
                continue
            ts = time.time()
            for _ in range(n):
                for event in self.model.step(ts):
                    self._publish(*event)
            self.events += n

    def _publish(self, channel: str, ticker: str, kind: str, msg: dict[str, Any]) -> None:
        payload: bytes | None = None
        sequenced = channel in SEQUENCED_CHANNELS
        for conn in self.connections:
            for sub in conn.by_channel.get(channel, ()):
                if sub.tickers is not None and ticker not in sub.tickers:
                    continue
                if payload is None:
                    payload = _encode(msg)
                seq = sub.next_seq() if sequenced else None
                conn.enqueue(P.render(kind, payload, sid=sub.sid, seq=seq), sub)

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
                sub = conn.pick_sub()
                if sub is not None:
                    sub.skip += 1
            elif kind in ("error25", "error10"):
                sub = conn.pick_sub()
                if sub is not None:
                    code = P.ErrorCode.BUFFER_OVERFLOW if kind == "error25" else P.ErrorCode.CHANNEL_ERROR
                    seq = sub.next_seq() if sub.channel in SEQUENCED_CHANNELS else None
                    conn.drop_sub(sub.sid)
                    conn.enqueue(P.error_frame(code, sid=sub.sid, seq=seq))

    # -- auth ------------------------------------------------------------------------------
    def _auth_problem(self, request: web.Request) -> str | None:
        if self.reject_handshakes > 0:
            self.reject_handshakes -= 1
            return "simulated authentication rejection"
        keys = self.config.public_keys
        if keys is None:
            return None
        key_id = request.headers.get(H_KEY)
        ts = request.headers.get(H_TIMESTAMP)
        sig = request.headers.get(H_SIGNATURE)
        if not key_id or not ts or not sig:
            return "missing KALSHI-ACCESS-* headers"
        if key_id not in keys:
            return "unknown API key id"
        if not ts.isdigit() or abs(int(ts) / 1000 - time.time()) > self.config.max_skew:
            return "timestamp outside the allowed window"
        if not verify(keys[key_id], ts, request.method, request.path, sig):
            return "INCORRECT_API_KEY_SIGNATURE"
        return None

    @staticmethod
    def _unauthorized(details: str) -> web.Response:
        body = {"error": {"code": "authentication_error", "message": "authentication error", "details": details}}
        return web.json_response(body, status=401)

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
            markets = [m for m in markets if m.status == q["status"]]
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
