"""``ssmd replay``: an archive served as Kalshi's WebSocket v2, one clock per connection.

A client connects to ``/trade-api/ws/v2`` and subscribes as it would on Kalshi. Its clock starts
at its first subscription, at ``--from`` (or the archive's start): from then on every archived
message of the channels and markets it subscribed reaches it in receive order, paced by the
archived receive times (divided by ``speed``; ``None``: as fast as the socket takes), with ``sid`` and a
gap-free ``seq`` of its own and the ``msg`` byte for byte. Commands, replies and errors are the
server session's (:class:`~ssmd_connector.kalshi.server.ServerSession`, the simulator's too);
order-book snapshots — on subscribe and for ``get_snapshot`` — are the book at the connection's
replay time (:mod:`.books`). At the end of the window the connection is closed normally (1000).
Where the archive has an order-book gap (ledger), that market's deltas are held back until its
next archived snapshot (:mod:`.gaps`), as the exchange would have resent the book.

``GET /trade-api/v2/markets`` and ``/markets/{ticker}`` answer on the same port from an index
built before the server listens (:mod:`.markets`), as of the server's start time (``?from=`` for
another).

URL query parameters override the defaults for one connection, for clients that can set a URL:
``?from=2026-11-24T10:00&to=…&speed=10`` (``speed=max``: as fast as it reads). Several
connections replay side by side, each from its own start. The archive is read in a worker
thread a batch at a time, and a connection reads no further ahead than its socket takes. Frames
go out through picows, the WebSocket library the recorder uses: replay must never be the slow
part of a backtest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from ..archive.line import ts_ns
from ..kalshi.auth import handshake_problem, unauthorized_body
from ..kalshi.server import ServerSession
from ..kalshi.wire import (
    EVENT_LIFECYCLE,
    MARKET_LIFECYCLE_V2,
    MULTIVARIATE_MARKET_LIFECYCLE,
    ORDERBOOK_DELTA,
    ORDERBOOK_SNAPSHOT,
    REST_PREFIX,
    TICKER,
    TRADE,
    WS_PATH,
    endpoint_urls,
)
from .books import Books
from .gaps import Holds, Hole, ledger_holes
from .markets import BadQuery, MarketIndex
from .source import batches, messages

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

FLUSH_BYTES = 256 << 10
"""Frames written to the socket in one go; then, if the client is behind, the replay waits."""
CLOSE_WAIT = 60.0
"""Seconds a client has to answer the closing handshake before it is disconnected. Generous on
purpose: a backtest's code often lags behind its socket (its WebSocket library has read the
close long before the application gets to it), and a library whose close reply meets a dropped
connection reports an abnormal close (1006) instead of the normal end (1000)."""
_BOOK_KINDS = frozenset({ORDERBOOK_DELTA, ORDERBOOK_SNAPSHOT})


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


class _Connection(WSListener):
    """One client: its subscriptions (the server session), its books, its clock."""

    def __init__(self, server: ReplayServer, window: Window) -> None:
        self.server = server
        self.window = window
        self.books = Books()
        self.holds = Holds(list(server.holes))
        self.session = ServerSession(self.emit, self._snapshot)
        self.transport: WSTransport | None = None
        self.sent = 0
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.replay: asyncio.Task[None] | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.disconnected = asyncio.Event()
        self.stop = threading.Event()
        """Set when the client is gone: the reading thread stops at its next block of lines."""

    # -- picows callbacks --------------------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.server.connections += 1
        self.server.open.add(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            self.session.command(frame.get_payload_as_bytes())
            self.flush()
            if self.replay is None and self.session.subs:
                self.replay = asyncio.get_running_loop().create_task(self._run())
        elif frame.msg_type == WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.stop.set()
        self.writable.set()
        self.disconnected.set()
        self.server.open.discard(self)
        if self.replay is not None and not self.replay.done():
            self.replay.cancel()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def _snapshot(self, ticker: str) -> Any:
        """The book to send for ``ticker`` now — none while the archive's book of it is not known
        (inside a hole: sending what it holds would present a book missing deltas as whole; the
        market's next archived snapshot will reach the client instead)."""
        if self.holds.active and self.holds.is_held(ticker):
            log.warning("replay: no snapshot of %s now: the archive's book of it is not known here (a hole)", ticker)
            return None
        return self.books.snapshot(ticker)

    # -- frames out --------------------------------------------------------------------------
    def emit(self, frame: bytes, sub: object = None) -> None:
        """Queue a frame, behind its WebSocket header; :meth:`flush` writes what is queued in one go."""
        n = len(frame)
        head = _HEADERS.get(n)
        if head is None:
            head = _text_header(n)
            if n < 1 << 16:
                _HEADERS[n] = head
        self.pending += (head, frame)
        self.pending_bytes += n

    def flush(self) -> None:
        """Write every queued frame with a single write to the socket.

        Why not ``WSTransport.send`` per frame: picows makes one ``send()`` system call per frame,
        which at replay rates is most of the cost (measured in ``bench/replay.py``). Server frames
        are unmasked, so a text frame is a two-to-ten-byte header (RFC 6455 §5.2) and the payload
        (queued by :meth:`emit` side by side: joined once, here, with no copy per frame); picows's
        own sends (pings, pongs, the close) share the transport and stay in order."""
        pending = self.pending
        if not pending:
            return
        transport = self.transport
        if transport is not None and not self.disconnected.is_set() and not transport.is_close_frame_sent:
            transport.underlying_transport.write(b"".join(pending))
            self.sent += len(pending) // 2
        pending.clear()
        self.pending_bytes = 0

    def close(self, code: WSCloseCode, reason: str) -> None:
        self.flush()
        transport = self.transport
        if transport is not None and not transport.is_close_frame_sent and not self.disconnected.is_set():
            transport.send_close(code, reason.encode())

    async def _run(self) -> None:
        try:
            await self._replay()
        except asyncio.CancelledError:
            return
        except Exception:  # a bug, or an archive it cannot read: said, and the client told
            log.exception("replay failed")
            self.close(WSCloseCode.INTERNAL_ERROR, "replay failed")
        else:
            self.flush()
            self.server.finished += 1
            log.info("replay finished after %d frames: closing the connection", self.sent)
            self.close(WSCloseCode.OK, "end of replay")
        await self._await_close()

    async def _await_close(self) -> None:
        """Give the client :data:`CLOSE_WAIT` to answer the close, then disconnect."""
        try:
            await asyncio.wait_for(self.disconnected.wait(), CLOSE_WAIT)
        except TimeoutError:
            if self.transport is not None:
                self.transport.disconnect()

    async def _replay(self) -> None:
        """Deliver the archive to this connection's subscriptions, paced by its own clock."""
        cfg, session, window, books = self.server.config, self.session, self.window, self.books
        loop = asyncio.get_running_loop()
        holds = self.holds
        stream = batches(cfg.root, cfg.feed, window.start_ns, window.end_ns, self.stop)
        began = 0.0
        first_ns = window.start_ns or None
        speed = window.speed
        deliver = session.deliver
        channel_of = CHANNEL_OF
        book_kinds = _BOOK_KINDS
        while batch := await asyncio.to_thread(next, stream, None):
            for m in batch:  # (the hot loop: attribute reads and local names only)
                kind = m.kind
                book = kind in book_kinds
                if not began and m.live:  # the clock starts with the first message of the window
                    began = loop.time()
                    first_ns = first_ns or ts_ns(m.ts)
                    for sub in session.by_channel.get(ORDERBOOK_DELTA, ()):  # the books as the window opens
                        for ticker in sub.order:
                            session.snapshot(sub, ticker)
                ticker = m.head.market_ticker
                if book:
                    if m.ts >= holds.due:
                        holds.check(m.ts, m.sid, m.seq, ticker)
                    if holds.active and holds.holds(kind, ticker, m.ts):
                        continue
                if not m.live:  # before the window: only the books it starts with
                    if book:
                        books.apply(m)
                    continue
                if speed is not None:
                    assert first_ns is not None
                    due = began + (ts_ns(m.ts) - first_ns) / 1e9 / speed
                    if (wait := due - loop.time()) > 0:
                        self.flush()
                        await asyncio.sleep(wait)
                        if self.stop.is_set():
                            return
                if book:
                    books.apply(m)
                channel = channel_of.get(kind)
                if channel is not None:
                    deliver(channel, ticker, kind, m.msg)
                if self.pending_bytes >= FLUSH_BYTES:  # bytes, not frames, bound what waits
                    self.flush()
                    if not self.writable.is_set():
                        await self.writable.wait()
                    if self.stop.is_set():
                        return
            self.flush()
            if not self.writable.is_set():  # the client reads slower than the archive is read
                await self.writable.wait()
            if self.stop.is_set():
                return


class ReplayServer:
    """Owns the listening socket, the archive's market index and every replaying connection."""

    def __init__(self, config: ReplayConfig) -> None:
        self.config = config
        self.port = 0
        self.connections = 0
        self.finished = 0
        self.open: set[_Connection] = set()
        self.holes: list[Hole] = []
        self.index = MarketIndex()
        self._server: asyncio.Server | None = None

    @property
    def ws_url(self) -> str:
        return endpoint_urls(self.config.host, self.port)[0]

    @property
    def rest_url(self) -> str:
        return endpoint_urls(self.config.host, self.port)[1]

    async def start(self) -> None:
        cfg = self.config
        self.holes = await asyncio.to_thread(ledger_holes, cfg.root, cfg.feed)
        self.index = await asyncio.to_thread(_index, cfg)
        self._server = await ws_create_server(
            self._route, cfg.host, cfg.port, max_frame_size=1 << 20, websocket_handshake_timeout=10
        )
        sockets: tuple[Any, ...] = tuple(self._server.sockets or ())
        self.port = sockets[0].getsockname()[1] if sockets else cfg.port

    async def stop(self) -> None:
        for conn in list(self.open):
            conn.stop.set()
            conn.close(WSCloseCode.GOING_AWAY, "replay server stopping")
            if conn.transport is not None:
                conn.transport.disconnect()
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    # -- requests ----------------------------------------------------------------------------
    def _route(self, request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener | None:
        url = urlsplit(request.path.decode("latin-1"))
        path, query = unquote(url.path), dict(parse_qsl(url.query))
        if path != WS_PATH and not path.startswith(REST_PREFIX + "/markets"):
            return _respond(HTTPStatus.NOT_FOUND, _error("not_found", f"no such endpoint: {path}"))
        problem = self._auth_problem(request, url.path)  # (signed as sent, before decoding)
        if problem is not None:
            return _respond(HTTPStatus.UNAUTHORIZED, unauthorized_body(problem))
        try:
            window = self._window(query)
        except ValueError as exc:
            return _respond(HTTPStatus.BAD_REQUEST, _error("bad_request", f"invalid replay parameter: {exc}"))
        if path == WS_PATH:
            return _Connection(self, window)
        return self._rest(path, query, window.start_ns or self._archive_start())

    def _rest(self, path: str, query: dict[str, str], ns: int) -> WSUpgradeResponseWithListener:
        if path in (REST_PREFIX + "/markets", REST_PREFIX + "/markets/"):
            try:
                return _respond(HTTPStatus.OK, self.index.listing(ns, query))
            except BadQuery as exc:
                return _respond(HTTPStatus.BAD_REQUEST, _error("bad_request", str(exc)))
        ticker = path.removeprefix(REST_PREFIX + "/markets/")
        found = self.index.market(ticker, ns) if "/" not in ticker else None
        if found is None:
            return _respond(HTTPStatus.NOT_FOUND, _error("not_found", "market not found"))
        return _respond(HTTPStatus.OK, found)

    def _archive_start(self) -> int:
        firsts = [k.first_ns for k in self.index.markets.values()]
        return min(firsts) if firsts else 0

    def _auth_problem(self, request: WSUpgradeRequest, path: str) -> str | None:
        keys = self.config.public_keys
        if keys is None:
            return None
        method = request.method.decode("latin-1")
        headers = request.headers  # (case-insensitive, as HTTP header names are)
        return handshake_problem(keys, headers, method, path, now=time.time(), max_skew=self.config.max_skew)

    def _window(self, q: dict[str, str]) -> Window:
        """The server's window, with the URL's ``from`` / ``to`` / ``speed`` in its place."""
        cfg = self.config
        start = _ns(q["from"]) if "from" in q else cfg.start_ns
        end = _ns(q["to"]) if "to" in q else cfg.end_ns
        speed = cfg.speed
        if "speed" in q:
            speed = None if q["speed"] == "max" else float(q["speed"])
            if speed is not None and not speed > 0:
                raise ValueError(f"speed must be above 0 or 'max', got {q['speed']!r}")
        return Window(start, end, speed)


def _index(cfg: ReplayConfig) -> MarketIndex:
    index = MarketIndex()
    for m in messages(cfg.root, cfg.feed):
        index.add(m)
    return index


def _respond(status: HTTPStatus, body: Any) -> WSUpgradeResponseWithListener:
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}  # (picows adds Content-Length)
    if status >= 400:
        response = WSUpgradeResponse.create_error_response(status, data, headers)
    else:
        response = WSUpgradeResponse.create_ok_response(data, headers)
    return WSUpgradeResponseWithListener(response, None)


_HEADERS: dict[int, bytes] = {}
"""Frame headers by payload length, made once each (lengths up to 64 KiB)."""


def _text_header(n: int) -> bytes:
    """The header of an unmasked, final text frame carrying ``n`` bytes (RFC 6455 §5.2)."""
    if n < 126:
        return bytes((0x81, n))
    if n < 1 << 16:
        return b"\x81\x7e" + n.to_bytes(2, "big")
    return b"\x81\x7f" + n.to_bytes(8, "big")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _ns(text: str) -> int:
    """A URL's time (ISO 8601, UTC unless it says otherwise) → ns since the epoch."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
