"""Kalshi WebSocket v2, the server's side, sans I/O: the protocol state of one client connection.

What an exchange does with a client's commands — subscriptions and their sids, the per-sid
``seq`` numbering, ``subscribe`` / ``unsubscribe`` / ``update_subscription`` (``add_markets``,
``delete_markets``, ``get_snapshot``) / ``list_subscriptions``, their replies and Kalshi's error
codes — and how market data is fanned out to the subscriptions that want it. The simulator
(:mod:`ssmd_connector.sim.server`) is the I/O around it, and so will the replay server be.

Frames leave through ``emit(frame, sub)``: ``sub`` is the subscription a data frame belongs to
(the I/O layer may refuse it when the client reads too slowly, and then calls
:meth:`ServerSession.overflow`, as Kalshi answers a slow reader with error 25), ``None`` for
replies and errors. Order-book snapshots come from ``snapshot(ticker)``, the caller's books.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..archive.line import within_depth
from .book import yes_prices
from .wire import (
    ADD_MARKETS,
    DELETE_MARKETS,
    GET_SNAPSHOT,
    GLOBAL_CHANNELS,
    KNOWN_CHANNELS,
    LIST_SUBSCRIPTIONS,
    MARKET_LIFECYCLE_V2,
    OK,
    ORDERBOOK_DELTA,
    ORDERBOOK_SNAPSHOT,
    P_ACTION,
    P_CHANNELS,
    P_MARKET_TICKER,
    P_MARKET_TICKERS,
    P_SID,
    P_SIDS,
    P_USE_YES_PRICE,
    SEQUENCED_CHANNELS,
    SUBSCRIBE,
    SUBSCRIBED,
    TICKER,
    TRADE,
    UNSUBSCRIBE,
    UNSUBSCRIBED,
    UPDATABLE_CHANNELS,
    UPDATE_SUBSCRIPTION,
    ErrorCode,
    data_frame,
    error_frame,
    message,
    needs_markets,
)

_decode = msgspec.json.decode
_encode = msgspec.json.encode
BOOK_TYPES = frozenset({ORDERBOOK_SNAPSHOT, ORDERBOOK_DELTA})


@dataclass
class Subscription:
    """A subscription as the server numbers it."""

    sid: int
    channel: str
    tickers: set[str] | None
    """``None`` = every market (channels that take no filter, or none given)."""
    order: list[str] = field(default_factory=list)
    seq: int = 0
    skip: int = 0
    """Numbers to leave out before the next one (a fault: the client sees a gap)."""
    sequenced: bool = field(init=False)
    """Its channel numbers its messages (``seq``): fixed with the channel, looked up once."""
    yes_price: bool = False
    """``use_yes_price: true``: order-book NO-side levels priced as YES (one minus the NO price)."""

    def __post_init__(self) -> None:
        self.sequenced = self.channel in SEQUENCED_CHANNELS

    def next_seq(self) -> int:
        self.seq += 1 + self.skip
        self.skip = 0
        return self.seq


Emit = Callable[[bytes, Subscription | None], None]
Snapshot = Callable[[str], Any]
"""The ``msg`` of an ``orderbook_snapshot`` for a ticker, or ``None`` for an unknown market."""


class _InvalidParameter(Exception):
    """A command parameter is malformed (error 11)."""


class ServerSession:
    """One client connection's subscriptions and replies, as Kalshi keeps them."""

    def __init__(self, emit: Emit, snapshot: Snapshot, *, market_limit: int = 0) -> None:
        self._emit = emit
        self._snapshot = snapshot
        self.market_limit = market_limit
        """Market subscriptions this connection may hold, counted per sid (0: no limit). Kalshi
        publishes 500,000 per session; a small one exercises error 26."""
        self.subs: dict[int, Subscription] = {}
        self.by_channel: dict[str, list[Subscription]] = {}
        self._next_sid = 1

    # -- subscriptions -------------------------------------------------------------------------
    def add(self, channel: str, tickers: list[str] | None) -> Subscription:
        sub = Subscription(self._next_sid, channel, None if tickers is None else set(tickers), list(tickers or []))
        self._next_sid += 1
        self.subs[sub.sid] = sub
        self.by_channel.setdefault(channel, []).append(sub)
        return sub

    def drop(self, sid: int) -> None:
        sub = self.subs.pop(sid, None)
        if sub is not None:
            self.by_channel[sub.channel].remove(sub)

    # -- frames out ----------------------------------------------------------------------------
    def send(self, kind: str, msg: Any, sub: Subscription | None = None, cmd_id: int | None = None) -> None:
        """A reply or data message; consumes a seq when the subscription's channel is sequenced."""
        if sub is not None and sub.yes_price and kind in BOOK_TYPES and isinstance(msg, dict):
            msg = yes_prices(msg)
        seq = sub.next_seq() if sub is not None and sub.sequenced else None
        self._emit(message(kind, msg, sid=sub.sid if sub is not None else None, seq=seq, cmd_id=cmd_id), sub)

    def error(self, code: int, cmd_id: int | None, **extra: Any) -> None:
        self._emit(error_frame(code, cmd_id, **extra), None)

    def snapshot(self, sub: Subscription, ticker: str, cmd_id: int | None = None) -> None:
        msg = self._snapshot(ticker)
        if msg is not None:
            self.send(ORDERBOOK_SNAPSHOT, msg, sub, cmd_id)

    def deliver(
        self, channel: str, ticker: str, kind: str, payload: bytes | msgspec.Raw, sending_ts_ms: int | None = None
    ) -> None:
        """Market data (``payload``: the encoded ``msg``, shared by every subscriber) to each
        subscription of ``channel`` that wants ``ticker``; ``sending_ts_ms``: when it was queued.
        The hot path of the simulator and of replay: kept to plain attribute access."""
        subs = self.by_channel.get(channel)
        if not subs:
            return
        emit = self._emit
        converted: bytes | None = None
        for sub in subs:
            tickers = sub.tickers
            if tickers is not None and ticker not in tickers:
                continue
            if sub.yes_price and kind in BOOK_TYPES:  # (re-encoded once per message, for those who asked)
                converted = converted or _encode(yes_prices(_decode(payload)))
                payload_for: bytes | msgspec.Raw = converted
            else:
                payload_for = payload
            if sub.sequenced:
                sub.seq += 1 + sub.skip
                sub.skip = 0
                emit(data_frame(kind, sub.sid, sub.seq, payload_for, sending_ts_ms), sub)
            else:
                emit(data_frame(kind, sub.sid, None, payload_for, sending_ts_ms), sub)

    def terminate(self, sub: Subscription, code: int) -> None:
        """End a subscription with a terminal error (10, 25): dropped, the error on its sid."""
        seq = sub.next_seq() if sub.sequenced else None
        self.drop(sub.sid)
        self._emit(error_frame(code, sid=sub.sid, seq=seq), None)

    def overflow(self, sub: Subscription) -> None:
        """The client does not read fast enough for ``sub``: Kalshi's error 25 ends it."""
        if sub.sid in self.subs:
            self.terminate(sub, ErrorCode.BUFFER_OVERFLOW)

    def pick(self) -> Subscription | None:
        """A subscription to aim a fault at: sequenced, order books first."""
        for channel in (ORDERBOOK_DELTA, TRADE, MARKET_LIFECYCLE_V2, TICKER):
            if self.by_channel.get(channel):
                return self.by_channel[channel][0]
        return None

    # -- commands ------------------------------------------------------------------------------
    def command(self, raw: bytes) -> None:
        """One text frame from the client: a command, answered through ``emit``."""
        try:
            body = _decode(raw) if within_depth(raw) else None
        except msgspec.DecodeError:
            body = None
        if not isinstance(body, dict):
            self.error(ErrorCode.UNABLE_TO_PROCESS, None)
            return
        cmd_id = body.get("id") if isinstance(body.get("id"), int) else None
        cmd = body.get("cmd")
        params = body.get("params")
        handler = {
            SUBSCRIBE: self._subscribe,
            UNSUBSCRIBE: self._unsubscribe,
            UPDATE_SUBSCRIPTION: self._update,
            LIST_SUBSCRIPTIONS: self._list,
        }.get(cmd if isinstance(cmd, str) else "")
        if handler is None:
            self.error(ErrorCode.UNKNOWN_COMMAND, cmd_id)
            return
        if cmd != LIST_SUBSCRIPTIONS and not isinstance(params, dict):
            self.error(ErrorCode.PARAMS_REQUIRED, cmd_id)
            return
        handler(cmd_id, params if isinstance(params, dict) else {})

    def _market_filter(self, cmd_id: int | None, params: dict[str, Any]) -> tuple[bool, list[str] | None]:
        """The command's market filter; ``(False, None)`` after answering error 11 when malformed."""
        try:
            return True, _tickers(params)
        except _InvalidParameter:
            self.error(ErrorCode.INVALID_PARAMETER, cmd_id)
            return False, None

    def _subscribe(self, cmd_id: int | None, params: dict[str, Any]) -> None:
        channels = params.get(P_CHANNELS)
        if not channels:
            self.error(ErrorCode.CHANNELS_REQUIRED, cmd_id)
            return
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            self.error(ErrorCode.INVALID_PARAMETER, cmd_id)
            return
        if any(c not in KNOWN_CHANNELS for c in channels):
            self.error(ErrorCode.UNKNOWN_CHANNEL, cmd_id)
            return
        ok, tickers = self._market_filter(cmd_id, params)
        if not ok:
            return
        if not tickers and any(needs_markets(c) for c in channels):
            self.error(ErrorCode.MARKET_TICKER_REQUIRED, cmd_id)
            return
        filtered = sum(1 for c in channels if c not in GLOBAL_CHANNELS)
        if tickers and self._over_limit(len(tickers) * filtered):
            self.error(ErrorCode.MARKET_LIMIT, cmd_id)
            return
        yes_price = params.get(P_USE_YES_PRICE)
        if yes_price is not None and not isinstance(yes_price, bool):
            self.error(ErrorCode.INVALID_PARAMETER, cmd_id)
            return
        for channel in channels:
            sub = self.add(channel, None if channel in GLOBAL_CHANNELS else tickers)
            sub.yes_price = bool(yes_price) and channel == ORDERBOOK_DELTA
            self._emit(message(SUBSCRIBED, {"channel": channel, "sid": sub.sid}, cmd_id=cmd_id), None)
            if channel == ORDERBOOK_DELTA:
                for ticker in sub.order:
                    self.snapshot(sub, ticker)

    def _unsubscribe(self, cmd_id: int | None, params: dict[str, Any]) -> None:
        sids = params.get(P_SIDS)
        if not sids or not isinstance(sids, list):
            self.error(ErrorCode.SIDS_REQUIRED, cmd_id)
            return
        for sid in sids:
            sub = self.subs.get(sid) if isinstance(sid, int) else None
            if sub is None:
                self.error(ErrorCode.UNKNOWN_SID, cmd_id)
                continue
            seq = sub.next_seq()
            self.drop(sub.sid)
            self._emit(message(UNSUBSCRIBED, None, sid=sub.sid, seq=seq, cmd_id=cmd_id), None)

    def _update(self, cmd_id: int | None, params: dict[str, Any]) -> None:
        action = params.get(P_ACTION)
        if action is None:
            self.error(ErrorCode.ACTION_REQUIRED, cmd_id)
            return
        if action not in (ADD_MARKETS, DELETE_MARKETS, GET_SNAPSHOT):
            self.error(ErrorCode.UNSUPPORTED_ACTION, cmd_id)
            return
        sid, sids = params.get(P_SID), params.get(P_SIDS)
        if (sid is None) == (sids is None) or (sids is not None and (not isinstance(sids, list) or len(sids) != 1)):
            self.error(ErrorCode.EXACTLY_ONE_SID, cmd_id)
            return
        sid = sid if sid is not None else sids[0]  # type: ignore[index]
        sub = self.subs.get(sid) if isinstance(sid, int) else None
        if sub is None:
            self.error(ErrorCode.UNKNOWN_SID, cmd_id)
            return
        if sub.channel not in UPDATABLE_CHANNELS:
            self.error(ErrorCode.UNSUPPORTED_ACTION, cmd_id)
            return
        ok, tickers = self._market_filter(cmd_id, params)
        if not ok:
            return
        if action == GET_SNAPSHOT:
            if sub.channel != ORDERBOOK_DELTA:
                self.error(ErrorCode.UNSUPPORTED_ACTION, cmd_id)
                return
            for ticker in tickers or list(sub.order):
                self.snapshot(sub, ticker, cmd_id)
            return
        if not tickers:
            self.error(ErrorCode.MARKET_TICKER_REQUIRED, cmd_id)
            return
        if sub.tickers is None:
            sub.tickers, sub.order = set(), []
        if action == ADD_MARKETS and self._over_limit(len(set(tickers) - sub.tickers)):
            self.error(ErrorCode.MARKET_LIMIT, cmd_id)
            return
        added = []
        for ticker in tickers:
            if action == ADD_MARKETS and ticker not in sub.tickers:
                sub.tickers.add(ticker)
                sub.order.append(ticker)
                added.append(ticker)
            elif action == DELETE_MARKETS and ticker in sub.tickers:
                sub.tickers.discard(ticker)
                sub.order.remove(ticker)
        self.send(OK, {P_MARKET_TICKERS: list(sub.order)}, sub, cmd_id)
        if sub.channel == ORDERBOOK_DELTA:
            for ticker in added:
                self.snapshot(sub, ticker)

    def _over_limit(self, more: int) -> bool:
        held = sum(len(s.tickers) for s in self.subs.values() if s.tickers is not None)
        return bool(self.market_limit) and held + more > self.market_limit

    def _list(self, cmd_id: int | None, _params: dict[str, Any]) -> None:
        listing = [{"channel": s.channel, "sid": s.sid} for s in self.subs.values()]
        self._emit(message(OK, listing, cmd_id=cmd_id), None)


def _tickers(params: dict[str, Any]) -> list[str] | None:
    """The market filter (``None`` when absent); raises :class:`_InvalidParameter` when malformed."""
    one, many = params.get(P_MARKET_TICKER), params.get(P_MARKET_TICKERS)
    if one is not None and many is not None:
        raise _InvalidParameter
    if params.get("market_ids") is not None:  # (markets by id: not served here — said, not ignored)
        raise _InvalidParameter
    if one is not None:
        if not isinstance(one, str) or not one:
            raise _InvalidParameter
        return [one]
    if many is not None:
        if not isinstance(many, list) or not many or not all(isinstance(t, str) for t in many):
            raise _InvalidParameter
        return list(dict.fromkeys(many))
    return None
