"""The market universe without sockets: what is added, released, and where it goes."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ssmd_connector.kalshi.universe import Change, MarketFilter, Universe, series_of


def created(ticker: str, event: str | None = None) -> dict[str, object]:
    meta = {"event_ticker": event} if event else {}
    return {"market_ticker": ticker, "event_type": "created", "open_ts": 1, "additional_metadata": meta}


def settled(ticker: str) -> dict[str, object]:
    return {"market_ticker": ticker, "event_type": "settled", "settled_ts": 2}


def universe(series: tuple[str, ...] = ("KXBTCD",), per: int = 2, combos: bool = False) -> Universe:
    return Universe(MarketFilter(frozenset(series), ("unopened", "open"), combos), per)


def test_series_is_the_event_ticker_up_to_its_first_dash() -> None:
    assert series_of("KXBTCD-26NOV2417") == "KXBTCD" and series_of("KXBTCD-26NOV2417-T90000") == "KXBTCD"


def test_created_markets_of_the_filtered_series_are_added_and_others_ignored() -> None:
    u = universe()
    assert u.lifecycle("market_lifecycle_v2", created("KXBTCD-E1-T1", "KXBTCD-E1"), 0.0) == [
        Change("add", "KXBTCD-E1-T1", 0, "lifecycle")
    ]
    assert u.lifecycle("market_lifecycle_v2", created("KXETHD-E1-T1", "KXETHD-E1"), 0.0) == []
    assert u.lifecycle("market_lifecycle_v2", {"market_ticker": "KXBTCD-E1-T2", "event_type": "activated"}, 0) == []
    assert dict(u.markets) == {"KXBTCD-E1-T1": 0}


def test_event_lifecycle_names_the_series_authoritatively() -> None:
    u = universe(series=("KXSPECIAL",))
    u.lifecycle("event_lifecycle", {"event_ticker": "ODD-E1", "series_ticker": "KXSPECIAL"}, 0.0)
    assert [c.ticker for c in u.lifecycle("market_lifecycle_v2", created("ODD-E1-T1", "ODD-E1"), 0.0)] == ["ODD-E1-T1"]


def test_settled_markets_are_released_and_never_added_again_while_remembered() -> None:
    u = universe(per=10)
    u.lifecycle("market_lifecycle_v2", created("KXBTCD-E1-T1"), 0.0)
    assert u.lifecycle("market_lifecycle_v2", settled("KXBTCD-E1-T1"), 1.0) == [
        Change("remove", "KXBTCD-E1-T1", 0, "settled")
    ]
    # A lagging REST listing still shows it open: its own status is trusted, and it stays released.
    assert u.listed([{"ticker": "KXBTCD-E1-T1", "status": "active"}], 2.0) == []
    assert u.lifecycle("market_lifecycle_v2", created("KXBTCD-E1-T1"), 3.0) == []
    assert not u.markets
    # Forgotten after `remember` seconds: nothing is kept per released market for good.
    u.listed([], 1.0 + u.remember + 1)
    assert not u.released("KXBTCD-E1-T1")


def test_rest_listings_add_what_matches_and_release_what_reports_settled() -> None:
    u = universe(per=10)
    changes = u.listed(
        [
            {"ticker": "KXBTCD-A-1", "status": "active", "event_ticker": "KXBTCD-A"},
            {"ticker": "KXBTCD-A-2", "status": "initialized", "event_ticker": "KXBTCD-A"},
            {"ticker": "KXBTCD-A-3", "status": "closed", "event_ticker": "KXBTCD-A"},
            {"ticker": "KXETHD-B-1", "status": "active", "event_ticker": "KXETHD-B"},
        ],
        0.0,
    )
    assert [(c.action, c.ticker, c.reason) for c in changes] == [
        ("add", "KXBTCD-A-1", "rest"),
        ("add", "KXBTCD-A-2", "rest"),
    ]
    assert [c.action for c in u.listed([{"ticker": "KXBTCD-A-1", "status": "finalized"}], 1.0)] == ["remove"]


def test_combo_markets_are_excluded_unless_asked_for() -> None:
    assert not MarketFilter().matches("KXMVECROSSCATEGORY") and MarketFilter(combos=True).matches("KXMVECROSSCATEGORY")
    assert MarketFilter().matches("KXANY")  # no series: every series


def test_configured_markets_are_kept_whatever_happens() -> None:
    u = universe()
    assert [c.reason for c in u.configure(["KXOTHER-1"])] == ["configured"]
    assert u.lifecycle("market_lifecycle_v2", settled("KXOTHER-1"), 0.0) == []
    assert "KXOTHER-1" in u.markets


def test_markets_fill_connections_in_order_and_a_new_one_opens_when_all_are_full() -> None:
    u = universe(per=2)
    shards = [u.lifecycle("market_lifecycle_v2", created(f"KXBTCD-E-{i}"), 0.0)[0].shard for i in range(5)]
    assert shards == [0, 0, 1, 1, 2]
    # A released market frees room that the next one takes.
    u.lifecycle("market_lifecycle_v2", settled("KXBTCD-E-0"), 1.0)
    assert u.lifecycle("market_lifecycle_v2", created("KXBTCD-E-5"), 1.0)[0].shard == 0


def test_an_emptied_connection_is_retired_and_counts_until_it_is_closed() -> None:
    u = universe(per=2)
    for i in range(3):
        u.lifecycle("market_lifecycle_v2", created(f"KXBTCD-E-{i}"), 0.0)
    u.lifecycle("market_lifecycle_v2", settled("KXBTCD-E-2"), 1.0)
    assert u.shards() == [0] and u.retiring() == [1]
    assert u.lifecycle("market_lifecycle_v2", created("KXBTCD-E-9"), 1.0)[0].shard == 2  # not onto the retiring one
    u.retired(1)
    assert u.retiring() == [] and u.shards() == [0, 2]


def test_too_many_connections_move_the_last_ones_markets_added_first() -> None:
    u = universe(per=2)
    for i in range(8):  # connections 0..3, two markets each
        u.lifecycle("market_lifecycle_v2", created(f"KXBTCD-E-{i}"), 0.0)
    for i in (0, 2, 4):  # one market left on three of them: 5 markets, 4 connections, fine
        assert all(c.reason == "settled" for c in u.lifecycle("market_lifecycle_v2", settled(f"KXBTCD-E-{i}"), 1.0))
    changes = u.lifecycle("market_lifecycle_v2", settled("KXBTCD-E-6"), 1.0)  # 4 markets: 4 > ⌈4/2⌉ + 1
    moves = [(c.action, c.ticker, c.shard) for c in changes if c.reason == "rebalance"]
    assert moves == [("add", "KXBTCD-E-7", 0), ("remove", "KXBTCD-E-7", 3)]  # added first, released after
    assert u.shards() == [0, 1, 2] and u.retiring() == [3]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=300), st.integers(1, 6))
def test_connections_never_exceed_what_the_markets_need_plus_one(ops: list[tuple[bool, int]], per: int) -> None:
    """Whatever order markets are created and settled in: every market is on one live connection
    with at most ``per`` markets, and open connections (retiring ones included) stay within
    ⌈markets / per⌉ + 1 once retiring connections are closed."""
    u = universe(per=per)
    for t, (create, n) in enumerate(ops):
        msg = created(f"KXBTCD-E-{n}") if create else settled(f"KXBTCD-E-{n}")
        u.lifecycle("market_lifecycle_v2", msg, float(t))
        for index in u.retiring():
            u.retired(index)
        assert len(u.shards()) <= max(1, math.ceil(len(u.markets) / per)) + 1
        assert not set(u.shards()) & set(u.retiring())
        assert all(len(u.tickers(i)) <= per for i in u.shards())
        assert sorted(t for i in u.shards() for t in u.tickers(i)) == sorted(u.markets)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(["market_ticker", "event_type", "additional_metadata", "event_ticker", "series_ticker"])


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["market_lifecycle_v2", "multivariate_market_lifecycle", "event_lifecycle"]),
    st.dictionaries(KEYS | st.text(max_size=8), JSON, max_size=6),
)
def test_no_lifecycle_payload_breaks_the_universe(kind: str, msg: dict[str, object]) -> None:
    """Whatever a lifecycle message holds — wrong types, missing members — it is judged, never a crash."""
    u = universe(series=())
    changes = u.lifecycle(kind, msg, 0.0)
    assert all(isinstance(c.ticker, str) and c.ticker for c in changes)
    u.listed([msg, {"ticker": msg.get("market_ticker"), "status": msg.get("event_type")}], 1.0)


def test_payload_members_of_the_wrong_type_are_ignored_not_fatal() -> None:
    u = universe(series=())
    for odd in (["settled"], {"x": 1}, 5, None):
        assert u.lifecycle("market_lifecycle_v2", {"market_ticker": "KXA-1", "event_type": odd}, 0.0) == []
    assert u.listed([{"ticker": "KXA-2", "status": ["active"]}, {"ticker": "KXA-3"}], 0.0) == []


def test_connection_numbers_are_never_reused() -> None:
    """A new connection must never take the number (and so the name) of one still closing."""
    u = universe(per=1)
    for i in range(3):
        u.lifecycle("market_lifecycle_v2", created(f"KXBTCD-E-{i}"), 0.0)
    u.lifecycle("market_lifecycle_v2", settled("KXBTCD-E-1"), 1.0)
    assert u.retiring() == [1]
    u.retired(1)
    assert u.lifecycle("market_lifecycle_v2", created("KXBTCD-E-9"), 1.0)[0].shard == 3


def test_markets_kalshi_refused_on_a_connection_go_to_another_and_it_takes_no_more() -> None:
    u = universe(per=3)
    for i in range(3):
        u.lifecycle("market_lifecycle_v2", created(f"KXBTCD-E-{i}"), 0.0)
    changes = u.limited(0, ["KXBTCD-E-2"])  # Kalshi held connection 0 at two markets
    assert [(c.action, c.ticker, c.shard, c.reason) for c in changes] == [
        ("remove", "KXBTCD-E-2", 0, "market_limit"),
        ("add", "KXBTCD-E-2", 1, "market_limit"),
    ]
    assert u.lifecycle("market_lifecycle_v2", created("KXBTCD-E-3"), 0.0)[0].shard == 1  # not 0 again
