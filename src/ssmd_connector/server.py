"""``/health``, ``/ready`` and ``/metrics`` in the recorder's own process (aiohttp).

* ``/health`` answers 200 while the pipeline makes progress: the writer task is alive and has
  completed a cycle within ``stall_after`` seconds (it cycles at least once per flush interval,
  even when idle, so a writer stuck in I/O shows here), and no component is failing on an
  internal error (or did within the last minute). Otherwise 503, with the problem.
* ``/ready`` answers 200 when every connection is open and nothing is failing, 503 with the
  reasons otherwise.
* ``/metrics`` is the Prometheus text exposition of :mod:`ssmd_connector.metrics`.

The port is often reachable by more than the monitoring system, and it shares the process — and
its file descriptors — with the recorder, so it must not be a way to stall recording, nor to lock
the probes out: at most :data:`MAX_CONNECTIONS` connections at once — when full, a new connection
takes the place of the oldest one that has not sent a complete request yet (an idle or trickling
connection cannot hold a place against a probe), and is refused only when every place is
serving a request; each connection serves one request and is closed if that request is not
complete within :data:`CONNECTION_SECONDS`. Refused, evicted and timed-out connections and
malformed requests are not logged one by one: at most one summary line a minute.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ._version import __version__
from .errors import SsmdError
from .runner import Runner

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
"""Connections served at once; a scraper and a probe or two need a handful."""

CONNECTION_SECONDS = 5.0
"""A connection must have sent its request and received the answer within this many seconds."""

SUMMARY_EVERY = 60.0
"""At most one log line per this many seconds about rejected or timed-out connections."""


class AddressInUse(SsmdError):
    """``--health-addr`` cannot be listened on (a usage error: exit code 2)."""


class HealthSource(Protocol):
    """What a process behind the health port says about itself. The recorder and the archiver
    share one server (connection guard, exposition, address errors) and differ only here."""

    def health(self) -> tuple[str | None, dict[str, Any]]:
        """The problem that makes ``/health`` answer 503 (``None``: healthy), and the body's fields."""
        ...

    def not_ready_reasons(self) -> list[str]: ...

    def ready_body(self) -> dict[str, Any]:
        """Extra fields of a 200 ``/ready`` answer."""
        ...

    def before_scrape(self) -> None:
        """Bring values read at scrape time up to date (cheap: runs on every ``/metrics``)."""
        ...


class RecorderHealth:
    """The recorder's :class:`HealthSource`: its :class:`~ssmd_connector.runner.Runner`'s state."""

    def __init__(self, runner: Runner, *, stall_after: float = 10.0) -> None:
        self._runner = runner
        self._stall_after = stall_after

    def health(self) -> tuple[str | None, dict[str, Any]]:
        r = self._runner
        stats = r.stats
        now = time.monotonic()
        drain = r.drain_task
        problem = None
        internal = r.health_problems()
        if drain is not None and drain.done():
            problem = "the writer task has stopped"
        elif now - r.last_drain > self._stall_after:
            # The writer task loops at least once per flush interval (<= 1 s), idle or not.
            problem = f"the writer has not drained the queue for {now - r.last_drain:.0f}s"
        elif internal:
            problem = "internal error: " + "; ".join(internal)
        body: dict[str, Any] = {
            "feed": r.feed,
            "messages": stats.messages,
            "bytes_written": stats.bytes_written,
            "queue_depth": len(r.queue),
            "connected": stats.connected,
            "last_message_age_seconds": (
                round(time.time() - stats.last_message_ns / 1e9, 3) if stats.last_message_ns else None
            ),
        }
        return problem, body

    def not_ready_reasons(self) -> list[str]:
        return self._runner.not_ready_reasons()

    def ready_body(self) -> dict[str, Any]:
        return {"connections": sorted(self._runner.states)}

    def before_scrape(self) -> None:
        self._runner.stats.queue_depth = len(self._runner.queue)


