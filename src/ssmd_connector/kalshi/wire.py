"""Kalshi WebSocket v2 on the wire: its vocabulary, and frames decoded and built.

The one place Kalshi's names are spelled — channels, message types, commands and their parameter
keys, error codes, which channels carry ``seq`` — together with the coverage ledger's event kinds,
and the functions that read and write frames. Both sides use it: the client session
(:mod:`.client`, the recorder) and the server session (:mod:`.server`, the simulator).
Reference: Kalshi's WebSocket documentation and AsyncAPI spec (a copy: ``tests/data/kalshi-asyncapi.yaml``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import IntEnum
from typing import Any, Final

import msgspec

from ..archive.line import within_depth

WS_PATH: Final = "/trade-api/ws/v2"
REST_PREFIX: Final = "/trade-api/v2"

# -- channels ----------------------------------------------------------------------------------
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
SEQUENCED_CHANNELS: Final = frozenset({ORDERBOOK_DELTA, TRADE, MARKET_LIFECYCLE_V2, MULTIVARIATE_MARKET_LIFECYCLE})
"""Channels whose messages carry ``seq`` (``ticker`` does not)."""
UPDATABLE_CHANNELS: Final = frozenset({ORDERBOOK_DELTA, TICKER, TRADE})
"""Channels whose markets ``update_subscription`` can change (the simulator accepts all three)."""
DOCUMENTED_UPDATABLE: Final = frozenset({ORDERBOOK_DELTA, TICKER})
"""Where Kalshi documents ``add_markets`` / ``delete_markets``: the recorder changes the markets
of other channels (``trade``) with a subscription of their own instead."""


def needs_markets(channel: str) -> bool:
    """Kalshi refuses this channel without a market filter (error 14): ``orderbook_delta``."""
    return channel == ORDERBOOK_DELTA


# -- message types (server → client) -----------------------------------------------------------
SUBSCRIBED: Final = "subscribed"
UNSUBSCRIBED: Final = "unsubscribed"
OK: Final = "ok"
ERROR: Final = "error"
ORDERBOOK_SNAPSHOT: Final = "orderbook_snapshot"
EVENT_LIFECYCLE: Final = "event_lifecycle"
"""A message type (not a channel): a new event and its ``series_ticker``, on the lifecycle channels."""
CONTROL_TYPES: Final = frozenset({SUBSCRIBED, UNSUBSCRIBED, OK, ERROR})
LIFECYCLE_TYPES: Final = frozenset({MARKET_LIFECYCLE_V2, MULTIVARIATE_MARKET_LIFECYCLE, EVENT_LIFECYCLE})
"""Message types that change the market universe (``created``, ``settled``, new events)."""
UNPARSED: Final = "_unparsed"
"""The type under which frames that are not a JSON object are counted (they are still archived)."""

# -- commands and their parameters --------------------------------------------------------------
SUBSCRIBE: Final = "subscribe"
UNSUBSCRIBE: Final = "unsubscribe"
UPDATE_SUBSCRIPTION: Final = "update_subscription"
LIST_SUBSCRIPTIONS: Final = "list_subscriptions"
ADD_MARKETS: Final = "add_markets"
DELETE_MARKETS: Final = "delete_markets"
GET_SNAPSHOT: Final = "get_snapshot"
P_CHANNELS: Final = "channels"
P_MARKET_TICKER: Final = "market_ticker"
P_MARKET_TICKERS: Final = "market_tickers"
P_SID: Final = "sid"
P_SIDS: Final = "sids"
P_ACTION: Final = "action"


# -- error codes -------------------------------------------------------------------------------
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


class Ev:
    """Kinds of coverage-ledger events (the ``event`` member; see :mod:`ssmd_connector.ledger`)."""

    CONNECT: Final = "connect"
    DISCONNECT: Final = "disconnect"
    CONNECT_FAILED: Final = "connect_failed"
    AUTH_FAILED: Final = "auth_failed"
    DISCOVERED: Final = "discovered"
    COMMAND: Final = "command"
    SUBSCRIBED: Final = "subscribed"
    UNSUBSCRIBED: Final = "unsubscribed"
    COMMAND_OK: Final = "command_ok"
    ERROR: Final = "error"
    GAP: Final = "gap"
    SEQ_REGRESSION: Final = "seq_regression"
    RECOVERY_REQUESTED: Final = "recovery_requested"
    RECOVERY_COMPLETED: Final = "recovery_completed"
    RECOVERY_FAILED: Final = "recovery_failed"
    RECOVERY_UNAVAILABLE: Final = "recovery_unavailable"
    RESUBSCRIBE_REQUESTED: Final = "resubscribe_requested"
    COMMAND_TIMEOUT: Final = "command_timeout"
    RECONNECT_REQUESTED: Final = "reconnect_requested"
    UNPARSED_FRAME: Final = "unparsed_frame"
    PROTOCOL_ANOMALY: Final = "protocol_anomaly"
    MARKET_ADDED: Final = "market_added"
    """The universe took a market in (ticker, shard, reason); ``markets_changed`` confirms it."""
    MARKET_REMOVED: Final = "market_removed"
    MARKETS_CHANGED: Final = "markets_changed"
    """A sid's markets changed (``update_subscription`` answered ``ok``): sid, channel, action, tickers."""
    SHARD_RETIRED: Final = "shard_retired"
    COMMAND_RETRY: Final = "command_retry"
    """An addition refused for its rate (error 27), to be sent again after a backoff."""
    MARKET_LIMIT: Final = "market_limit"
    """Kalshi refused more markets on a connection (error 26): they go to another."""
    RECORDER_STARTED: Final = "recorder_started"
    """A recorder process began: whatever an earlier one had subscribed ended with it."""


