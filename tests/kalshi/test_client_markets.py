"""The client session as the market universe changes, without sockets: markets added to and
removed from a live connection, and lifecycle messages handed up."""

from __future__ import annotations

import json
from typing import Any

from ssmd_connector.kalshi.client import ClientSession, Lifecycle, MarketLimit, Pending, Reconnect, ShardPlan

from .test_client import events, frame, rx, sends

CHANNELS = ("orderbook_delta", "trade", "ticker")


def params(effects: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(json.loads(s.encode())["cmd"], json.loads(s.encode())["params"]) for s in sends(effects)]


def live(tickers: tuple[str, ...] = ("A-1", "A-2")) -> ClientSession:
    """A session whose three market channels are subscribed (sids 1, 2, 3)."""
    s = ClientSession(ShardPlan(CHANNELS, tickers, ("market_lifecycle_v2",)), lifecycle=True)
    s.start(0.0)
    for sid, ch in enumerate([*CHANNELS, "market_lifecycle_v2"], start=1):
        rx(s, frame(id=1 if sid < 4 else 2, type="subscribed", msg={"channel": ch, "sid": sid}))
    return s


def test_added_markets_join_order_books_and_tickers_and_get_a_trade_subscription_of_their_own() -> None:
    s = live()
    effects = s.add_markets(1.0, ["B-1", "A-1"])  # A-1 is already carried
    assert params(effects) == [
        ("update_subscription", {"sid": 1, "action": "add_markets", "market_tickers": ["B-1"]}),
        ("subscribe", {"channels": ["trade"], "market_tickers": ["B-1"]}),  # undocumented for trade
        ("update_subscription", {"sid": 3, "action": "add_markets", "market_tickers": ["B-1"]}),
    ]
    ids = [x.id for x in sends(effects)]
    ok = rx(s, frame(id=ids[0], sid=1, seq=1, type="ok", msg={"market_tickers": ["A-1", "A-2", "B-1"]}))
    assert [(e.fields["action"], e.fields["tickers"]) for e in events(ok, "markets_changed")] == [
        ("add_markets", ["B-1"])
    ]
    assert s.subs[1].tickers == ("A-1", "A-2", "B-1")
    rx(s, frame(id=ids[1], type="subscribed", msg={"channel": "trade", "sid": 5}))
    assert s.subs[5].tickers == ("B-1",) and s.markets_subscribed == 3


def test_removed_markets_leave_their_sids_and_a_sid_left_empty_is_unsubscribed() -> None:
    s = live()
    effects = s.remove_markets(1.0, ["A-1"])
    assert params(effects) == [
        ("update_subscription", {"sid": 1, "action": "delete_markets", "market_tickers": ["A-1"]}),
        ("update_subscription", {"sid": 3, "action": "delete_markets", "market_tickers": ["A-1"]}),
    ]  # trade: not documented, the market stays on its sid until the sid has nothing left
    assert params(s.remove_markets(2.0, ["A-2"])) == [
        ("unsubscribe", {"sids": [1]}),
        ("unsubscribe", {"sids": [2]}),
        ("unsubscribe", {"sids": [3]}),
    ]
    assert s.markets == set() and s.markets_subscribed == 0
    gone = rx(s, frame(id=9, sid=2, seq=1, type="unsubscribed"))
    assert events(gone, "unsubscribed")[0].fields["tickers"] == ["A-1", "A-2"]


def test_a_market_removed_while_its_subscription_was_on_its_way_is_removed_on_arrival() -> None:
    s = ClientSession(ShardPlan(("orderbook_delta",), ("A-1", "A-2")))
    s.start(0.0)
    assert s.remove_markets(0.5, ["A-2"]) == []  # no sid yet
    effects = rx(s, frame(id=1, type="subscribed", msg={"channel": "orderbook_delta", "sid": 1}))
    assert params(effects) == [
        ("update_subscription", {"sid": 1, "action": "delete_markets", "market_tickers": ["A-2"]})
    ]


