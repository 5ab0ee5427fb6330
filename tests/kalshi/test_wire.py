"""The wire: frames decoded leniently where they must be, and built in Kalshi's shapes."""

from __future__ import annotations

import json

from ssmd_connector.kalshi import wire as P


def test_parse_tolerates_odd_field_types_but_not_non_objects() -> None:
    env = P.parse(b'{"type":"orderbook_delta","sid":"1","seq":5,"msg":{"ts_ms":"soon"}}')
    assert env is not None and (env.type, env.sid, env.seq) == ("orderbook_delta", None, 5)
    assert P.parse(b"[1,2]") is None and P.parse(b"nope") is None
    head = P.data_head(b'{"type":"ticker","msg":{"market_ticker":"A-1.5","ts_ms":1700000000000}}')
    assert head is not None and head.market_ticker == "A-1.5" and head.ts_ms == 1_700_000_000_000


def test_built_frames_keep_kalshis_field_order() -> None:
    assert P.message("orderbook_delta", {"a": 1}, sid=2, seq=3, cmd_id=4) == (
        b'{"type":"orderbook_delta","id":4,"sid":2,"seq":3,"msg":{"a":1}}'
    )
    assert P.render("trade", b'{"b":2}', sid=5, seq=6) == b'{"type":"trade","sid":5,"seq":6,"msg":{"b":2}}'
    err = json.loads(P.error_frame(P.ErrorCode.BUFFER_OVERFLOW, sid=1, seq=9))
    assert err == {"type": "error", "sid": 1, "seq": 9, "msg": {"code": 25, "msg": "Subscription buffer overflow"}}
    assert json.loads(P.command(7, P.SUBSCRIBE, P.subscribe_params(["ticker"], ["A"]))) == {
        "id": 7,
        "cmd": "subscribe",
        "params": {"channels": ["ticker"], "market_tickers": ["A"]},
    }


def test_the_market_filter_rule_lives_in_one_place() -> None:
    assert P.needs_markets(P.ORDERBOOK_DELTA) and not any(P.needs_markets(c) for c in (P.TICKER, P.TRADE))
    assert {P.ORDERBOOK_DELTA, P.TRADE, P.MARKET_LIFECYCLE_V2, P.MULTIVARIATE_MARKET_LIFECYCLE} == P.SEQUENCED_CHANNELS