class HealthServer:
    """The health port of one recorder (or archiver): answers ``/health``, ``/ready`` and
    ``/metrics`` from its :class:`HealthSource` (a :class:`~ssmd_connector.runner.Runner` is taken
    as the recorder's) and the metrics registry, behind its own :class:`ConnectionGuard` (it owns
    the listening socket and every connection on it)."""

    def __init__(
        self, source: Runner | HealthSource, registry: CollectorRegistry, *, stall_after: float = 10.0
    ) -> None:
        self._source: HealthSource = (
            RecorderHealth(source, stall_after=stall_after) if isinstance(source, Runner) else source
        )
        self._registry = registry
        self._started = time.monotonic()
        self._site: GuardedSite | None = None
        self.guard = ConnectionGuard()
        self._app_runner: web.AppRunner | None = None
        self.port = 0

    def _health_body(self) -> tuple[int, dict[str, Any]]:
        problem, fields = self._source.health()
        body: dict[str, Any] = {
            "status": "ok" if problem is None else "stalled",
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - self._started, 3),
            **fields,
        }
        if problem:
            body["problem"] = problem
        return (200 if problem is None else 503), body

    async def _health(self, _request: web.Request) -> web.Response:
        status, body = self._health_body()
        return web.json_response(body, status=status)

    async def _ready(self, _request: web.Request) -> web.Response:
        reasons = self._source.not_ready_reasons()
        if reasons:
            return web.json_response({"ready": False, "reasons": reasons}, status=503)
        return web.json_response({"ready": True, **self._source.ready_body()})

    async def _metrics(self, _request: web.Request) -> web.Response:
        self._source.before_scrape()
        return web.Response(body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @web.middleware
    async def _served(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Marks the connection as serving a complete request (it may no longer be evicted)."""
        self.guard.serving(request.transport)
        response: web.StreamResponse = await handler(request)
        return response

    async def start(self, host: str, port: int) -> None:
        app = web.Application(middlewares=[self._served])
        self.guard.quiet_bad_requests()
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/metrics", self._metrics)
        # keepalive_timeout=0: one request per connection (the guard's time limit is per connection).
        self._app_runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=0)
        await self._app_runner.setup()
        self._site = GuardedSite(self._app_runner, host, port, self.guard)
        try:
            await self._site.start()
        except OSError as exc:
            await self._app_runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(
                    f"--health-addr {host}:{port}: address already in use"
                    " (pick another port, or stop the other process)"
                ) from None
            raise AddressInUse(f"--health-addr {host}:{port}: cannot listen: {exc.strerror or exc}") from None
        self.port = self._site.port

    async def stop(self) -> None:
        self.guard.summarise(force=True)
        self.guard.quiet_bad_requests(False)
        if self._app_runner is not None:
            await self._app_runner.cleanup()


class ConnectionGuard:
    """The health server's limits: connections at once, time per connection, quiet logs."""

    def __init__(
        self,
        max_connections: int = MAX_CONNECTIONS,
        seconds: float = CONNECTION_SECONDS,
        summary_every: float = SUMMARY_EVERY,
    ) -> None:
        self.max_connections = max_connections
        self.seconds = seconds
        self.summary_every = summary_every
        self.rejected = 0
        self.evicted = 0
        self.timed_out = 0
        self.bad_requests = 0
        self.accept_errors = 0
        self._connections: dict[_Guarded, None] = {}
        """Open connections, oldest first."""
        self._closing = 0
        """Connections closed by the guard whose sockets are not released yet."""
        self._room = asyncio.Event()
        self._room.set()
        self._by_transport: dict[asyncio.BaseTransport, _Guarded] = {}
        self._reported = (0, 0, 0, 0)
        self._last_summary = time.monotonic()
        self._filter = _CountBadRequests(self)

    @property
    def open(self) -> int:
        return len(self._connections)

    async def room(self) -> None:
        """Wait until one more connection may be accepted: the places, plus a few connections
        being closed to make room, bound the sockets the health port holds."""
        while len(self._connections) + self._closing >= self.max_connections + 8:
            self._room.clear()
            await self._room.wait()

    def admit(self, conn: _Guarded, transport: asyncio.BaseTransport) -> bool:
        """Take ``conn``, evicting the oldest connection without a complete request if full."""
        if len(self._connections) >= self.max_connections:
            idle = next((c for c in self._connections if not c.served), None)
            if idle is None:
                self.rejected += 1
                self.summarise()
                self.closing(1)
                return False
            self.evicted += 1
            idle.abort()
        self._connections[conn] = None
        self._by_transport[transport] = conn
        return True

    def closing(self, n: int) -> None:
        self._closing += n
        if n < 0:
            self._room.set()

    def release(self, conn: _Guarded, transport: asyncio.BaseTransport | None) -> None:
        self._connections.pop(conn, None)
        if transport is not None:
            self._by_transport.pop(transport, None)
        self._room.set()

    def serving(self, transport: asyncio.BaseTransport | None) -> None:
        conn = self._by_transport.get(transport) if transport is not None else None
        if conn is not None:
            conn.served = True

    def quiet_bad_requests(self, on: bool = True) -> None:
        """Malformed requests make aiohttp log a traceback each; count them instead."""
        logger = logging.getLogger("aiohttp.server")
        if on:
            logger.addFilter(self._filter)
        else:
            logger.removeFilter(self._filter)

    def summarise(self, *, force: bool = False) -> None:
        """One line for what happened since the last one (never one line per connection)."""
        now = time.monotonic()
        if not force and now - self._last_summary < self.summary_every:
            return
        counts = (self.rejected, self.evicted, self.timed_out, self.bad_requests)
        rejected, evicted, timed_out, bad = (n - before for n, before in zip(counts, self._reported, strict=True))
        if rejected or evicted or timed_out or bad:
            log.warning(
                "health server: %d connection(s) refused (all %d places serving), %d idle one(s) closed for a new "
                "one, %d closed after %gs without a complete request, %d malformed request(s), in the last %.0fs",
                rejected,
                self.max_connections,
                evicted,
                timed_out,
                self.seconds,
                bad,
                now - self._last_summary,
            )
        self._reported = counts
        self._last_summary = now


class _CountBadRequests(logging.Filter):
    def __init__(self, guard: ConnectionGuard) -> None:
        super().__init__()
        self._guard = guard

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            self._guard.bad_requests += 1
            self._guard.summarise()
            return False
        return True


class _Guarded(asyncio.Protocol):
    """One connection to the health server under the guard's rules; HTTP is aiohttp's."""

    def __init__(self, guard: ConnectionGuard, inner: RequestHandler) -> None:
        self._guard = guard
        self._inner: RequestHandler | None = inner
        self._transport: asyncio.BaseTransport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.served = False
        """A complete request arrived: it is being answered (never evicted)."""
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        if not guard.admit(self, transport):
            self._refused, self._inner = True, None
            transport.abort()  # type: ignore[attr-defined]
            return
        self._transport = transport
        self._deadline = asyncio.get_running_loop().call_later(guard.seconds, self._expire)
        assert self._inner is not None
        self._inner.connection_made(transport)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()  # type: ignore[attr-defined]

    def _expire(self) -> None:
        self._guard.timed_out += 1
        self._guard.summarise()
        self.abort()

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> None:
        if self._inner is not None:
            self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            self._guard.closing(-1)
            return
        if self._inner is None:
            return
        self._guard.release(self, self._transport)
        if self._deadline is not None:
            self._deadline.cancel()
        inner, self._inner = self._inner, None
        inner.connection_lost(exc)


class GuardedSite(web.BaseSite):
    """aiohttp's HTTP on sockets this site accepts itself, one connection at a time and only while
    the guard has room — so however fast connections arrive, the excess waits in the kernel's
    listen queue (no file descriptor of ours), never in the process."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, backlog=MAX_CONNECTIONS)
        self._host, self._port, self._guard = host, port, guard
        self._sockets: list[socket.socket] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        return int(self._sockets[0].getsockname()[1]) if self._sockets else 0

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self._host or None, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address[0], self._port, *address[2:]))
                sock.listen(self._backlog)
                sock.setblocking(False)
                if not self._port:  # port 0: every address on the port the first one got
                    self._port = sock.getsockname()[1]
        except OSError:
            self._close_sockets()
            raise
        self._tasks = [asyncio.create_task(self._accept(sock)) for sock in self._sockets]

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        guard = self._guard
        server = self._runner.server
        assert server is not None
        while True:
            await guard.room()
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError:  # e.g. out of file descriptors: counted, retried shortly, never a log per event
                guard.accept_errors += 1
                guard.summarise()
                await asyncio.sleep(0.1)
                continue
            try:
                await loop.connect_accepted_socket(lambda: _Guarded(guard, server()), conn)
            except OSError:
                conn.close()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._close_sockets()
        self._runner._unreg_site(self)
