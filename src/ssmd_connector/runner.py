"""The lifecycle: connect, move frames to the writers through a bounded queue, reconnect, stop.

One task per connector supervises its connection (reconnecting with backoff, forever, until
stopped); one task drains the queue into the writers and flushes them at least every
``flush_interval`` seconds. Stopping closes every connection gracefully first (so frames already
on the wire arrive), then drains the queue, then flushes and closes the writers: nothing that was
received is lost.

Nothing fails silently. Every failure is an incident (:mod:`ssmd_connector.incidents`): a
connection that cannot be opened, a write outage, and an unexpected exception anywhere — in a
connector, in the market discovery, in a writer, in the drain loop itself. An unexpected
exception is logged with its traceback, counted as ``internal``, turns ``/health`` to 503, and
the component is restarted with backoff; the frames it held are kept (a writer that raised
something other than ``WriteFailed`` is given the same frames again: at least once, never lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .backoff import Backoff
from .clock import NowNs, wall_clock_ns
from .errors import AuthenticationFailed, ConnectionFailed, Disconnected, WriteFailed
from .incidents import Incidents
from .interfaces import Connector, ConnectorSetup, Writer
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


@dataclass
class ConnectionState:
    connected: bool = False
    reason: str = "not connected yet"
    since: float = 0.0


class Runner:
    """One feed's recording, from connection to writer: owns its connectors (or the setup that
    makes them), the :class:`~ssmd_connector.pipeline.Intake` and bounded queue, the writers, the
    per-connection readiness the health server reports, and the incidents; :meth:`run` supervises
    them until :meth:`stop`, restarting whatever fails."""

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
        incidents: Incidents | None = None,
    ) -> None:
        self.feed = feed
        self._setup = connectors if callable(connectors) else None
        self.connectors: list[Connector] = [] if callable(connectors) else list(connectors)
        self.writers = list(writers)
        self.stats = stats or FeedStats(feed)
        self.incidents = incidents or Incidents(self.stats)
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
        self._unwritten: dict[int, list[Message]] = {}
        """Frames a writer's ``write`` raised on with something other than ``WriteFailed`` (so it
        may not have kept them): given to it again before anything newer."""
        self._carry: list[Message] = []
        """The batch the drain loop is handing over, so a restarted loop hands it over again."""
        self._supervisors: dict[str, asyncio.Task[None]] = {}

    # -- health ---------------------------------------------------------------------------
    def not_ready_reasons(self) -> list[str]:
        reasons = [f"{label}: {s.reason}" for label, s in self.states.items() if not s.connected]
        if self.write_error is not None:
            reasons.append(
                f"writes failing (data kept, retrying; reading pauses when the queue fills): {self.write_error}"
            )
        if self.backlog_full:
            reasons.append("write backlog full: reading paused until the failing writer recovers")
        # Incidents not already said above (connections and write outages are).
        said = ("write", "connect:", "auth:")
        reasons += [i.message for i in self.incidents.active() if not i.key.startswith(said)]
        return reasons

    def health_problems(self) -> list[str]:
        """Internal errors (bugs) that are going on or just happened: ``/health`` answers 503."""
        return [i.message for i in self.incidents.internal()]

    # -- lifecycle ------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()

    def _register(self, connectors: Sequence[Connector]) -> None:
        for c in connectors:
            self.states[c.label] = ConnectionState()
            self.stats.connections[c.label] = False

    def _backoff(self) -> Backoff:
        tpl = self._backoff_template
        return Backoff(tpl.initial, tpl.maximum, tpl.factor, tpl.healthy_after)

    async def _prepare(self, setup: ConnectorSetup) -> list[Connector]:
        """Run the connector setup (e.g. market discovery), retrying with backoff until it works."""
        backoff = self._backoff()
        state = self.states[SETUP]
        incidents = self.incidents
        while not self._stopping.is_set():
            try:
                connectors = list(await setup(self))
            except ConnectionFailed as exc:  # (AuthenticationFailed included)
                state.reason = f"setup failed: {exc}"
                self._cannot_connect(SETUP, exc, state.reason)
            except Exception as exc:
                state.reason = f"setup failed on an internal error: {exc!r}"
                incidents.begin("internal:setup", "internal", f"connector setup: {exc!r}", exc=exc)
            else:
                del self.states[SETUP]
                self._connected(SETUP)
                return connectors
            delay = backoff.next_delay()
            state.reason += f"; retrying in {delay:.1f}s"
            log.warning("%s", state.reason)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        return []

    async def run(self) -> None:
        """Run until :meth:`stop`; then shut down without losing received frames."""
        self.drain_task = asyncio.create_task(self._drain_supervised(), name="ssmd-drain")
        stop_wait = asyncio.create_task(self._stopping.wait())
        try:
            if self._setup is not None:
                prepare = asyncio.create_task(self._prepare(self._setup))
                await asyncio.wait([prepare, stop_wait, self.drain_task], return_when=asyncio.FIRST_COMPLETED)
                if not prepare.done():
                    prepare.cancel()
                self.connectors = prepare.result() if prepare.done() and not prepare.cancelled() else []
                self._register(self.connectors)
            for c in self.connectors:
                self._start_supervisor(c)
            await asyncio.wait([stop_wait, self.drain_task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            self._stopping.set()
            await self._shutdown(list(self._supervisors.values()))

    def _start_supervisor(self, connector: Connector) -> None:
        self._supervisors[connector.label] = asyncio.create_task(
            self._supervise(connector), name=f"ssmd-conn-{connector.label}"
        )

    def add_connector(self, connector: Connector) -> None:
        """A connection opened while recording (the market universe grew): supervised like the
        others from now on, and stopped with them."""
        if self._stopping.is_set():
            return
        if connector.label in self._supervisors:  # a bug: it would never run, and nothing would say
            log.error("%s: a connection of that name is still supervised: the new one is not started", connector.label)
            self.incidents.happened(
                f"internal:{connector.label}", "internal", f"{connector.label}: started twice (not started again)"
            )
            return
        self.connectors.append(connector)
        self._register([connector])
        self._start_supervisor(connector)

    async def remove_connector(self, connector: Connector) -> None:
        """A connection no longer needed (its markets were released): closed, and forgotten by
        ``/ready`` and ``ssmd_connected``."""
        if connector not in self.connectors:
            return
        self.connectors.remove(connector)
        await self._stop_connector(connector)
        task = self._supervisors.pop(connector.label, None)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, self._stop_timeout)
        self.states.pop(connector.label, None)
        self.stats.connections.pop(connector.label, None)
        for key in ("connect", "auth", "internal"):
            self.incidents.end(f"{key}:{connector.label}", "connection retired")

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
        backoff = self._backoff()
        label = connector.label
        state = self.states[label]
        stats, incidents = self.stats, self.incidents
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
            except ConnectionFailed as exc:  # (AuthenticationFailed included)
                auth = isinstance(exc, AuthenticationFailed)
                state.reason = f"{'authentication' if auth else 'connection'} failed: {exc}"
                self._cannot_connect(label, exc, state.reason)
            except Disconnected as exc:
                stats.error("disconnect")
                state.reason = f"disconnected: {exc}"
            except Exception as exc:  # a bug: loud, counted, and the connection is made again
                state.reason = f"failed on an internal error: {exc!r}"
                incidents.begin(f"internal:{label}", "internal", f"connection {label}: {exc!r}", exc=exc)
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

    def _cannot_connect(self, label: str, exc: ConnectionFailed, reason: str) -> None:
        """One incident per outage — but a rejected handshake after a refused connection (or the
        reverse) is a new one, of its own kind."""
        kind, other = ("auth", "connect") if isinstance(exc, AuthenticationFailed) else ("connect", "auth")
        self.incidents.end(f"{other}:{label}", f"now: {reason}")
        self.incidents.begin(f"{kind}:{label}", kind, f"{label}: {reason}")

    def _connected(self, label: str) -> None:
        for key in ("connect", "auth", "internal"):
            self.incidents.end(f"{key}:{label}")

    async def _mark_connected(self, connector: Connector, state: ConnectionState, task: asyncio.Task[None]) -> None:
        """Track the connector's open/closed state for /ready and ``ssmd_connected``."""
        while not task.done():
            up = connector.connected
            if up != state.connected:
                state.connected = up
                state.since = time.monotonic()
                if up:
                    state.reason = "connected"
                    self._connected(connector.label)
                self.stats.connections[connector.label] = up
            await asyncio.sleep(0.1)

    async def _drain_supervised(self) -> None:
        """The drain loop, restarted with backoff if it fails on an unexpected exception (a bug).
        The batch it was handing over is handed over again. Once stopping, it gives up after a
        few attempts rather than hang the shutdown, and says what it could not write."""
        backoff = Backoff(initial=0.1, maximum=5.0)
        failures_while_stopping = 0
        while True:
            try:
                await self._drain()
                self.incidents.end("internal:drain")
                return
            except WriteFailed:
                raise  # the final retries at shutdown gave up: said once, by the caller
            except Exception as exc:
                self.incidents.begin("internal:drain", "internal", f"the writer task: {exc!r}", exc=exc)
                if self.queue.closed:
                    failures_while_stopping += 1
                    if failures_while_stopping > 5:
                        left = len(self.queue) + len(self._carry)
                        raise WriteFailed(
                            f"the writer task keeps failing ({exc!r}); {left} received frame(s) not written"
                        ) from exc
                await asyncio.sleep(backoff.next_delay())

    async def _drain(self) -> None:
        """The one consumer of the queue: writes batches, flushes on time, retries failed writes.

        A writer that fails keeps the data it was given (``WriteFailed`` contract) and is retried;
        meanwhile the queue fills and reading pauses, so nothing is dropped. A write outage is one
        incident however many retries it takes (those are counted in ``write_retries``).
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
            self.backlog_full = failing and not queue.closed and self._writers_full()
            stats.backlog_full = self.backlog_full
            if self._carry:
                batch = self._carry  # handed over again after a restart of this loop
            elif self.backlog_full:
                await asyncio.sleep(timeout)
                batch = []
            else:
                batch = self._carry = await queue.get_batch(BATCH, timeout=timeout)
            finished = queue.closed and not queue
            errors: list[WriteFailed] = []
            if batch:
                errors += await self._write(batch)
            self._carry = []
            if finished or failing or time.monotonic() >= next_flush:
                errors += await self._flush(close=finished)
                next_flush = time.monotonic() + self.flush_interval
            stats.bytes_written = sum(w.bytes_written for w in self.writers)
            stats.backlog_bytes = sum(w.backlog_bytes for w in self.writers)
            if errors:
                if failing:
                    stats.write_retries += 1
                self._writes_failing(errors)
                failing = True
                if finished:
                    await self._final_retry(errors[0])
                    return
                continue
            if failing:
                self._writes_recovered()
                failing = False
            self.incidents.end("internal:drain")  # (a restarted loop that works again)
            if finished:
                return
            if len(batch) < BATCH and not queue.closed:
                # A trickle: let frames gather for a moment instead of waking per frame. This
                # costs at most COALESCE of latency against a flush interval of up to a second.
                await asyncio.sleep(COALESCE)

    def _writers_full(self) -> bool:
        unwritten = sum(len(b) for b in self._unwritten.values())
        return unwritten >= self.queue.capacity or any(w.backlog_full for w in self.writers)

    def _writes_failing(self, errors: list[WriteFailed]) -> None:
        self.write_error = str(errors[0])
        internal = [e for e in errors if e.internal]
        if internal:
            cause = internal[0].__cause__
            self.incidents.begin("internal:writer", "internal", str(internal[0]), exc=cause)
        if len(internal) < len(errors):
            storage = next(e for e in errors if not e.internal)
            message = f"writes failing (data kept, retrying; reading pauses when the queue fills): {storage}"
            self.incidents.begin("write", "write", message)

    def _writes_recovered(self) -> None:
        self.write_error = None
        self.incidents.end("write", "writes recovered")
        self.incidents.end("internal:writer", "writes recovered")

    async def _write(self, batch: list[Message]) -> list[WriteFailed]:
        errors = []
        for i, w in enumerate(self.writers):
            msgs = self._unwritten.pop(i, []) + batch if i in self._unwritten else batch
            if not msgs:
                continue
            try:
                await w.write(msgs)
            except WriteFailed as exc:
                errors.append(exc)
            except Exception as exc:  # the writer broke its contract: it may not have kept them
                self._unwritten[i] = list(msgs)
                errors.append(_internal(w, "write", exc))
        return errors

    async def _flush(self, *, close: bool) -> list[WriteFailed]:
        errors = await self._write([]) if self._unwritten else []
        for w in self.writers:
            try:
                await (w.close() if close else w.flush())
            except WriteFailed as exc:
                errors.append(exc)
            except Exception as exc:
                errors.append(_internal(w, "close" if close else "flush", exc))
        return errors

    async def _final_retry(self, first: WriteFailed) -> None:
        """At shutdown: retry closing (flushing) for ~5 s, then fail loudly rather than pretend."""
        for _ in range(10):
            await asyncio.sleep(0.5)
            errors = await self._flush(close=True)
            self.stats.bytes_written = sum(w.bytes_written for w in self.writers)
            if not errors:
                self._writes_recovered()
                return
            self.stats.write_retries += 1
        held = sum(w.backlog_bytes for w in self.writers) + sum(
            len(m.frame) for b in self._unwritten.values() for m in b
        )
        raise WriteFailed(f"{first} — stopping with {held:,} bytes of received frames not stored")


def _internal(writer: Writer, op: str, exc: Exception) -> WriteFailed:
    failed = WriteFailed(f"internal error in {type(writer).__name__}.{op}: {exc!r}", internal=True)
    failed.__cause__ = exc
    return failed
