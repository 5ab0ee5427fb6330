"""Kalshi WebSocket v2, the client's side, sans I/O: the protocol state of one connection.

Pure and synchronous — no sockets, and no clock: every call that may need the time is given it
(``now``, monotonic seconds) — so it is tested on its own, frame by frame. The recorder's
connector (:mod:`ssmd_connector.connectors.kalshi.connector`) is the thin I/O around it; it also
counts the metrics (frames by type, message age), which are not protocol state.

:class:`ClientSession` tracks, per connection:

* commands in flight, matched to replies by ``id``;
* subscriptions: sid ↔ channel ↔ tickers (from ``subscribed`` and ``ok`` replies);
* the per-sid sequence counter — one counter per sid shared by all its markets; every frame that
  carries ``sid`` and ``seq`` consumes a number, ``ok``/``unsubscribed`` replies included;
* recovery: on a gap in an order-book sid, ask for a snapshot (``get_snapshot``); if that fails,
  resubscribe; if that fails, reconnect. Terminal errors 10 and 25 on a sid resubscribe that sid;
* the connection's markets as the universe changes (:meth:`ClientSession.add_markets`,
  :meth:`ClientSession.remove_markets`): ``add_markets`` / ``delete_markets`` on sids whose
  channel Kalshi documents it for, a subscription of their own for the others; lifecycle
  messages are handed up (:class:`Lifecycle`) when the session follows the universe.

It never decides anything about the archive: every frame is archived by the caller *before*
:meth:`ClientSession.receive` sees it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .wire import (
    ADD_MARKETS,
    CONTROL_TYPES,
    DELETE_MARKETS,
    DOCUMENTED_UPDATABLE,
    ERROR,
    GET_SNAPSHOT,
    GLOBAL_CHANNELS,
    LIFECYCLE_TYPES,
    OK,
    ORDERBOOK_DELTA,
    ORDERBOOK_SNAPSHOT,
    P_ACTION,
    P_MARKET_TICKERS,
    P_SID,
    P_SIDS,
    SUBSCRIBE,
    SUBSCRIBED,
    TERMINAL_ERRORS,
    UNSUBSCRIBE,
    UNSUBSCRIBED,
    UPDATE_SUBSCRIPTION,
    Envelope,
    ErrorCode,
    Ev,
    command,
    data_head,
    msg_object,
    needs_markets,
    subscribe_params,
)


@dataclass(slots=True)
class Subscription:
    sid: int
    channel: str
    tickers: tuple[str, ...]
    last_seq: int = 0
    """0 = no sequenced frame seen yet (the next one should be 1)."""


@dataclass
class Pending:
    """A command awaiting its reply."""

    id: int
    cmd: str
    params: dict[str, Any]
    sent_at: float
    purpose: str = "subscribe"
    """subscribe | snapshot | resubscribe | add | remove"""
    sid: int | None = None
    """The subscription a recovery command is about."""
    expect: set[str] = field(default_factory=set)
    """Channels (subscribe) or tickers (snapshot) still owed a reply."""
    channel: str | None = None
    """The channel an addition is for."""


# -- effects returned to the I/O layer ---------------------------------------------------------
@dataclass(frozen=True)
class Send:
    id: int
    cmd: str
    params: dict[str, Any] | None
    purpose: str
    sid: int | None = None

    def encode(self) -> bytes:
        return command(self.id, self.cmd, self.params)


@dataclass(frozen=True)
class Event:
    """Something worth a line in the coverage ledger (and often a metric)."""

    kind: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Reconnect:
    reason: str


@dataclass(frozen=True)
class MarketLimit:
    """Kalshi refused more markets on this connection (error 26): these were not added."""

    tickers: tuple[str, ...]


@dataclass(frozen=True)
class Lifecycle:
    """A lifecycle message (``kind``: its type) for the market universe to act on."""

    kind: str
    msg: dict[str, Any]


Effect = Send | Event | Reconnect | Lifecycle | MarketLimit

RETRY_FIRST: Final = 1.0
RETRY_MAX: Final = 30.0
"""Seconds before an addition refused for its rate (error 27) is sent again, doubling per refusal."""


@dataclass(frozen=True)
class ShardPlan:
    """What one connection subscribes: market channels for its tickers, plus global channels."""

    market_channels: tuple[str, ...]
    tickers: tuple[str, ...]
    global_channels: tuple[str, ...] = ()
    all_markets: bool = False
    """No tickers means every market (a fixed subscription without a market list), not none."""

    @property
    def groups(self) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        out = []
        if self.market_channels and (self.tickers or self.all_markets):
            out.append((self.market_channels, self.tickers))
        if self.global_channels:
            out.append((self.global_channels, ()))
        return out


def plan_shards(channels: Sequence[str], tickers: Sequence[str], max_per_connection: int) -> list[ShardPlan]:
    """Split tickers into connections of at most ``max_per_connection`` markets.

    Global channels go on the first connection only (they would be duplicated otherwise). With no
    tickers, market channels that allow it subscribe to all markets on one connection.
    """
    market = tuple(c for c in channels if c not in GLOBAL_CHANNELS)
    glob = tuple(c for c in channels if c in GLOBAL_CHANNELS)
    if not tickers:
        if any(needs_markets(c) for c in market):
            raise ValueError("orderbook_delta needs market tickers (subscription.markets or discover)")
        return [ShardPlan(market, (), glob, all_markets=True)]
    chunks = [tuple(tickers[i : i + max_per_connection]) for i in range(0, len(tickers), max_per_connection)]
    return [ShardPlan(market, chunk, glob if i == 0 else ()) for i, chunk in enumerate(chunks)]


_NOTHING: Final[tuple[Effect, ...]] = ()
_NEEDS_BODY: Final = CONTROL_TYPES | {ORDERBOOK_SNAPSHOT}


class ClientSession:
    """Protocol state of one connection, from the client's side. Fresh for every connection."""

    def __init__(self, plan: ShardPlan, *, command_timeout: float = 10.0, lifecycle: bool = False) -> None:
        self.plan = plan
        self.command_timeout = command_timeout
        self.lifecycle = lifecycle
        """Hand lifecycle messages up (the recorder follows the market universe)."""
        self.markets: set[str] = set(plan.tickers)
        """The markets this connection should carry now; sids may still hold ones being removed."""
        self._closing: set[int] = set()
        """Sids being unsubscribed."""
        self._retries: list[tuple[float, str, tuple[str, ...]]] = []
        """(when, channel, tickers): additions refused for their rate, to send again."""
        self._retry_delay = RETRY_FIRST
        self.subs: dict[int, Subscription] = {}
        self.pending: dict[int, Pending] = {}
        self._next_id = 1
        self.gaps = 0
        self.recovering: dict[int, int] = {}
        """sid → id of the recovery command in flight."""
        self.unparsed = 0

    # -- commands ------------------------------------------------------------------------------
    def _send(
        self,
        now: float,
        cmd: str,
        params: dict[str, Any] | None,
        purpose: str,
        *,
        sid: int | None = None,
        expect: Iterable[str] = (),
    ) -> Send:
        cmd_id = self._next_id
        self._next_id += 1
        self.pending[cmd_id] = Pending(cmd_id, cmd, params or {}, now, purpose, sid, set(expect))
        return Send(cmd_id, cmd, params, purpose, sid)

    def start(self, now: float) -> list[Effect]:
        """The subscribe commands for this connection's plan."""
        return [
            self._send(now, SUBSCRIBE, subscribe_params(channels, tickers), "subscribe", expect=channels)
            for channels, tickers in self.plan.groups
        ]

    def subscribe_channel(self, now: float, channel: str, tickers: Sequence[str], purpose: str) -> Send:
        return self._send(now, SUBSCRIBE, subscribe_params([channel], tickers), purpose, expect=[channel])

    # -- the connection's markets --------------------------------------------------------------
    def add_markets(self, now: float, tickers: Sequence[str]) -> list[Effect]:
        """Carry these markets too, on every market channel of the plan."""
        new = [t for t in dict.fromkeys(tickers) if t not in self.markets]
        if not new:
            return []
        self.markets.update(new)
        return [self._add_on(now, channel, new) for channel in self.plan.market_channels]

    def _add_on(self, now: float, channel: str, tickers: Sequence[str]) -> Send:
        sub = self._updatable(channel)
        if sub is None:
            send = self.subscribe_channel(now, channel, tickers, "add")
        else:
            params = {P_SID: sub.sid, P_ACTION: ADD_MARKETS, P_MARKET_TICKERS: list(tickers)}
            send = self._send(now, UPDATE_SUBSCRIPTION, params, "add", sid=sub.sid)
        self.pending[send.id].channel = channel
        return send

    def remove_markets(self, now: float, tickers: Sequence[str]) -> list[Effect]:
        """Stop carrying these markets: removed from their sids, or the sid ended once all of its
        markets are gone (where removing is not documented, a dead market stays until then — it
        sends nothing, and it no longer counts against the connection)."""
        gone = [t for t in tickers if t in self.markets]
        if not gone:
            return []
        self.markets.difference_update(gone)
        effects: list[Effect] = []
        for sub in list(self.subs.values()):
            effects += self._prune(sub, now)
        return effects

    def _updatable(self, channel: str) -> Subscription | None:
        if channel not in DOCUMENTED_UPDATABLE:
            return None
        for sub in self.subs.values():
            if sub.channel == channel and sub.tickers and sub.sid not in self._closing:
                return sub
        return None

    def _prune(self, sub: Subscription, now: float) -> list[Effect]:
        """Drop the markets of ``sub`` this connection no longer carries."""
        if sub.channel in GLOBAL_CHANNELS or not sub.tickers or sub.sid in self._closing:
            return []
        dead = [t for t in sub.tickers if t not in self.markets]
        if not dead:
            return []
        if len(dead) == len(sub.tickers):
            self._closing.add(sub.sid)
            return [self._send(now, UNSUBSCRIBE, {P_SIDS: [sub.sid]}, "remove", sid=sub.sid)]
        if sub.channel in DOCUMENTED_UPDATABLE:
            params = {P_SID: sub.sid, P_ACTION: DELETE_MARKETS, P_MARKET_TICKERS: dead}
            return [self._send(now, UPDATE_SUBSCRIPTION, params, "remove", sid=sub.sid)]
        return []

    # -- frames --------------------------------------------------------------------------------
    def receive(self, frame: bytes, env: Envelope | None, now: float) -> Sequence[Effect]:
        """The one entry point for a received text frame (already archived), with its envelope as
        :func:`~.wire.parse` (or the connector's faster equivalent) decoded it — ``None`` when it
        is not a JSON object. Returns effects for the I/O layer.

        The hot path: a sequence check, and (rarely) a reaction. ``frame`` is read again only for
        control messages and snapshots answering a command."""
        if env is None:
            self.unparsed += 1
            return (Event(Ev.UNPARSED_FRAME, {"bytes": len(frame)}),)
        effects: Sequence[Effect] = _NOTHING
        sid, seq = env.sid, env.seq
        if sid is not None and seq is not None:
            sub = self.subs.get(sid)
            if sub is not None:
                if seq == sub.last_seq + 1:
                    sub.last_seq = seq
                else:
                    effects = self._track_seq(sub, seq, now)
        kind = env.type
        if kind in _NEEDS_BODY:
            if kind != ORDERBOOK_SNAPSHOT:
                return [*effects, *self._control(env, frame, now)]
            if env.id:
                return [*effects, *self._snapshot_reply(env, frame, now)]
        elif self.lifecycle and kind in LIFECYCLE_TYPES:
            msg = msg_object(frame)
            if isinstance(msg, dict):
                return [*effects, Lifecycle(kind, msg)]
        return effects

    def _track_seq(self, sub: Subscription, seq: int, now: float) -> Sequence[Effect]:
        """Out of sequence: a gap (recover) or a regression (report)."""
        sid = sub.sid
        expected = sub.last_seq + 1
        sub.last_seq = seq
        if seq < expected:
            return (Event(Ev.SEQ_REGRESSION, {"sid": sid, "channel": sub.channel, "expected": expected, "got": seq}),)
        self.gaps += 1
        gap = Event(
            Ev.GAP,
            {
                "sid": sid,
                "channel": sub.channel,
                "expected": expected,
                "got": seq,
                "missing": seq - expected,
                "tickers": list(sub.tickers),
            },
        )
        return [gap, *self._recover(sub, now, f"gap on sid {sid}")]

    def _recover(self, sub: Subscription, now: float, why: str) -> list[Effect]:
        """First rung of the ladder for a subscription that lost data."""
        if sub.sid in self.recovering:
            return []  # one recovery at a time per sid; a further gap is recorded, not re-requested
        if sub.channel == ORDERBOOK_DELTA and sub.tickers:
            send = self._send(
                now,
                UPDATE_SUBSCRIPTION,
                {P_SID: sub.sid, P_ACTION: GET_SNAPSHOT, P_MARKET_TICKERS: list(sub.tickers)},
                "snapshot",
                sid=sub.sid,
                expect=sub.tickers,
            )
            self.recovering[sub.sid] = send.id
            return [
                send,
                Event(
                    Ev.RECOVERY_REQUESTED,
                    {
                        "sid": sub.sid,
                        "channel": sub.channel,
                        "action": GET_SNAPSHOT,
                        "id": send.id,
                        "why": why,
                    },
                ),
            ]
        # Trades, lifecycle events and tickers have no snapshot: what was missed is recorded as a
        # gap and cannot be re-requested over the WebSocket.
        return [Event(Ev.RECOVERY_UNAVAILABLE, {"sid": sub.sid, "channel": sub.channel, "why": why})]

    def _resubscribe(self, sub: Subscription, now: float, why: str) -> list[Effect]:
        """Second rung: drop the sid and subscribe its channel and markets again."""
        self.subs.pop(sub.sid, None)
        self.recovering.pop(sub.sid, None)
        tickers = sub.tickers if sub.channel in GLOBAL_CHANNELS else tuple(t for t in sub.tickers if t in self.markets)
        if sub.tickers and not tickers:
            return []  # every market of it was removed meanwhile: nothing to subscribe again
        send = self.subscribe_channel(now, sub.channel, tickers, "resubscribe")
        self.pending[send.id].sid = sub.sid
        self.recovering.pop(sub.sid, None)
        return [
            send,
            Event(
                Ev.RESUBSCRIBE_REQUESTED,
                {
                    "sid": sub.sid,
                    "channel": sub.channel,
                    "id": send.id,
                    "tickers": list(tickers),
                    "why": why,
                },
            ),
        ]

    def _control(self, env: Envelope, frame: bytes, now: float) -> list[Effect]:
        kind = env.type
        msg = msg_object(frame)
        pending = self.pending.get(env.id or 0)
        if kind == SUBSCRIBED:
            channel = msg.get("channel") if isinstance(msg, dict) else None
            sid = msg.get("sid") if isinstance(msg, dict) else env.sid
            if not isinstance(sid, int) or not isinstance(channel, str):
                return [Event(Ev.PROTOCOL_ANOMALY, {"what": "subscribed reply without channel/sid"})]
            tickers: tuple[str, ...] = ()
            if pending is not None:
                tickers = tuple(pending.params.get(P_MARKET_TICKERS, ()))
                pending.expect.discard(channel)
                if not pending.expect:
                    del self.pending[pending.id]
            effects: list[Effect] = []
            held = self.subs.get(sid)
            if held is not None and held.channel == channel:
                # A repeated subscribe answered with a sid already held (whether Kalshi merges is
                # not documented): one subscription, its markets merged, its sequence kept.
                tickers = (*held.tickers, *(t for t in tickers if t not in held.tickers))
                held.tickers = tickers
                sub = held
                effects.append(Event(Ev.PROTOCOL_ANOMALY, {"what": f"subscribe answered with sid {sid}, already held"}))
            else:
                sub = self.subs[sid] = Subscription(sid, channel, tickers)
            if pending is not None and pending.purpose == "add":
                self._retry_delay = RETRY_FIRST
            fields: dict[str, Any] = {"sid": sid, "channel": channel, "tickers": list(tickers), "id": env.id}
            if pending is not None:
                fields["params"] = pending.params
            effects.append(Event(Ev.SUBSCRIBED, fields))
            if pending is not None and pending.purpose == "resubscribe":
                effects.append(
                    Event(
                        Ev.RECOVERY_COMPLETED,
                        {"sid": pending.sid, "new_sid": sid, "action": "resubscribe", "id": env.id},
                    )
                )
            return effects + self._prune(sub, now)  # markets removed while the reply was on its way
        if kind == ERROR:
            return self._error(env, msg if isinstance(msg, dict) else {}, pending, now)
        if kind == OK and pending is not None:
            del self.pending[pending.id]
            action = pending.params.get(P_ACTION)
            target = self.subs.get(pending.sid or env.sid or 0)
            if action == ADD_MARKETS:
                self._retry_delay = RETRY_FIRST
            if target is not None and action in (ADD_MARKETS, DELETE_MARKETS):
                changed = [t for t in pending.params.get(P_MARKET_TICKERS, ()) if isinstance(t, str)]
                if action == ADD_MARKETS:
                    target.tickers = (*target.tickers, *(t for t in changed if t not in target.tickers))
                else:
                    target.tickers = tuple(t for t in target.tickers if t not in changed)
                fields = {
                    "sid": target.sid,
                    "channel": target.channel,
                    "action": action,
                    "tickers": changed,
                    "id": env.id,
                }
                return [Event(Ev.MARKETS_CHANGED, fields), *self._prune(target, now)]
            listed = msg.get(P_MARKET_TICKERS) if isinstance(msg, dict) else None
            if env.sid in self.subs and isinstance(listed, list) and all(isinstance(t, str) for t in listed):
                self.subs[env.sid].tickers = tuple(listed)
            return [Event(Ev.COMMAND_OK, {"id": env.id, "cmd": pending.cmd, "sid": env.sid})]
        if kind == UNSUBSCRIBED:
            gone = self.subs.pop(env.sid, None) if env.sid is not None else None
            self._closing.discard(env.sid or 0)
            if pending is not None:
                del self.pending[pending.id]
            fields = {"sid": env.sid, "id": env.id}
            if gone is not None:
                fields |= {"channel": gone.channel, "tickers": list(gone.tickers)}
            return [Event(Ev.UNSUBSCRIBED, fields)]
        return []

    def _error(self, env: Envelope, msg: dict[str, Any], pending: Pending | None, now: float) -> list[Effect]:
        code = msg.get("code")
        text = msg.get("msg", "")
        sid = env.sid
        effects: list[Effect] = [Event(Ev.ERROR, {"id": env.id, "sid": sid, "code": code, "msg": text})]
        if pending is not None:
            del self.pending[pending.id]
            if pending.purpose == "snapshot" and pending.sid in self.subs:
                sub = self.subs[pending.sid]
                effects.append(
                    Event(
                        Ev.RECOVERY_FAILED,
                        {"sid": sub.sid, "action": GET_SNAPSHOT, "id": pending.id, "code": code},
                    )
                )
                effects += self._resubscribe(sub, now, f"get_snapshot failed with error {code}")
            elif pending.purpose in ("subscribe", "resubscribe"):
                effects.append(
                    Event(
                        Ev.RECOVERY_FAILED,
                        {"sid": pending.sid, "action": pending.purpose, "id": pending.id, "code": code},
                    )
                )
                effects.append(Reconnect(f"{pending.purpose} failed with error {code}: {text}"))
            elif pending.purpose == "add":
                effects += self._add_failed(pending, code, text, now)
            elif pending.purpose == "remove":
                self._closing.discard(pending.sid or 0)
        if code in TERMINAL_ERRORS and sid is not None and sid in self.subs:
            sub = self.subs[sid]
            effects += self._resubscribe(sub, now, f"terminal error {code} ({text}) on sid {sid}")
        return effects

    def _snapshot_reply(self, env: Envelope, frame: bytes, now: float) -> list[Effect]:
        pending = self.pending.get(env.id or 0)
        if pending is None or pending.purpose != "snapshot":
            return []
        head = data_head(frame)
        ticker = head.market_ticker if head is not None else None
        if ticker is not None:
            pending.expect.discard(ticker)
        if pending.expect:
            return []
        del self.pending[pending.id]
        if pending.sid is not None:
            self.recovering.pop(pending.sid, None)
        return [
            Event(
                Ev.RECOVERY_COMPLETED,
                {
                    "sid": pending.sid,
                    "action": GET_SNAPSHOT,
                    "id": pending.id,
                    "seconds": round(now - pending.sent_at, 3),
                },
            )
        ]

    def _add_failed(self, pending: Pending, code: object, text: object, now: float) -> list[Effect]:
        """An addition refused: too fast (27) → the same again after a backoff; too many markets on
        this connection (26) → handed up, to be placed on another; anything else → a new connection
        subscribes the current markets whole."""
        tickers = tuple(t for t in pending.params.get(P_MARKET_TICKERS, ()) if t in self.markets)
        if code == ErrorCode.TOO_MANY_REQUESTS and pending.channel is not None and tickers:
            self._retries.append((now + self._retry_delay, pending.channel, tickers))
            fields = {"channel": pending.channel, "tickers": list(tickers), "in": self._retry_delay, "code": code}
            self._retry_delay = min(RETRY_MAX, self._retry_delay * 2)
            return [Event(Ev.COMMAND_RETRY, fields)]
        if code == ErrorCode.MARKET_LIMIT and tickers:
            return [Event(Ev.MARKET_LIMIT, {"tickers": list(tickers), "code": code}), MarketLimit(tickers)]
        return [Reconnect(f"adding markets failed with error {code}: {text}")]

    # -- time ----------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Effect]:
        """Additions due again; escalate commands that went unanswered for ``command_timeout`` seconds."""
        effects: list[Effect] = []
        due = [r for r in self._retries if r[0] <= now]
        if due:
            self._retries = [r for r in self._retries if r[0] > now]
        for _, channel, tickers in due:
            still = [t for t in tickers if t in self.markets]
            if still:
                effects.append(self._add_on(now, channel, still))
        for pending in [p for p in self.pending.values() if now - p.sent_at > self.command_timeout]:
            del self.pending[pending.id]
            effects.append(
                Event(Ev.COMMAND_TIMEOUT, {"id": pending.id, "cmd": pending.cmd, "purpose": pending.purpose})
            )
            if pending.purpose == "snapshot" and pending.sid in self.subs:
                effects += self._resubscribe(self.subs[pending.sid], now, "get_snapshot timed out")
            elif pending.purpose in ("subscribe", "resubscribe", "add"):
                effects.append(
                    Reconnect(f"{pending.purpose} (id {pending.id}) got no reply in {self.command_timeout:.0f}s")
                )
        return effects

    @property
    def markets_subscribed(self) -> int:
        """Markets confirmed on at least one sid and still carried."""
        confirmed = {t for s in self.subs.values() for t in s.tickers}
        return len(confirmed) if self.plan.all_markets else len(confirmed & self.markets)