def test_lifecycle_messages_are_handed_up_only_when_following_the_universe() -> None:
    created = frame(type="market_lifecycle_v2", sid=4, seq=1, msg={"market_ticker": "N-1", "event_type": "created"})
    following = live()
    assert [e for e in rx(following, created) if isinstance(e, Lifecycle)] == [
        Lifecycle("market_lifecycle_v2", {"market_ticker": "N-1", "event_type": "created"})
    ]
    fixed = ClientSession(ShardPlan((), (), ("market_lifecycle_v2",)))
    fixed.start(0.0)
    rx(fixed, frame(id=1, type="subscribed", msg={"channel": "market_lifecycle_v2", "sid": 4}))
    assert rx(fixed, created) == ()


def test_a_failed_or_unanswered_addition_reconnects_to_subscribe_the_current_markets_whole() -> None:
    s = live()
    (first, *_) = sends(s.add_markets(1.0, ["B-1"]))
    failed = rx(s, frame(id=first.id, type="error", msg={"code": 11, "msg": "Invalid parameter"}))
    assert [e for e in failed if isinstance(e, Reconnect)]
    s2 = live()
    s2.add_markets(1.0, ["B-1"])
    assert [e for e in s2.tick(1.0 + s2.command_timeout + 1) if isinstance(e, Reconnect)]


def test_a_resubscription_after_an_error_carries_only_the_markets_still_wanted() -> None:
    s = live()
    s.remove_markets(1.0, ["A-1"])
    effects = rx(s, frame(type="error", sid=2, seq=1, msg={"code": 25, "msg": "Subscription buffer overflow"}))
    assert params(effects) == [("subscribe", {"channels": ["trade"], "market_tickers": ["A-2"]})]


def test_a_subscribe_answered_with_a_sid_already_held_merges_and_keeps_its_sequence() -> None:
    """Whether Kalshi merges a repeated subscribe into the existing sid is not documented: if it
    does, the sid keeps its earlier markets and its sequence, and the ledger notes the surprise."""
    s = live()
    rx(s, frame(type="trade", sid=2, seq=1, msg={"market_ticker": "A-1"}))
    (add, *_) = [x for x in sends(s.add_markets(1.0, ["B-1"])) if json.loads(x.encode())["cmd"] == "subscribe"]
    effects = rx(s, frame(id=add.id, type="subscribed", msg={"channel": "trade", "sid": 2}))
    assert events(effects, "protocol_anomaly")
    assert s.subs[2].tickers == ("A-1", "A-2", "B-1") and s.subs[2].last_seq == 1
    assert not events(rx(s, frame(type="trade", sid=2, seq=2, msg={"market_ticker": "B-1"})), "gap")


def test_an_ok_whose_market_list_is_not_a_list_of_tickers_changes_nothing() -> None:
    s = live()
    for n, odd in enumerate((5, "A-1", [1, 2]), start=90):
        s.pending[n] = Pending(n, "update_subscription", {}, 0.0, "snapshot", sid=1)
        rx(s, frame(id=n, sid=1, seq=n, type="ok", msg={"market_tickers": odd}))
        assert s.subs[1].tickers == ("A-1", "A-2")


def test_an_addition_refused_for_its_rate_is_sent_again_after_a_backoff_not_a_reconnect() -> None:
    s = live()
    first = sends(s.add_markets(1.0, ["B-1", "B-2"]))[0]  # order books: update_subscription on sid 1
    refused = rx(s, frame(id=first.id, type="error", msg={"code": 27, "msg": "Too many requests"}), 1.1)
    assert not [e for e in refused if isinstance(e, Reconnect)]
    assert events(refused, "command_retry")[0].fields["in"] == 1.0
    s.remove_markets(1.5, ["B-2"])  # no longer wanted: not asked for again
    assert s.tick(1.9) == []
    again = params(s.tick(2.2))
    assert again == [("update_subscription", {"sid": 1, "action": "add_markets", "market_tickers": ["B-1"]})]
    assert sends(s.tick(2.3)) == []  # nothing more is due


def test_an_addition_over_kalshis_market_limit_is_handed_up_to_go_elsewhere() -> None:
    s = live()
    first = sends(s.add_markets(1.0, ["B-1"]))[0]
    refused = rx(s, frame(id=first.id, type="error", msg={"code": 26, "msg": "Subscription market limit exceeded"}))
    assert [e for e in refused if isinstance(e, MarketLimit)] == [MarketLimit(("B-1",))]
    assert not [e for e in refused if isinstance(e, Reconnect)]
