"""Kalshi WebSocket v2, sans I/O: the vocabulary and the client's protocol state machine.

Pure and synchronous — no sockets, no clocks read implicitly (callers pass ``now``) — so it is
tested on its own and shared by the connector (client side) and the simulator (server side).
Reference: ``shared/kalshi-protocol.md`` and Kalshi's AsyncAPI spec.

The client state (:class:`ClientSession`) tracks, per connection:

* commands in flight, matched to replies by ``id``;
* subscriptions: sid ↔ channel ↔ tickers (from ``subscribed`` and ``ok`` replies);
* the per-sid sequence counter — one counter per sid shared by all its markets; every frame that
  carries ``sid`` and ``seq`` consumes a number, ``ok``/``unsubscribed`` replies included;
* recovery: on a gap in an order-book sid, ask for a snapshot (``get_snapshot``); if that fails,
  resubscribe; if that fails, reconnect. Terminal errors 10 and 25 on a sid resubscribe that sid.

It never decides anything about the archive: every frame is archived by the caller *before*
:meth:`ClientSession.receive` sees it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

import msgspec

from ...archive.line import within_depth

WS_PATH: Final = "/trade-api/ws/v2"
REST_PREFIX: Final = "/trade-api/v2"

# -- channels and message types ---------------------------------------------------------------
ORDERBOOK_DELTA: Final = "orderbook_delta"
TICKER: Final = "ticker"
TRADE: Final = "trade"
MARKET_LIFECYCLE_V2: Final = "market_lifecycle_v2"
MULTIVARIATE_MARKET_LIFECYCLE: Final = "multivariate_market_lifecycle"

DEFAULT_CHANNELS: Final = (TICKER, TRADE, MARKET_LIFECYCLE_V2)
PUBLIC_MARKET_CHANNELS: Final = frozenset({ORDERBOOK_DELTA, TICKER, TRADE})
"""Market-data channels that take a market filter (``orderbook_delta`` requires one)."""
GLOBAL_CHANNELS: Final = frozenset({MARKET_LIFECYCLE_V2, MULTIVARIATE_MARKET_LIFECYCLE})
"""Channels that accept no market filter."""
KNOWN_CHANNELS: Final = frozenset(
    {
        ORDERBOOK_DELTA,
        TICKER,
        TRADE,
        "fill",
        "market_positions",
        MARKET_LIFECYCLE_V2,
        MULTIVARIATE_MARKET_LIFECYCLE,
        "communications",
        "order_group_updates",
        "user_orders",
        "cfbenchmarks_value",
        "cfbenchmarks_value_5hz",
        "pyth_value",
    }
)
RECORDABLE_CHANNELS: Final = PUBLIC_MARKET_CHANNELS | GLOBAL_CHANNELS
"""Channels the recorder knows how to subscribe (market data, not private account streams)."""

# Server → client message types
SUBSCRIBED: Final = "subscribed"
UNSUBSCRIBED: Final = "unsubscribed"
OK: Final = "ok"
ERROR: Final = "error"
ORDERBOOK_SNAPSHOT: Final = "orderbook_snapshot"
CONTROL_TYPES: Final = frozenset({SUBSCRIBED, UNSUBSCRIBED, OK, ERROR})
UNPARSED: Final = "_unparsed"
"""The type under which frames that are not a JSON object are counted (they are still archived)."""

# Commands
SUBSCRIBE: Final = "subscribe"
UNSUBSCRIBE: Final = "unsubscribe"
UPDATE_SUBSCRIPTION: Final = "update_subscription"
LIST_SUBSCRIPTIONS: Final = "list_subscriptions"
ADD_MARKETS: Final = "add_markets"
DELETE_MARKETS: Final = "delete_markets"
GET_SNAPSHOT: Final = "get_snapshot"


class ErrorCode(IntEnum):
    UNABLE_TO_PROCESS = 1
    PARAMS_REQUIRED = 2
    CHANNELS_REQUIRED = 3
    SIDS_REQUIRED = 4
    UNKNOWN_COMMAND = 5
    UNKNOWN_SID = 7
    UNKNOWN_CHANNEL = 8
    AUTH_REQUIRED = 9
    CHANNEL_ERROR = 10
    INVALID_PARAMETER = 11
    EXACTLY_ONE_SID = 12
    UNSUPPORTED_ACTION = 13
    MARKET_TICKER_REQUIRED = 14
    ACTION_REQUIRED = 15
    COMMAND_TIMEOUT = 18
    BUFFER_OVERFLOW = 25
    MARKET_LIMIT = 26
    TOO_MANY_REQUESTS = 27


ERROR_TEXT: Final[dict[int, str]] = {
    1: "Unable to process message",
    2: "Params required",
    3: "Channels required",
    4: "Subscription IDs required",
    5: "Unknown command",
    7: "Unknown subscription ID",
    8: "Unknown channel name",
    9: "Authentication required",
    10: "Channel error",
    11: "Invalid parameter",
    12: "Exactly one subscription ID is required",
    13: "Unsupported action",
    14: "Market Ticker required",
    15: "Action required",
    18: "Command timeout",
    25: "Subscription buffer overflow",
    26: "Subscription market limit exceeded",
    27: "Too many requests",
}
TERMINAL_ERRORS: Final = frozenset({ErrorCode.CHANNEL_ERROR, ErrorCode.BUFFER_OVERFLOW})


# -- frames ------------------------------------------------------------------------------------
class DataHead(msgspec.Struct, gc=False):
    """The few ``msg`` fields the recorder reads from data messages (others are skipped)."""

    market_ticker: str | None = None
    ts_ms: int | float | None = None


class Envelope(msgspec.Struct, gc=False):
    """The fields every frame may carry, decoded in one pass that also validates the JSON.

    ``msg`` is skipped (validated, not built): the hot path needs only the envelope, and the few
    messages that need their body (control replies, snapshots answering a command) decode it again.
    """

    type: str = ""
    id: int | None = None
    sid: int | None = None
    seq: int | None = None


class _Body(msgspec.Struct, gc=False):
    msg: DataHead | None = None


decode_envelope = msgspec.json.Decoder(Envelope).decode
"""The fast path of :func:`parse`: raises ``msgspec.DecodeError``/``ValidationError`` (ValueErrors)."""
_body = msgspec.json.Decoder(_Body)


def data_head(frame: bytes) -> DataHead | None:
    """``msg.market_ticker`` and ``msg.ts_ms`` of a data message (``None`` when absent or odd)."""
    try:
        return _body.decode(frame).msg
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


_any = msgspec.json.Decoder()
_encode = msgspec.json.encode


def parse(frame: bytes) -> Envelope | None:
    """The envelope of a frame, or ``None`` when it is not a JSON object.

    Valid JSON with unexpected field types (say a string ``sid``) still yields an envelope, with
    only the fields that make sense, so an odd message never hides a sequence number.
    """
    if not within_depth(frame):  # (never hand the decoders a frame deep enough to exhaust the stack)
        return None
    try:
        return decode_envelope(frame)
    except msgspec.ValidationError:  # valid JSON, unexpected types (a subclass of DecodeError)
        return _loose_envelope(frame)
    except msgspec.DecodeError:
        return None


_OBJECT_START = re.compile(rb"[ \t\r\n]*\{")


def _loose_envelope(frame: bytes) -> Envelope | None:
    if _OBJECT_START.match(frame) is None:  # (never build a big array or string just to drop it)
        return None
    try:
        body = _any.decode(frame)
    except msgspec.DecodeError:
        return None
    if not isinstance(body, dict):
        return None

    def as_int(key: str) -> int | None:
        value = body.get(key)
        return value if type(value) is int else None

    kind = body.get("type")
    return Envelope(type=kind if isinstance(kind, str) else "", id=as_int("id"), sid=as_int("sid"), seq=as_int("seq"))


def msg_object(frame: bytes) -> Any:
    """The ``msg`` member of a frame, fully decoded (for the rare control messages)."""
    try:
        body = _any.decode(frame)
    except msgspec.DecodeError:
        return None
    return body.get("msg") if isinstance(body, dict) else None


def command(cmd_id: int, cmd: str, params: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"id": cmd_id, "cmd": cmd}
    if params is not None:
        body["params"] = params
    return _encode(body)


def subscribe_params(channels: Sequence[str], tickers: Sequence[str] = ()) -> dict[str, Any]:
    params: dict[str, Any] = {"channels": list(channels)}
    if tickers:
        params["market_tickers"] = list(tickers)
    return params


# -- client side -------------------------------------------------------------------------------
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
    """subscribe | snapshot | resubscribe | unsubscribe | list"""
    sid: int | None = None
    """The subscription a recovery command is about."""
    expect: set[str] = field(default_factory=set)
    """Channels (subscribe) or tickers (snapshot) still owed a reply."""


# Effects returned to the I/O layer -------------------------------------------------------------
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


Effect = Send | Event | Reconnect


@dataclass(frozen=True)
class ShardPlan:
    """What one connection subscribes: market channels for its tickers, plus global channels."""

    market_channels: tuple[str, ...]
    tickers: tuple[str, ...]
    global_channels: tuple[str, ...] = ()

    @property
    def groups(self) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        out = []
        if self.market_channels:
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
        if ORDERBOOK_DELTA in market:
            raise ValueError("orderbook_delta needs market tickers (subscription.markets or discover)")
        return [ShardPlan(market, (), glob)]
    chunks = [tuple(tickers[i : i + max_per_connection]) for i in range(0, len(tickers), max_per_connection)]
    return [ShardPlan(market, chunk, glob if i == 0 else ()) for i, chunk in enumerate(chunks)]


_NOTHING: Final[tuple[Effect, ...]] = ()
_NEEDS_BODY: Final = CONTROL_TYPES | {ORDERBOOK_SNAPSHOT}


class ClientSession:
    """Protocol state of one connection, from the client's side. Fresh for every connection."""

    def __init__(
        self,
        plan: ShardPlan,
        *,
        command_timeout: float = 10.0,
        type_counts: dict[str, int] | None = None,
        observe_age: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.command_timeout = command_timeout
        self.subs: dict[int, Subscription] = {}
        self.pending: dict[int, Pending] = {}
        self._next_id = 1
        self.type_counts: dict[str, int] = {} if type_counts is None else type_counts
        """Frames by message type; may be a counter shared across connections."""
        self._observe_age = observe_age
        """Called with (receive time - exchange ts_ms) in seconds for data messages that carry ts_ms."""
        self._clock = clock
        """Monotonic seconds, for command timeouts; read only when a command is sent or answered."""
        self.gaps = 0
        self.recovering: dict[int, int] = {}
        """sid → id of the recovery command in flight."""
        self.unparsed = 0
        self._age_stamp = -1

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

    # -- frames --------------------------------------------------------------------------------
    def receive(self, frame: bytes, now: float | None = None, received_ns: int = 0) -> Sequence[Effect]:
        """Digest one text frame (already archived). Returns effects for the I/O layer."""
        env = parse(frame)
        if env is None:
            return self.unparsable(frame)
        return self.on_envelope(env, frame, received_ns, now)

    def unparsable(self, frame: bytes) -> Sequence[Effect]:
        """A text frame that is not a JSON object: counted and reported, nothing else."""
        self.unparsed += 1
        self.type_counts[UNPARSED] = self.type_counts.get(UNPARSED, 0) + 1
        return (Event("unparsed_frame", {"bytes": len(frame)}),)

    def on_envelope(
        self, env: Envelope, frame: bytes, received_ns: int = 0, now: float | None = None
    ) -> Sequence[Effect]:
        """The hot path: count, sequence-check, and (rarely) react. ``frame`` is read only for
        control messages; ``now`` (monotonic s) defaults to the session's clock when needed."""
        kind = env.type
        counts = self.type_counts
        counts[kind] = counts.get(kind, 0) + 1
        if received_ns != self._age_stamp and self._observe_age is not None and kind not in CONTROL_TYPES:
            # Message age is sampled once per socket read (frames of a read share a receive
            # stamp): exact at ordinary rates, where a read holds a frame or two, and cheap in
            # a burst, where it holds thousands.
            head = data_head(frame)
            if head is not None and head.ts_ms:
                self._age_stamp = received_ns
                self._observe_age(received_ns / 1e9 - head.ts_ms / 1e3)
        effects: Sequence[Effect] = _NOTHING
        sid, seq = env.sid, env.seq
        if sid is not None and seq is not None:
            sub = self.subs.get(sid)
            if sub is not None:
                if seq == sub.last_seq + 1:
                    sub.last_seq = seq
                else:
                    effects = self._track_seq(sub, seq, self._clock() if now is None else now)
        if kind in _NEEDS_BODY:
            now = self._clock() if now is None else now
            if kind != ORDERBOOK_SNAPSHOT:
                return [*effects, *self._control(env, frame, now)]
            if env.id:
                return [*effects, *self._snapshot_reply(env, frame, now)]
        return effects

    def _track_seq(self, sub: Subscription, seq: int, now: float) -> Sequence[Effect]:
        """Out of sequence: a gap (recover) or a regression (report)."""
        sid = sub.sid
        expected = sub.last_seq + 1
        sub.last_seq = seq
        if seq < expected:
            return (Event("seq_regression", {"sid": sid, "channel": sub.channel, "expected": expected, "got": seq}),)
        self.gaps += 1
        gap = Event(
            "gap",
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
                {"sid": sub.sid, "action": GET_SNAPSHOT, "market_tickers": list(sub.tickers)},
                "snapshot",
                sid=sub.sid,
                expect=sub.tickers,
            )
            self.recovering[sub.sid] = send.id
            return [
                send,
                Event(
                    "recovery_requested",
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
        return [Event("recovery_unavailable", {"sid": sub.sid, "channel": sub.channel, "why": why})]

    def _resubscribe(self, sub: Subscription, now: float, why: str) -> list[Effect]:
        """Second rung: drop the sid and subscribe its channel and markets again."""
        self.subs.pop(sub.sid, None)
        send = self.subscribe_channel(now, sub.channel, sub.tickers, "resubscribe")
        self.pending[send.id].sid = sub.sid
        self.recovering.pop(sub.sid, None)
        return [
            send,
            Event(
                "resubscribe_requested",
                {
                    "sid": sub.sid,
                    "channel": sub.channel,
                    "id": send.id,
                    "tickers": list(sub.tickers),
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
                return [Event("protocol_anomaly", {"what": "subscribed reply without channel/sid"})]
            tickers: tuple[str, ...] = ()
            if pending is not None:
                tickers = tuple(pending.params.get("market_tickers", ()))
                pending.expect.discard(channel)
                if not pending.expect:
                    del self.pending[pending.id]
            self.subs[sid] = Subscription(sid, channel, tickers)
            fields: dict[str, Any] = {"sid": sid, "channel": channel, "tickers": list(tickers), "id": env.id}
            effects: list[Effect] = [Event("subscribed", fields)]
            if pending is not None and pending.purpose == "resubscribe":
                effects.append(
                    Event(
                        "recovery_completed",
                        {"sid": pending.sid, "new_sid": sid, "action": "resubscribe", "id": env.id},
                    )
                )
            return effects
        if kind == ERROR:
            return self._error(env, msg if isinstance(msg, dict) else {}, pending, now)
        if kind == OK and pending is not None:
            del self.pending[pending.id]
            if isinstance(msg, dict) and env.sid in self.subs and "market_tickers" in msg:
                self.subs[env.sid].tickers = tuple(msg["market_tickers"])
            return [Event("command_ok", {"id": env.id, "cmd": pending.cmd, "sid": env.sid})]
        if kind == UNSUBSCRIBED:
            if env.sid is not None:
                self.subs.pop(env.sid, None)
            if pending is not None:
                del self.pending[pending.id]
            return [Event("unsubscribed", {"sid": env.sid, "id": env.id})]
        return []

    def _error(self, env: Envelope, msg: dict[str, Any], pending: Pending | None, now: float) -> list[Effect]:
        code = msg.get("code")
        text = msg.get("msg", "")
        sid = env.sid
        effects: list[Effect] = [Event("error", {"id": env.id, "sid": sid, "code": code, "msg": text})]
        if pending is not None:
            del self.pending[pending.id]
            if pending.purpose == "snapshot" and pending.sid in self.subs:
                sub = self.subs[pending.sid]
                effects.append(
                    Event(
                        "recovery_failed",
                        {"sid": sub.sid, "action": GET_SNAPSHOT, "id": pending.id, "code": code},
                    )
                )
                effects += self._resubscribe(sub, now, f"get_snapshot failed with error {code}")
            elif pending.purpose in ("subscribe", "resubscribe"):
                effects.append(
                    Event(
                        "recovery_failed",
                        {"sid": pending.sid, "action": pending.purpose, "id": pending.id, "code": code},
                    )
                )
                effects.append(Reconnect(f"{pending.purpose} failed with error {code}: {text}"))
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
                "recovery_completed",
                {
                    "sid": pending.sid,
                    "action": GET_SNAPSHOT,
                    "id": pending.id,
                    "seconds": round(now - pending.sent_at, 3),
                },
            )
        ]

    # -- time ----------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Effect]:
        """Escalate commands that went unanswered for ``command_timeout`` seconds."""
        effects: list[Effect] = []
        for pending in [p for p in self.pending.values() if now - p.sent_at > self.command_timeout]:
            del self.pending[pending.id]
            effects.append(Event("command_timeout", {"id": pending.id, "cmd": pending.cmd, "purpose": pending.purpose}))
            if pending.purpose == "snapshot" and pending.sid in self.subs:
                effects += self._resubscribe(self.subs[pending.sid], now, "get_snapshot timed out")
            elif pending.purpose in ("subscribe", "resubscribe"):
                effects.append(
                    Reconnect(f"{pending.purpose} (id {pending.id}) got no reply in {self.command_timeout:.0f}s")
                )
        return effects

    @property
    def markets_subscribed(self) -> int:
        return len({t for s in self.subs.values() for t in s.tickers})


# -- server side helpers (used by the simulator) -----------------------------------------------
def error_frame(
    code: int, cmd_id: int | None = None, sid: int | None = None, seq: int | None = None, **extra: Any
) -> bytes:
    body: dict[str, Any] = {"type": ERROR}
    if cmd_id:
        body["id"] = cmd_id
    if sid is not None:
        body["sid"] = sid
    if seq is not None:
        body["seq"] = seq
    body["msg"] = {"code": code, "msg": ERROR_TEXT.get(code, "Error"), **extra}
    return _encode(body)


def message(kind: str, msg: Any, *, sid: int | None = None, seq: int | None = None, cmd_id: int | None = None) -> bytes:
    """A server → client frame in Kalshi's field order: type, id, sid, seq, msg."""
    body: dict[str, Any] = {"type": kind}
    if cmd_id:
        body["id"] = cmd_id
    if sid is not None:
        body["sid"] = sid
    if seq is not None:
        body["seq"] = seq
    if msg is not None:
        body["msg"] = msg
    return _encode(body)


def render(
    kind: str, msg_json: bytes, *, sid: int | None = None, seq: int | None = None, cmd_id: int | None = None
) -> bytes:
    """Like :func:`message` with the payload already encoded: one payload, many subscribers."""
    head = b'{"type":"' + kind.encode() + b'"'
    if cmd_id:
        head += b',"id":%d' % cmd_id
    if sid is not None:
        head += b',"sid":%d' % sid
    if seq is not None:
        head += b',"seq":%d' % seq
    return head + b',"msg":' + msg_json + b"}"
