"""The client session on its own, without sockets: commands, sharding, sequence tracking, recovery."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ssmd_connector.kalshi import wire as P
from ssmd_connector.kalshi.client import ClientSession, Event, Pending, Reconnect, Send, ShardPlan, plan_shards

OB = ("orderbook_delta",)
TICKERS = ("A-1", "B-2.5")


def frame(**body: Any) -> bytes:
    return json.dumps(body).encode()


def sends(effects: Any) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def events(effects: Any, kind: str | None = None) -> list[Event]:
    return [e for e in effects if isinstance(e, Event) and (kind is None or e.kind == kind)]


def rx(s: ClientSession, raw: bytes, now: float = 0.0) -> Any:
    """A frame as the connector hands it on: with its envelope (``None``: not a JSON object)."""
    return s.receive(raw, P.parse(raw), now)


def subscribed_session(channels: tuple[str, ...] = OB, tickers: tuple[str, ...] = TICKERS) -> ClientSession:
    s = ClientSession(ShardPlan(channels, tickers))
    start = s.start(0.0)
    assert len(start) == 1
    for sid, ch in enumerate(channels, start=1):
        rx(s, frame(id=1, type="subscribed", msg={"channel": ch, "sid": sid}), 0.0)
    return s


def test_commands_are_kalshi_shaped() -> None:
    assert json.loads(P.command(3, "update_subscription", {"sid": 7, "action": "get_snapshot"})) == {
        "id": 3,
        "cmd": "update_subscription",
        "params": {"sid": 7, "action": "get_snapshot"},
    }
    assert json.loads(P.command(4, "list_subscriptions")) == {"id": 4, "cmd": "list_subscriptions"}
    assert P.subscribe_params(["ticker"]) == {"channels": ["ticker"]}
    assert P.subscribe_params(["trade"], ["X"]) == {"channels": ["trade"], "market_tickers": ["X"]}


def test_plan_shards_splits_markets_and_puts_global_channels_once() -> None:
    tickers = [f"T-{i}" for i in range(45)]
    plans = plan_shards(["orderbook_delta", "trade", "market_lifecycle_v2"], tickers, 20)
    assert [len(p.tickers) for p in plans] == [20, 20, 5]
    assert [p.global_channels for p in plans] == [("market_lifecycle_v2",), (), ()]
    assert all(p.market_channels == ("orderbook_delta", "trade") for p in plans)
    assert [t for p in plans for t in p.tickers] == tickers
    # Lifecycle is subscribed without a market filter, orderbook with tickers.
    groups = plans[0].groups
    assert groups == [(("orderbook_delta", "trade"), tuple(tickers[:20])), (("market_lifecycle_v2",), ())]


def test_plan_without_tickers_subscribes_all_markets_but_never_orderbook() -> None:
    assert plan_shards(["ticker", "market_lifecycle_v2"], [], 10) == [
        ShardPlan(("ticker",), (), ("market_lifecycle_v2",), all_markets=True)
    ]
    with pytest.raises(ValueError, match="orderbook_delta needs market tickers"):
        plan_shards(["orderbook_delta"], [], 10)


def test_subscribed_replies_map_sids_to_channels_and_tickers() -> None:
    s = ClientSession(ShardPlan(("orderbook_delta", "trade"), TICKERS, ("market_lifecycle_v2",)))
    start = s.start(0.0)
    assert [json.loads(x.encode())["params"] for x in sends(start)] == [
        {"channels": ["orderbook_delta", "trade"], "market_tickers": list(TICKERS), "use_yes_price": False},
        {"channels": ["market_lifecycle_v2"]},
    ]
    rx(s, frame(id=1, type="subscribed", msg={"channel": "orderbook_delta", "sid": 1}), 0)
    assert 1 in s.pending  # still owed the trade reply
    rx(s, frame(id=1, type="subscribed", msg={"channel": "trade", "sid": 2}), 0)
    rx(s, frame(id=2, type="subscribed", msg={"channel": "market_lifecycle_v2", "sid": 3}), 0)
    assert not s.pending
    assert {sid: (x.channel, x.tickers) for sid, x in s.subs.items()} == {
        1: ("orderbook_delta", TICKERS),
        2: ("trade", TICKERS),
        3: ("market_lifecycle_v2", ()),
    }
    assert s.markets_subscribed == 2


def test_in_order_sequence_is_silent_and_ok_replies_consume_numbers() -> None:
    s = subscribed_session()
    for seq in (1, 2, 3):
        assert not rx(s, frame(type="orderbook_delta", sid=1, seq=seq, msg={}), 0)
    s.pending[9] = Pending(9, "update_subscription", {}, 0.0, "update")
    out = rx(s, frame(id=9, type="ok", sid=1, seq=4, msg={"market_tickers": ["A-1"]}), 0)
    assert not events(out, "gap")
    assert s.subs[1].tickers == ("A-1",)  # ok carries the full post-update list
    assert not rx(s, frame(type="orderbook_delta", sid=1, seq=5, msg={}), 0)
    assert s.gaps == 0


def test_gap_requests_a_snapshot_for_the_sids_markets() -> None:
    s = subscribed_session()
    rx(s, frame(type="orderbook_snapshot", sid=1, seq=1, msg={"market_ticker": "A-1"}), 0)
    out = rx(s, frame(type="orderbook_delta", sid=1, seq=4, msg={}), 5.0)
    gap = events(out, "gap")
    assert gap and gap[0].fields | {"tickers": None} == {
        "sid": 1,
        "channel": "orderbook_delta",
        "expected": 2,
        "got": 4,
        "missing": 2,
        "tickers": None,
    }
    (req,) = sends(out)
    assert json.loads(req.encode())["params"] == {"sid": 1, "action": "get_snapshot", "market_tickers": list(TICKERS)}
    # A second gap while recovering is recorded but does not send another request.
    out2 = rx(s, frame(type="orderbook_delta", sid=1, seq=9, msg={}), 5.1)
    assert events(out2, "gap") and not sends(out2)
    # Snapshots answering the command (by id) complete the recovery once every market is in.
    assert not events(
        rx(s, frame(type="orderbook_snapshot", id=req.id, sid=1, seq=10, msg={"market_ticker": "A-1"}), 5.2),
        "recovery_completed",
    )
    done = events(
        rx(s, frame(type="orderbook_snapshot", id=req.id, sid=1, seq=11, msg={"market_ticker": "B-2.5"}), 5.3),
        "recovery_completed",
    )
    assert done and done[0].fields["sid"] == 1
    assert s.gaps == 2 and not s.recovering


def test_failed_snapshot_escalates_to_resubscribe_then_reconnect() -> None:
    s = subscribed_session()
    rx(s, frame(type="orderbook_delta", sid=1, seq=1, msg={}), 0)
    (req,) = sends(rx(s, frame(type="orderbook_delta", sid=1, seq=3, msg={}), 0))
    out = rx(s, frame(id=req.id, type="error", msg={"code": 27, "msg": "Too many requests"}), 1)
    (resub,) = sends(out)
    params = {"channels": ["orderbook_delta"], "market_tickers": list(TICKERS), "use_yes_price": False}
    assert json.loads(resub.encode())["params"] == params
    assert 1 not in s.subs  # the old sid is abandoned
    assert events(out, "recovery_failed") and events(out, "resubscribe_requested")
    out = rx(s, frame(id=resub.id, type="error", msg={"code": 26, "msg": "limit"}), 2)
    assert any(isinstance(e, Reconnect) for e in out)


def test_resubscribe_success_is_a_completed_recovery() -> None:
    s = subscribed_session()
    (resub,) = sends(rx(s, frame(type="error", sid=1, seq=1, msg={"code": 25, "msg": "overflow"}), 0))
    out = rx(s, frame(id=resub.id, type="subscribed", msg={"channel": "orderbook_delta", "sid": 2}), 1)
    completed = events(out, "recovery_completed")
    assert completed and completed[0].fields == {"sid": 1, "new_sid": 2, "action": "resubscribe", "id": resub.id}
    assert s.subs[2].tickers == TICKERS


@pytest.mark.parametrize("code", [10, 25])
def test_terminal_errors_resubscribe_only_that_sid(code: int) -> None:
    s = subscribed_session(("orderbook_delta", "trade"))
    rx(s, frame(type="trade", sid=2, seq=1, msg={}), 0)
    out = rx(s, frame(type="error", sid=2, seq=2, msg={"code": code, "msg": "x"}), 1)
    (resub,) = sends(out)
    assert json.loads(resub.encode())["params"]["channels"] == ["trade"]
    assert set(s.subs) == {1}


def test_non_terminal_unsolicited_error_is_only_recorded() -> None:
    s = subscribed_session()
    out = rx(s, frame(type="error", msg={"code": 1, "msg": "Unable to process message"}), 0)
    assert events(out, "error") and not sends(out)


def test_gap_on_a_trade_channel_is_recorded_as_unrecoverable() -> None:
    s = subscribed_session(("trade",))
    rx(s, frame(type="trade", sid=1, seq=1, msg={}), 0)
    out = rx(s, frame(type="trade", sid=1, seq=3, msg={}), 0)
    assert events(out, "gap") and events(out, "recovery_unavailable") and not sends(out)


def test_unanswered_commands_time_out_and_escalate() -> None:
    s = ClientSession(ShardPlan(OB, TICKERS), command_timeout=5)
    s.start(0.0)
    assert not s.tick(4.0)
    out = s.tick(6.0)
    assert events(out, "command_timeout")
    assert any(isinstance(e, Reconnect) for e in out)


def test_unparsable_frames_are_reported_not_fatal() -> None:
    s = subscribed_session()
    assert events(rx(s, b"not json", 0), "unparsed_frame")
    assert events(rx(s, b"[1,2]", 0), "unparsed_frame")
    assert s.unparsed == 2


@given(st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=60))
def test_gaps_counted_exactly(steps: list[int]) -> None:
    """Whatever the server skips, the session reports one gap per jump with the right sizes."""
    s = subscribed_session(("trade",))
    seq, expected_missing = 0, []
    for step in steps:
        seq += step
        out = rx(s, frame(type="trade", sid=1, seq=seq, msg={}), 0)
        gaps = events(out, "gap")
        if step > 1:
            expected_missing.append(step - 1)
            assert gaps and gaps[0].fields["missing"] == step - 1
        else:
            assert not gaps
    assert s.gaps == len(expected_missing)
