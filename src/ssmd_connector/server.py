"""``/health``, ``/ready`` and ``/metrics`` in the recorder's own process (aiohttp).

* ``/health`` answers 200 while the pipeline makes progress: the writer task is alive and has
  completed a cycle within ``stall_after`` seconds (it cycles at least once per flush interval,
  even when idle, so a writer stuck in I/O shows here), and no component is failing on an
  internal error (or did within the last minute). Otherwise 503, with the problem.
* ``/ready`` answers 200 when every connection is open and nothing is failing, 503 with the
  reasons otherwise.
* ``/metrics`` is the Prometheus text exposition of :mod:`ssmd_connector.metrics`.

The port is often reachable by more than the monitoring system, and it shares the process — and
its file descriptors — with the recorder, so it must not be a way to stall recording: at most
:data:`MAX_CONNECTIONS` connections at once (more are closed as they arrive), each connection
serves one request and is closed if that request is not complete within
:data:`CONNECTION_SECONDS`. Rejected and timed-out connections are not logged one by one: at most
one summary line a minute.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ._version import __version__
from .errors import SsmdError
from .runner import Runner

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
"""Connections served at once; a scraper and a probe or two need a handful."""

CONNECTION_SECONDS = 10.0
"""A connection must have sent its request and received the answer within this many seconds."""

SUMMARY_EVERY = 60.0
"""At most one log line per this many seconds about rejected or timed-out connections."""


class AddressInUse(SsmdError):
    """``--health-addr`` cannot be listened on (a usage error: exit code 2)."""


class HealthServer:
    def __init__(self, runner: Runner, registry: CollectorRegistry, *, stall_after: float = 10.0) -> None:
        self._runner = runner
        self._registry = registry
        self._stall_after = stall_after
        self._started = time.monotonic()
        self._site: GuardedSite | None = None
        self.guard = ConnectionGuard()
        self._app_runner: web.AppRunner | None = None
        self.port = 0

    def _health_body(self) -> tuple[int, dict[str, Any]]:
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
            "status": "ok" if problem is None else "stalled",
            "version": __version__,
            "feed": r.feed,
            "uptime_seconds": round(now - self._started, 3),
            "messages": stats.messages,
            "bytes_written": stats.bytes_written,
            "queue_depth": len(r.queue),
            "connected": stats.connected,
            "last_message_age_seconds": (
                round(time.time() - stats.last_message_ns / 1e9, 3) if stats.last_message_ns else None
            ),
        }
        if problem:
            body["problem"] = problem
        return (200 if problem is None else 503), body

    async def _health(self, _request: web.Request) -> web.Response:
        status, body = self._health_body()
        return web.json_response(body, status=status)

    async def _ready(self, _request: web.Request) -> web.Response:
        reasons = self._runner.not_ready_reasons()
        if reasons:
            return web.json_response({"ready": False, "reasons": reasons}, status=503)
        return web.json_response({"ready": True, "connections": sorted(self._runner.states)})

    async def _metrics(self, _request: web.Request) -> web.Response:
        self._runner.stats.queue_depth = len(self._runner.queue)
        return web.Response(body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
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
        server = self._site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.guard.summarise(force=True)
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
        self.open = 0
        self.rejected = 0
        self.timed_out = 0
        self._reported = (0, 0)
        self._last_summary = time.monotonic()

    def summarise(self, *, force: bool = False) -> None:
        """One line for what happened since the last one (never one line per connection)."""
        now = time.monotonic()
        if not force and now - self._last_summary < self.summary_every:
            return
        rejected, timed_out = self.rejected - self._reported[0], self.timed_out - self._reported[1]
        if rejected or timed_out:
            log.warning(
                "health server: %d connection(s) refused (limit %d at once), %d closed after %gs without a "
                "complete request, in the last %.0fs",
                rejected,
                self.max_connections,
                timed_out,
                self.seconds,
                now - self._last_summary,
            )
        self._reported = (self.rejected, self.timed_out)
        self._last_summary = now


class _Guarded(asyncio.Protocol):
    """One connection to the health server under the guard's rules; HTTP is aiohttp's."""

    def __init__(self, guard: ConnectionGuard, inner: RequestHandler) -> None:
        self._guard = guard
        self._inner: RequestHandler | None = inner
        self._transport: asyncio.BaseTransport | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        if guard.open >= guard.max_connections:
            guard.rejected += 1
            guard.summarise()
            self._inner = None
            transport.abort()  # type: ignore[attr-defined]
            return
        guard.open += 1
        self._transport = transport
        self._deadline = asyncio.get_running_loop().call_later(guard.seconds, self._expire)
        assert self._inner is not None
        self._inner.connection_made(transport)

    def _expire(self) -> None:
        self._guard.timed_out += 1
        self._guard.summarise()
        if self._transport is not None:
            self._transport.abort()  # type: ignore[attr-defined]

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
        if self._inner is None:
            return
        self._guard.open -= 1
        if self._deadline is not None:
            self._deadline.cancel()
        inner, self._inner = self._inner, None
        inner.connection_lost(exc)


class GuardedSite(web.BaseSite):
    """aiohttp's TCP site, with each accepted connection under a :class:`ConnectionGuard`."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, backlog=128)
        self._host, self._port, self._guard = host, port, guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Guarded(self._guard, server()), self._host, self._port, reuse_address=True, backlog=self._backlog
        )
