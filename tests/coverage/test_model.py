"""``ssmd coverage`` without a recorder: intervals, gaps and disconnects from ledger lines, frames
and lifecycle status from archive data, and markets that matched but were never recorded."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ssmd_connector.coverage.model import Coverage


def ev(ts: int, event: str, **fields: Any) -> dict[str, Any]:
    return {"ts": f"2026-12-01T00:00:{ts:02d}.000000Z", "feed": "kalshi", "shard": "kalshi-0", "event": event, **fields}


def ts(n: int) -> str:
    return f"2026-12-01T00:00:{n:02d}.000000Z"


def test_intervals_gaps_and_disconnects_follow_the_ledger() -> None:
    cov = Coverage()
    for e in [
        ev(0, "discovered", series=["KXA"]),
        ev(1, "market_added", ticker="KXA-1", reason="rest"),
        ev(1, "market_added", ticker="KXA-2", reason="rest"),
        ev(2, "subscribed", sid=1, channel="orderbook_delta", tickers=["KXA-1", "KXA-2"]),
        ev(2, "subscribed", sid=2, channel="trade", tickers=["KXA-1", "KXA-2"]),
        ev(3, "gap", sid=1, tickers=["KXA-1"]),
        ev(4, "disconnect", reason="eof"),
        ev(5, "subscribed", sid=1, channel="orderbook_delta", tickers=["KXA-1"]),
        ev(6, "markets_changed", sid=1, channel="orderbook_delta", action="add_markets", tickers=["KXA-2"]),
        ev(7, "market_removed", ticker="KXA-1", reason="settled"),  # (leaves the trade sid: none here)
        ev(8, "markets_changed", sid=1, channel="orderbook_delta", action="delete_markets", tickers=["KXA-1"]),
    ]:
        cov.event(e)
    cov.frame(ts(2), {"type": "orderbook_delta", "sid": 1, "msg": {"market_ticker": "KXA-1"}})
    cov.frame(ts(6), {"type": "market_lifecycle_v2", "msg": {"market_ticker": "KXA-1", "event_type": "settled"}})
    cov.frame(ts(8), {"type": "market_lifecycle_v2", "msg": {"market_ticker": "KXA-9", "event_type": "created"}})
    cov.frame(ts(8), {"type": "market_lifecycle_v2", "msg": {"market_ticker": "KXB-1", "event_type": "created"}})
    markets = {m.ticker: m for m in cov.finish()}
    one, two = markets["KXA-1"], markets["KXA-2"]
    # Subscribed until Kalshi confirmed the removal, not until the recorder decided it.
    assert one.intervals == [[ts(2), ts(4)], [ts(5), ts(8)]] and one.gaps == 1 and one.disconnects == 1
    assert one.removed == ts(7) and one.removed_reason == "settled" and one.status == "settled"
    assert one.frames == 1 and one.first_frame == ts(2)
    assert two.intervals == [[ts(2), ts(4)], [ts(6), None]] and two.gaps == 0  # still subscribed at the end
    # Created in a discovered series, never subscribed: the loss this report exists to show.
    assert markets["KXA-9"].matched and not markets["KXA-9"].recorded
    assert not markets["KXB-1"].matched  # another series: not a loss


def test_a_crash_that_wrote_no_disconnect_still_ends_the_interval() -> None:
    """A killed recorder writes no ``disconnect``: the next start (and a connection's next
    ``connect``) ends what was subscribed, and the outage shows as a disconnect."""
    cov = Coverage()
    cov.event(ev(1, "subscribed", sid=1, channel="ticker", tickers=["KXA-1"]))
    cov.event(ev(30, "recorder_started"))
    cov.event(ev(31, "connect"))
    cov.event(ev(32, "subscribed", sid=1, channel="ticker", tickers=["KXA-1"]))
    (m,) = cov.finish()
    assert m.intervals == [[ts(1), ts(30)], [ts(32), None]] and m.disconnects == 1


def test_a_window_clips_intervals_but_knows_what_was_subscribed_before_it() -> None:
    cov = Coverage()
    cov.event(ev(1, "market_added", ticker="KXA-1", reason="rest"))
    cov.event(ev(2, "subscribed", sid=1, channel="ticker", tickers=["KXA-1"]))
    cov.event(ev(3, "subscribed", sid=2, channel="ticker", tickers=["KXA-2"]))
    cov.event(ev(4, "unsubscribed", sid=2, tickers=["KXA-2"]))
    cov.frame(ts(20), {"type": "ticker", "msg": {"market_ticker": "KXA-1"}})
    (m,) = cov.finish(start=ts(10), end=ts(40))  # KXA-2 ended before the window: not in it
    assert m.ticker == "KXA-1" and m.recorded and m.intervals == [[ts(10), None]]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["event", "ts", "shard", "sid", "tickers", "ticker", "action", "series", "reason"]),
            st.none() | st.integers() | st.text(max_size=6) | st.lists(st.text(max_size=4) | st.integers(), max_size=3),
        ),
        max_size=20,
    )
)
def test_odd_ledger_lines_never_break_the_report(events: list[dict[str, Any]]) -> None:
    cov = Coverage()
    for e in events:
        cov.event(e)
        cov.frame(str(e.get("ts")), {"type": e.get("event"), "msg": {"market_ticker": e.get("ticker")}})
    for m in cov.finish():
        assert all(len(i) == 2 for i in m.intervals)
