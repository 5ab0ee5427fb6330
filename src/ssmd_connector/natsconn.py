"""One NATS connection, for the publisher and the archiver: never blocks its user, never gives up.

Why not a bare ``nats.connect``: told to reconnect forever, it also retries the *first* connection
forever inside the call — a recorder starting while NATS is down would stop writing its local
archive too — and nats-py's default error callback logs a full traceback for every attempt, twice
a second, for as long as NATS is down. Here the connection is made in a background task (callers
see ``None`` until it is up, and fail fast), and each outage is one warning when it starts and one
line when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats
from nats.aio.client import Client

log = logging.getLogger(__name__)


class NatsConnection:
    def __init__(self, url: str, *, connect_timeout: float = 2.0, reconnect_wait: float = 0.5) -> None:
        self.url = url
        self._timeout = connect_timeout
        self._wait = reconnect_wait
        self._task: asyncio.Task[Client] | None = None
        self._down = False
        self.last_error = ""
        """The latest connection error (for messages), empty once connected."""

    def client(self) -> Client | None:
        """The client once connected (or reconnecting: check ``is_connected``); ``None`` before."""
        if self._task is None:
            self._task = asyncio.create_task(self._connect(), name=f"nats-connect {self.url}")
        if not self._task.done() or self._task.cancelled() or self._task.exception() is not None:
            return None
        return self._task.result()

    async def ready(self, timeout: float) -> Client | None:
        """The client, waiting at most ``timeout`` for a first connection still being made."""
        self.client()
        assert self._task is not None
        if not self._task.done():
            await asyncio.wait({self._task}, timeout=timeout)
        return self.client()

    async def wait(self, stop: asyncio.Event) -> Client | None:
        """Wait until connected; ``None`` if ``stop`` is set first."""
        self.client()
        assert self._task is not None
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({self._task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        return self.client()

    @property
    def status(self) -> str:
        if self._task is None or not self._task.done():
            return f"connecting ({self.last_error})" if self.last_error else "connecting"
        nc = self.client()
        return "connected" if nc is not None and nc.is_connected else f"reconnecting ({self.last_error})"

    async def close(self) -> None:
        self._down = True  # what follows is our own doing: no "disconnected" warning
        if self._task is None:
            return
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            return
        nc = self.client()
        if nc is not None and not nc.is_closed:
            await nc.drain()

    async def _connect(self) -> Client:
        nc = await nats.connect(
            self.url,
            connect_timeout=self._timeout,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=self._wait,
            skip_subject_validation=True,  # our subjects are built from sanitised tokens
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_connected,
        )
        await self._on_connected()
        return nc

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = str(exc) or type(exc).__name__
        if not self._down:
            self._down = True
            log.warning("NATS %s: %s; retrying every %g s", self.url, self.last_error, self._wait)

    async def _on_disconnected(self) -> None:
        if not self._down:
            self._down = True
            log.warning("NATS %s: disconnected; reconnecting", self.url)

    async def _on_connected(self) -> None:
        if self._down:
            log.info("NATS %s: connected again", self.url)
        self._down = False
        self.last_error = ""