RECOVERY_OUTCOMES: Final = {
    Ev.RECOVERY_REQUESTED: "requested",
    Ev.RECOVERY_COMPLETED: "completed",
    Ev.RECOVERY_FAILED: "failed",
    Ev.RESUBSCRIBE_REQUESTED: "resubscribed",
    Ev.RECOVERY_UNAVAILABLE: "unavailable",
}
"""Ledger events that are steps of recovery, and their ``ssmd_recoveries_total{outcome}``."""


# -- frames in ---------------------------------------------------------------------------------
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


# -- frames out --------------------------------------------------------------------------------
def command(cmd_id: int, cmd: str, params: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"id": cmd_id, "cmd": cmd}
    if params is not None:
        body["params"] = params
    return _encode(body)


P_USE_YES_PRICE: Final = "use_yes_price"


def subscribe_params(channels: Sequence[str], tickers: Sequence[str] = ()) -> dict[str, Any]:
    """A subscription's parameters. Order books ask for ``use_yes_price: false`` explicitly (NO-side
    levels in NO prices): Kalshi has said the default will flip, and an archive must not change
    convention silently — the ledger records the parameters, and ``ssmd book`` reads them."""
    params: dict[str, Any] = {P_CHANNELS: list(channels)}
    if tickers:
        params[P_MARKET_TICKERS] = list(tickers)
    if ORDERBOOK_DELTA in channels:
        params[P_USE_YES_PRICE] = False
    return params


# -- server side helpers (used by the simulator) -----------------------------------------------
def error_frame(
    code: int, cmd_id: int | None = None, sid: int | None = None, seq: int | None = None, **extra: Any
) -> bytes:
    return message(
        ERROR, {"code": code, "msg": ERROR_TEXT.get(code, "Error"), **extra}, sid=sid, seq=seq, cmd_id=cmd_id
    )


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


def data_frame(
    kind: str, sid: int, seq: int | None, msg_json: bytes | msgspec.Raw, sending_ts_ms: int | None = None
) -> bytes:
    """A data message on ``sid`` (:func:`render`'s common case, in one formatting step: the hot
    path of every server that sends market data). ``msg_json`` may be a :class:`msgspec.Raw`: a
    slice of a decoded buffer, formatted without a copy."""
    if sending_ts_ms is None:
        if seq is not None:
            return b'{"type":"%s","sid":%d,"seq":%d,"msg":%s}' % (kind.encode(), sid, seq, msg_json)
        return b'{"type":"%s","sid":%d,"msg":%s}' % (kind.encode(), sid, msg_json)
    if seq is not None:
        return b'{"type":"%s","sid":%d,"seq":%d,"msg":%s,"sending_ts_ms":%d}' % (
            kind.encode(),
            sid,
            seq,
            msg_json,
            sending_ts_ms,
        )
    return b'{"type":"%s","sid":%d,"msg":%s,"sending_ts_ms":%d}' % (kind.encode(), sid, msg_json, sending_ts_ms)


def render(
    kind: str,
    msg_json: bytes,
    *,
    sid: int | None = None,
    seq: int | None = None,
    cmd_id: int | None = None,
    sending_ts_ms: int | None = None,
) -> bytes:
    """Like :func:`message` with the payload already encoded: one payload, many subscribers.
    ``sending_ts_ms`` (when the exchange queued the frame) is newer than Kalshi's AsyncAPI spec:
    its documentation pages show it top-level on data messages, and it is seen live."""
    if sid is not None and not cmd_id:
        return data_frame(kind, sid, seq, msg_json, sending_ts_ms)
    head = b'{"type":"' + kind.encode() + b'"'
    if cmd_id:
        head += b',"id":%d' % cmd_id
    if sid is not None:
        head += b',"sid":%d' % sid
    if seq is not None:
        head += b',"seq":%d' % seq
    tail = b',"sending_ts_ms":%d}' % sending_ts_ms if sending_ts_ms is not None else b"}"
    return head + b',"msg":' + msg_json + tail


def endpoint_urls(host: str, port: int) -> tuple[str, str]:
    """A server's WebSocket and REST base addresses on ``host:port``, as Kalshi lays them out (the
    simulator and replay both serve both)."""
    return f"ws://{host}:{port}{WS_PATH}", f"http://{host}:{port}{REST_PREFIX}"
