"""The server session on its own, without sockets: what an exchange answers, and how it numbers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ssmd_connector.kalshi import wire as P
from ssmd_connector.kalshi.server import ServerSession, Subscription

BOOK = {"A-1": {"market_ticker": "A-1", "yes_dollars_fp": [["0.5000", "10.00"]]}, "B-2": {"market_ticker": "B-2"}}


class Wire:
    """What the session emitted, decoded; ``refuse`` makes the I/O layer refuse data frames."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.data_for: list[int | None] = []
        self.session = ServerSession(self.emit, BOOK.get)

    def emit(self, frame: bytes, sub: Subscription | None) -> None:
        self.frames.append(json.loads(frame))
        self.data_for.append(sub.sid if sub is not None else None)

    def cmd(self, **body: Any) -> list[dict[str, Any]]:
        start = len(self.frames)
        self.session.command(json.dumps(body).encode())
        return self.frames[start:]


def test_subscribe_numbers_sids_and_sends_the_books_first() -> None:
    w = Wire()
    out = w.cmd(
        id=1, cmd="subscribe", params={"channels": ["orderbook_delta", "trade"], "market_tickers": ["A-1", "B-2"]}
    )
    assert [f["type"] for f in out] == ["subscribed", "orderbook_snapshot", "orderbook_snapshot", "subscribed"]
    assert out[0] == {"type": "subscribed", "id": 1, "msg": {"channel": "orderbook_delta", "sid": 1}}
    assert [(f["sid"], f["seq"]) for f in out[1:3]] == [(1, 1), (1, 2)]  # one counter per sid
    assert out[3]["msg"] == {"channel": "trade", "sid": 2}


def test_data_goes_to_the_subscriptions_that_want_it_each_with_its_own_seq() -> None:
    w = Wire()
    w.cmd(id=1, cmd="subscribe", params={"channels": ["trade"], "market_tickers": ["A-1"]})
    w.cmd(id=2, cmd="subscribe", params={"channels": ["ticker", "market_lifecycle_v2"]})
    start = len(w.frames)
    for ticker in ("A-1", "B-2"):
        w.session.deliver("trade", ticker, "trade", b'{"t":1}')
        w.session.deliver("ticker", ticker, "ticker", b'{"t":2}')
        w.session.deliver("market_lifecycle_v2", ticker, "market_lifecycle_v2", b'{"t":3}')
    out = w.frames[start:]
    assert [(f["type"], f["sid"], f.get("seq")) for f in out] == [
        ("trade", 1, 1),
        ("ticker", 2, None),  # ticker carries no seq
        ("market_lifecycle_v2", 3, 1),
        ("ticker", 2, None),
        ("market_lifecycle_v2", 3, 2),
    ]
    assert w.data_for[start:] == [1, 2, 3, 2, 3]


def test_update_subscription_adds_deletes_and_snapshots() -> None:
    w = Wire()
    w.cmd(id=1, cmd="subscribe", params={"channels": ["orderbook_delta"], "market_tickers": ["A-1"]})
    out = w.cmd(id=2, cmd="update_subscription", params={"sid": 1, "action": "add_markets", "market_tickers": ["B-2"]})
    assert out[0] == {"type": "ok", "id": 2, "sid": 1, "seq": 2, "msg": {"market_tickers": ["A-1", "B-2"]}}
    assert out[1]["type"] == "orderbook_snapshot" and out[1]["msg"]["market_ticker"] == "B-2"
    out = w.cmd(id=3, cmd="update_subscription", params={"sids": [1], "action": "get_snapshot"})
    assert [(f["id"], f["msg"]["market_ticker"]) for f in out] == [(3, "A-1"), (3, "B-2")]
    out = w.cmd(id=4, cmd="update_subscription", params={"sid": 1, "action": "delete_markets", "market_ticker": "A-1"})
    assert out[0]["msg"] == {"market_tickers": ["B-2"]}
    out = w.cmd(id=5, cmd="unsubscribe", params={"sids": [1]})
    assert out == [{"type": "unsubscribed", "id": 5, "sid": 1, "seq": 7}] and not w.session.subs


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"id": 1, "cmd": "subscribe"}, P.ErrorCode.PARAMS_REQUIRED),
        ({"id": 1, "cmd": "subscribe", "params": {}}, P.ErrorCode.CHANNELS_REQUIRED),
        ({"id": 1, "cmd": "subscribe", "params": {"channels": ["nope"]}}, P.ErrorCode.UNKNOWN_CHANNEL),
        (
            {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"]}},
            P.ErrorCode.MARKET_TICKER_REQUIRED,
        ),
        (
            {"id": 1, "cmd": "subscribe", "params": {"channels": ["ticker"], "market_tickers": "A-1"}},
            P.ErrorCode.INVALID_PARAMETER,
        ),
        ({"id": 1, "cmd": "frobnicate", "params": {}}, P.ErrorCode.UNKNOWN_COMMAND),
        ({"id": 1, "cmd": "unsubscribe", "params": {}}, P.ErrorCode.SIDS_REQUIRED),
        ({"id": 1, "cmd": "unsubscribe", "params": {"sids": [99]}}, P.ErrorCode.UNKNOWN_SID),
        ({"id": 1, "cmd": "update_subscription", "params": {"sid": 1}}, P.ErrorCode.ACTION_REQUIRED),
        ({"id": 1, "cmd": "update_subscription", "params": {"sid": 1, "action": "x"}}, P.ErrorCode.UNSUPPORTED_ACTION),
        ({"id": 1, "cmd": "update_subscription", "params": {"action": "get_snapshot"}}, P.ErrorCode.EXACTLY_ONE_SID),
    ],
)
def test_bad_commands_get_kalshis_error_codes(body: dict[str, Any], code: int) -> None:
    (reply,) = Wire().cmd(**body)
    assert reply == {"type": "error", "id": 1, "msg": {"code": code, "msg": P.ERROR_TEXT[code]}}


def test_not_json_or_too_deep_is_error_1() -> None:
    w = Wire()
    for raw in (b"{nope", b"[" * 5000 + b"]" * 5000, b"[1]"):
        w.session.command(raw)
    assert [f["msg"]["code"] for f in w.frames] == [1, 1, 1]


def test_a_slow_reader_loses_the_subscription_to_error_25_on_its_seq() -> None:
    w = Wire()
    w.cmd(id=1, cmd="subscribe", params={"channels": ["trade"], "market_tickers": ["A-1"]})
    w.session.deliver("trade", "A-1", "trade", b"{}")
    w.session.overflow(w.session.subs[1])
    assert w.frames[-1] == {
        "type": "error",
        "sid": 1,
        "seq": 2,
        "msg": {"code": 25, "msg": "Subscription buffer overflow"},
    }
    assert not w.session.subs
    w.session.overflow(Subscription(1, "trade", None))  # (already gone: nothing more)
    assert len(w.frames) == 3
