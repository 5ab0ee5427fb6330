"""The lifecycle: connect, move frames to the writers through a bounded queue, reconnect, stop.

One task per connector supervises its connection (reconnecting with backoff, forever, until
stopped); one task drains the queue into the writers and flushes them at least every
``flush_interval`` seconds. Stopping closes every connection gracefully first (so frames already
on the wire arrive), then drains the queue, then flushes and closes the writers: nothing that was
received is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from .backoff import Backoff
from .clock import NowNs, wall_clock_ns
from .errors import AuthenticationFailed, ConnectionFailed, Disconnected, WriteFailed
from .interfaces import Connector, Writer
from .message import Message
from .metrics import FeedStats
from .pipeline import FrameQueue, Intake

log = logging.getLogger(__name__)

BATCH = 4096
"""Most messages handed to the writers in one call."""

COALESCE = 0.01
"""Seconds the writer task waits after a small batch, so a trickle wakes it ~100 times a second
at most instead of once per frame (measured: ~4 % of a core at 1,000 frames/s without it)."""

SETUP = "setup"
"""The pseudo-connection label under which connector setup (discovery) reports readiness."""

ConnectorSetup = Callable[[], Awaitable[Sequence[Connector]]]
"""Builds the connectors once the runner has started (e.g. after market discovery)."""


@dataclass
class ConnectionState:
    connected: bool = False
    reason: str = "not connected yet"
    since: float = 0.0


class Runner:
    def __init__(
        self,
        feed: str,
        connectors: Sequence[Connector] | ConnectorSetup,
        writers: Sequence[Writer],
        *,
        stats: FeedStats | None = None,
        queue_capacity: int = 100_000,
        flush_interval: float = 1.0,
        backoff: Backoff | None = None,
        now_ns: NowNs = wall_clock_ns,
        stop_timeout: float = 10.0,
    ) -> None:
        self.feed = feed
        self._setup = connectors if callable(connectors) else None
        self.connectors: list[Connector] = [] if callable(connectors) else list(connectors)
        self.writers = list(writers)
        self.stats = stats or FeedStats(feed)
        self.queue = FrameQueue(queue_capacity, self.stats)
        self.intake = Intake(feed, self.queue, self.stats, now_ns)
        self.flush_interval = flush_interval
        self._backoff_template = backoff or Backoff()
        self._stop_timeout = stop_timeout
        self._stopping = asyncio.Event()
        self.states: dict[str, ConnectionState] = {}
        if self._setup is not None:
            self.states[SETUP] = ConnectionState(reason="preparing connections (market discovery)")
        self._register(self.connectors)
        self.last_drain = time.monotonic()
        self.drain_task: asyncio.Task[None] | None = None
        self.write_error: str | None = None
        """The latest write failure while writes are failing (for /ready), else None."""
        self.backlog_full = False
        """A failing writer reached its backlog bound: the queue is not drained (reading pauses)."""

    # -- health ---------------------------------------------------------------------------
    def not_ready_reasons(self) -> list[str]:
        reasons = [f"{label}: {s.reason}" for label, s in self.states.items() if not s.connected]
        if self.write_error is not None:
            reasons.append(
                f"writes failing (data kept, retrying; reading pauses when the queue fills): {self.write_error}"
            )
        if self.backlog_full:
            reasons.append("write backlog full: reading paused until the failing writer recovers")
        return reasons

    # -- lifecycle ------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()

    def _register(self, connectors: Sequence[Connector]) -> None:
        for c in connectors:
            self.states[c.label] = ConnectionState()
            self.stats.connections[c.label] = False

    async def _prepare(self, setup: ConnectorSetup) -> list[Connector]:
        """Run the connector setup (e.g. market discovery), retrying with backoff until it works."""
        tpl = self._backoff_template
        backoff = Backoff(tpl.initial, tpl.maximum, tpl.factor, tpl.healthy_after)
        state = self.states[SETUP]
        while not self._stopping.is_set():
            try:
                connectors = list(await setup())
            except AuthenticationFailed as exc:
                self.stats.error("auth")
                state.reason = f"setup failed: {exc}"
            except ConnectionFailed as exc:
                self.stats.error("connect")
                state.reason = f"setup failed: {exc}"
            else:
                del self.states[SETUP]
                return connectors
            delay = backoff.next_delay()
            state.reason += f"; retrying in {delay:.1f}s"
            log.warning("%s", state.reason)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        return []

    async def run(self) -> None:
        """Run until :meth:`stop`; then shut down without losing received frames."""
        self.drain_task = asyncio.create_task(self._drain(), name="ssmd-drain")
        supervisors: list[asyncio.Task[None]] = []
        stop_wait = asyncio.create_task(self._stopping.wait())
        try:
            if self._setup is not None:
                prepare = asyncio.create_task(self._prepare(self._setup))
                await asyncio.wait([prepare, stop_wait, self.drain_task], return_when=asyncio.FIRST_COMPLETED)
                if not prepare.done():
                    prepare.cancel()
                self.connectors = prepare.result() if prepare.done() and not prepare.cancelled() else []
                self._register(self.connectors)
            supervisors = [
                asyncio.create_task(self._supervise(c), name=f"ssmd-conn-{c.label}") for c in self.connectors
            ]
            await asyncio.wait([stop_wait, self.drain_task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            self._stopping.set()
            await self._shutdown(supervisors)

    async def _shutdown(self, supervisors: list[asyncio.Task[None]]) -> None:
        log.info("stopping: closing connections")
        await asyncio.gather(*(self._stop_connector(c) for c in self.connectors))
        _, pending = await asyncio.wait(supervisors, timeout=self._stop_timeout) if supervisors else (set(), set())
        for task in pending:
            task.cancel()
        for task in supervisors:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.queue.close()
        assert self.drain_task is not None
        if not self.drain_task.done():
            await self.drain_task
        self.drain_task.result()  # re-raise a writer crash
        log.info("stopped: %d frames received, %d bytes written", self.stats.messages, self.stats.bytes_written)

    async def _stop_connector(self, connector: Connector) -> None:
        try:
            await asyncio.wait_for(connector.stop(), self._stop_timeout)
        except Exception as exc:
            log.warning("%s: error while closing: %s", connector.label, exc)

    async def _supervise(self, connector: Connector) -> None:
        tpl = self._backoff_template
        backoff = Backoff(tpl.initial, tpl.maximum, tpl.factor, tpl.healthy_after)
        state = self.states[connector.label]
        stats = self.stats
        first = True
        while not self._stopping.is_set():
            if not first:
                stats.reconnects += 1
            first = False
            started = time.monotonic()
            task = asyncio.create_task(connector.run(self.intake))
            watcher = asyncio.create_task(self._mark_connected(connector, state, task))
            try:
                await task
                return  # stopped on request
            except AuthenticationFailed as exc:
                stats.error("auth")
                state.reason = f"authentication failed: {exc}"
            except ConnectionFailed as exc:
                stats.error("connect")
                state.reason = f"connection failed: {exc}"
            except Disconnected as exc:
                stats.error("disconnect")
                state.reason = f"disconnected: {exc}"
            finally:
                watcher.cancel()
                state.connected = False
                stats.connections[connector.label] = False
            if self._stopping.is_set():
                return
            backoff.connection_lasted(time.monotonic() - started)
            delay = backoff.next_delay()
            state.reason += f"; retrying in {delay:.1f}s"
            log.warning("%s: %s", connector.label, state.reason)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _mark_connected(self, connector: Connector, state: ConnectionState, task: asyncio.Task[None]) -> None:
        """Track the connector's open/closed state for /ready and ``ssmd_connected``."""
        while not task.done():
            up = connector.connected
            if up != state.connected:
                state.connected = up
                state.since = time.monotonic()
                if up:
                    state.reason = "connected"
                self.stats.connections[connector.label] = up
            await asyncio.sleep(0.1)

    async def _drain(self) -> None:
        """The one consumer of the queue: writes batches, flushes on time, retries failed writes.

        A writer that fails keeps the data it was given (``WriteFailed`` contract) and is retried;
        meanwhile the queue fills and reading pauses, so nothing is dropped.
        """
        queue, stats = self.queue, self.stats
        next_flush = time.monotonic() + self.flush_interval
        failing = False
        while True:
            now = time.monotonic()
            self.last_drain = now
            timeout = 0.5 if failing else max(0.0, next_flush - now)
            # A failing writer holding its bound stops taking more: the queue fills and reading
            # pauses (at shutdown everything queued is handed over regardless, for the last retries).
            self.backlog_full = failing and not queue.closed and any(w.backlog_full for w in self.writers)
            if self.backlog_full:
                await asyncio.sleep(timeout)
                batch = []
            else:
                batch = await queue.get_batch(BATCH, timeout=timeout)
            finished = queue.closed and not queue
            errors: list[WriteFailed] = []
            if batch:
                errors += await self._each_writer("write", batch)
            if finished or failing or time.monotonic() >= next_flush:
                errors += await self._each_writer("close" if finished else "flush")
                next_flush = time.monotonic() + self.flush_interval
            stats.bytes_written = sum(w.bytes_written for w in self.writers)
            stats.backlog_bytes = sum(w.backlog_bytes for w in self.writers)
            if errors:
                stats.error("write", len(errors))
                if not failing:
                    log.error("%s (will retry; reading pauses when the queue fills)", errors[0])
                failing = True
                self.write_error = str(errors[0])
                if finished:
                    await self._final_retry(errors[0])
                    return
                continue
            if failing:
                log.info("writes recovered")
                failing = False
                self.write_error = None
            if finished:
                return
            if len(batch) < BATCH and not queue.closed:
                # A trickle: let frames gather for a moment instead of waking per frame. This
                # costs at most COALESCE of latency against a flush interval of up to a second.
                await asyncio.sleep(COALESCE)

    async def _each_writer(self, op: str, batch: Sequence[Message] = ()) -> list[WriteFailed]:
        errors = []
        for w in self.writers:
            try:
                if op == "write":
                    await w.write(batch)
                elif op == "flush":
                    await w.flush()
                else:
                    await w.close()
            except WriteFailed as exc:
                errors.append(exc)
        return errors

    async def _final_retry(self, first: WriteFailed) -> None:
        """At shutdown: retry closing (flushing) for ~5 s, then fail loudly rather than pretend."""
        for _ in range(10):
            await asyncio.sleep(0.5)
            errors = await self._each_writer("close")
            self.stats.bytes_written = sum(w.bytes_written for w in self.writers)
            if not errors:
                return
            self.stats.error("write", len(errors))
        raise first
