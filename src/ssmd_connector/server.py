"""``/health``, ``/ready`` and ``/metrics`` in the recorder's own process (aiohttp).

* ``/health`` answers 200 while the pipeline makes progress: the writer task is alive and has
  completed a cycle within ``stall_after`` seconds (it cycles at least once per flush interval,
  even when idle, so a writer stuck in I/O shows here). Otherwise 503.
* ``/ready`` answers 200 when every connection is open, 503 with the reasons otherwise.
* ``/metrics`` is the Prometheus text exposition of :mod:`ssmd_connector.metrics`.
"""

from __future__ import annotations

import errno
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ._version import __version__
from .errors import SsmdError
from .runner import Runner


class AddressInUse(SsmdError):
    """``--health-addr`` cannot be listened on (a usage error: exit code 2)."""


class HealthServer:
    def __init__(self, runner: Runner, registry: CollectorRegistry, *, stall_after: float = 10.0) -> None:
        self._runner = runner
        self._registry = registry
        self._stall_after = stall_after
        self._started = time.monotonic()
        self._site: web.TCPSite | None = None
        self._app_runner: web.AppRunner | None = None
        self.port = 0

    def _health_body(self) -> tuple[int, dict[str, Any]]:
        r = self._runner
        stats = r.stats
        now = time.monotonic()
        drain = r.drain_task
        problem = None
        if drain is not None and drain.done():
            problem = "the writer task has stopped"
        elif now - r.last_drain > self._stall_after:
            # The writer task loops at least once per flush interval (<= 1 s), idle or not.
            problem = f"the writer has not drained the queue for {now - r.last_drain:.0f}s"
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
        self._app_runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._app_runner.setup()
        self._site = web.TCPSite(self._app_runner, host, port, reuse_address=True)
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
        if self._app_runner is not None:
            await self._app_runner.cleanup()
