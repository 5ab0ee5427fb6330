"""The Kalshi connector: the thin I/O around :mod:`ssmd_connector.kalshi.client`.

One :class:`KalshiShard` per connection. It signs the handshake (fresh signature on every
connect), subscribes its shard's plan, archives every frame it receives *before* the protocol
looks at it (replies and errors included — nothing is dropped while waiting for an
acknowledgement), and carries out what the protocol decides: recovery commands, and a reconnect
when recovery fails. Every such step is written to the coverage ledger.

Liveness is judged by what arrives: picows pings after ``stale_after/2`` seconds without incoming
data and drops the connection if nothing answers within another ``stale_after/2``. Sends are
time-boxed: a send that is still stuck in the socket's buffer after ``send_timeout`` seconds
means the peer stopped reading, and the connection is replaced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...archive.line import SHALLOW_BYTES, within_depth
from ...errors import AuthenticationFailed, ConnectionFailed, Disconnected
from ...interfaces import FrameSink
from ...kalshi.auth import KEY_ID_VAR, PRIVATE_KEY_VAR, Signer
from ...kalshi.client import ClientSession, Effect, Event, Lifecycle, MarketLimit, Reconnect, Send, ShardPlan
from ...kalshi.wire import (
    CONTROL_TYPES,
    GLOBAL_CHANNELS,
    RECOVERY_OUTCOMES,
    UNPARSED,
    WS_PATH,
    Envelope,
    Ev,
    data_head,
    decode_envelope,
    parse,
)
from ...ledger import Ledger
from ...message import Message
from ...metrics import ShardStats
from ...settings import DEFAULT_RECEIVE_BUFFER
from ..websocket import Liveness, WebSocketConnection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardSettings:
    endpoint: str
    stale_after: float = 30.0
    command_timeout: float = 10.0
    send_timeout: float = 10.0
    receive_buffer: int = DEFAULT_RECEIVE_BUFFER


_MARKET_COUNT_CHANGES = frozenset({Ev.SUBSCRIBED, Ev.UNSUBSCRIBED, Ev.COMMAND_OK, Ev.MARKETS_CHANGED})
_LIFECYCLE_BLIND = frozenset({Ev.SUBSCRIBED, Ev.GAP, Ev.RESUBSCRIBE_REQUESTED})
"""On the lifecycle sid: what was announced meanwhile may have been missed."""


class KalshiShard:
    """One connection to Kalshi carrying one :class:`ShardPlan` — the plan of the moment: a feed
    following the market universe changes ``plan`` and calls :meth:`change_markets`, and every
    (re)connection subscribes the plan as it is then."""

    def __init__(
        self,
        label: str,
        plan: ShardPlan,
        settings: ShardSettings,
        signer: Signer | None,
        ledger: Ledger,
        stats: ShardStats,
        *,
        start_delay: float = 0.0,
        on_lifecycle: Callable[[Lifecycle], None] | None = None,
    ) -> None:
        self._label = label
        self.plan = plan
        self._settings = settings
        self._signer = signer
        self._ledger = ledger
        self._stats = stats
        self._start_delay = start_delay
        self._conn: WebSocketConnection | None = None
        self._session: ClientSession | None = None
        self._sink: FrameSink | None = None
        self._stopping = False
        self._reconnect_reason: str | None = None
        self._on_lifecycle = on_lifecycle
        self._started = False
        """The session has sent its plan's subscriptions: market changes go to it from now on."""
        self.on_market_limit: Callable[[tuple[str, ...]], None] | None = None
        """Told which markets Kalshi refused on this connection (error 26), to place them elsewhere."""
        self.on_lifecycle_blind: Callable[[], None] | None = None
        """Told when this connection's lifecycle subscription starts or loses messages."""

    @property
    def label(self) -> str:
        return self._label

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_open

    @property
    def session(self) -> ClientSession | None:
        return self._session

    def _record(self, event: str, fields: dict[str, Any] | None = None) -> None:
        self._ledger.record(event, self._label, fields)

    async def run(self, sink: FrameSink) -> None:
        if self._start_delay:
            delay, self._start_delay = self._start_delay, 0.0  # stagger the first connect only
            await asyncio.sleep(delay)
        if self._stopping:
            return
        settings = self._settings
        headers = await asyncio.to_thread(self._signer.headers, "GET", WS_PATH) if self._signer else {}
        self._sink = sink
        self._reconnect_reason = None
        self._started = False
        lifecycle = self._on_lifecycle is not None
        self._session = ClientSession(self.plan, command_timeout=settings.command_timeout, lifecycle=lifecycle)
        conn = WebSocketConnection(
            settings.endpoint,
            headers=headers,
            liveness=Liveness.stale_after(settings.stale_after),
            receive_buffer=settings.receive_buffer,
            credentials_hint=f"check the API key id ({KEY_ID_VAR}) and the private key ({PRIVATE_KEY_VAR})",
        )
        try:
            await conn.open(self._on_read, sink)
        except AuthenticationFailed as exc:
            self._stats.auth_failures += 1
            key_id = self._signer.key_id if self._signer else None
            self._record(Ev.AUTH_FAILED, {"endpoint": settings.endpoint, "key_id": key_id, "error": str(exc)})
            raise AuthenticationFailed(f"{exc} [key id {key_id}]") from None
        except ConnectionFailed as exc:
            self._record(Ev.CONNECT_FAILED, {"endpoint": settings.endpoint, "error": str(exc)})
            raise
        self._conn = conn
        self._record(Ev.CONNECT, {"endpoint": settings.endpoint, "markets": len(self.plan.tickers)})
        log.info("%s: connected to %s (%d markets)", self._label, settings.endpoint, len(self.plan.tickers))
        if self._stopping:
            await conn.close()
        else:
            # The plan as it is now (markets may have changed while connecting): a fresh session.
            self._session = ClientSession(
                self.plan, command_timeout=settings.command_timeout, lifecycle=self._session.lifecycle
            )
            self._started = True
            self._apply(self._session.start(time.monotonic()))
        ticker = asyncio.create_task(self._tick_loop(conn))
        try:
            reason = await conn.wait_closed()
        except Exception as exc:  # a bug in handling a frame (the frames were archived first)
            self._record(Ev.DISCONNECT, {"reason": f"internal error: {exc!r}", "requested": False})
            raise
        finally:
            ticker.cancel()
            self._started = False
            self._stats.markets = 0
        if self._reconnect_reason:
            reason = f"{self._reconnect_reason} ({reason})"
        self._record(Ev.DISCONNECT, {"reason": reason, "requested": self._stopping})
        if self._stopping:
            return
        raise Disconnected(reason)

    def change_markets(self, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
        """Markets to add to / remove from the live connection (``plan`` already says so for the
        next one)."""
        session = self._session
        if session is None or not self._started:
            return  # the next connection subscribes the plan
        now = time.monotonic()
        if remove:
            self._apply(session.remove_markets(now, remove))
        if add:
            self._apply(session.add_markets(now, add))

    async def stop(self) -> None:
        self._stopping = True
        if self._conn is not None:
            await self._conn.close()

    # -- the reader -------------------------------------------------------------------------
    def _on_read(self, payloads: list[bytes], received_ns: int, binary: list[int]) -> None:
        """The hot path, once per socket read.

        Each frame becomes its archive message before the protocol reacts to it, and the read's
        messages reach the archive even if reacting fails part-way.
        """
        sink, session = self._sink, self._session
        if sink is None or session is None:  # cannot happen: both are set before connecting
            return
        feed = sink.feed
        out: list[Message] = []
        append = out.append
        receive = session.receive
        counts = self._stats.frames_by_type
        now = time.monotonic()  # (once per read: the session's clock for timeouts and recovery)
        age_due = True  # message age is sampled once per read (its frames share one receive stamp)
        binary_at = set(binary) if binary else None
        # Frames this short cannot be nested too deep to decode (within_depth's first test, once
        # per read in C instead of once per frame).
        shallow = max(map(len, payloads)) <= SHALLOW_BYTES
        try:
            for data in payloads:
                if binary_at is not None and len(out) in binary_at:
                    append(Message(received_ns, feed, data, binary=True))
                    continue
                try:  # one msgspec pass validates the JSON, after the non-recursive depth check
                    env: Envelope | None = decode_envelope(data) if shallow or within_depth(data) else None
                except ValueError:  # msgspec's DecodeError and ValidationError
                    env = parse(data)  # the careful path: odd field types, or not JSON at all
                if env is None:
                    append(Message(received_ns, feed, data))
                    counts[UNPARSED] = counts.get(UNPARSED, 0) + 1
                else:
                    kind = env.type
                    append(Message(received_ns, feed, data, json_valid=True, kind=kind))
                    counts[kind] = counts.get(kind, 0) + 1
                    if age_due and kind not in CONTROL_TYPES:
                        age_due = not self._observe_age(data, received_ns)
                effects = receive(data, env, now)
                if effects:
                    self._apply(effects)
        finally:
            if len(out) < len(payloads):  # reacting failed part-way: archive the rest untouched
                at = binary_at or set()
                out += [Message(received_ns, feed, p, binary=i in at) for i, p in enumerate(payloads) if i >= len(out)]
            sink.put(out)

    def _observe_age(self, frame: bytes, received_ns: int) -> bool:
        """Receive time minus the exchange's ``ts_ms``, when the message has one (then True)."""
        head = data_head(frame)
        if head is None or not head.ts_ms:
            return False
        self._stats.age.observe(received_ns / 1e9 - head.ts_ms / 1e3)
        return True

    def _apply(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self._send(effect)
            elif isinstance(effect, Event):
                self._event(effect)
            elif isinstance(effect, Reconnect):
                self._reconnect(effect.reason)
            elif isinstance(effect, Lifecycle) and self._on_lifecycle is not None:
                self._on_lifecycle(effect)
            elif isinstance(effect, MarketLimit):
                log.warning("%s: Kalshi refused %d more market(s) on this connection", self._label, len(effect.tickers))
                if self.on_market_limit is not None:
                    self.on_market_limit(effect.tickers)
                else:  # a fixed plan cannot move them: a new connection tries the plan again
                    self._reconnect(f"Kalshi refused {len(effect.tickers)} market(s) on this connection (error 26)")

    def _event(self, ev: Event) -> None:
        self._record(ev.kind, ev.fields)
        lifecycle = ev.fields.get("channel") in GLOBAL_CHANNELS
        if lifecycle and ev.kind in _LIFECYCLE_BLIND and self.on_lifecycle_blind is not None:
            self.on_lifecycle_blind()
        stats = self._stats
        outcome = RECOVERY_OUTCOMES.get(ev.kind)
        if outcome is not None:
            stats.recoveries[outcome] += 1
        if ev.kind == Ev.GAP:
            stats.gaps += 1
            f = ev.fields
            log.warning(
                "%s: sequence gap on sid %s (%s): expected %s, got %s",
                self._label,
                f["sid"],
                f["channel"],
                f["expected"],
                f["got"],
            )
        elif (
            ev.kind in (Ev.SUBSCRIBED, Ev.UNSUBSCRIBED, Ev.COMMAND_OK, Ev.MARKETS_CHANGED) and self._session is not None
        ):
            stats.markets = self._session.markets_subscribed
        elif ev.kind == Ev.ERROR:
            log.warning("%s: error reply %s", self._label, ev.fields)
        elif ev.kind in (Ev.RECOVERY_COMPLETED, Ev.RESUBSCRIBE_REQUESTED, Ev.RECOVERY_FAILED):
            log.info("%s: %s %s", self._label, ev.kind, ev.fields)

    def _send(self, send: Send) -> None:
        self._record(Ev.COMMAND, {"id": send.id, "cmd": send.cmd, "params": send.params, "purpose": send.purpose})
        if self._conn is None or not self._conn.is_open:
            return  # the connection is going away; the next one starts a fresh session
        self._conn.send_text(send.encode())

    def _reconnect(self, reason: str) -> None:
        if self._reconnect_reason is not None:
            return
        self._reconnect_reason = reason
        log.warning("%s: reconnecting: %s", self._label, reason)
        self._record(Ev.RECONNECT_REQUESTED, {"reason": reason})
        if self._conn is not None:
            self._conn.abort()

    async def _tick_loop(self, conn: WebSocketConnection) -> None:
        """Command timeouts, and the time box on sends."""
        while True:
            await asyncio.sleep(0.5)
            try:
                now = time.monotonic()
                if self._session is not None:
                    self._apply(self._session.tick(now))
                stalled = conn.send_stalled_for(now)
                if stalled > self._settings.send_timeout:
                    self._reconnect(f"send timed out: the server has read nothing we sent for {stalled:.0f}s")
            except Exception:  # a bug here must not silently stop the timeouts
                log.exception("%s: periodic protocol check failed", self._label)
