"""The market-list walk without sockets: the requests it asks for, the pages it takes and refuses."""

from __future__ import annotations

import json

import pytest

from ssmd_connector.kalshi.markets import BadPage, MarketListing, rest_base_from_ws


def page(tickers: list[str], cursor: str = "") -> bytes:
    return json.dumps({"markets": [{"ticker": t, "status": "active"} for t in tickers], "cursor": cursor}).encode()


def walk(listing: MarketListing, pages: dict[tuple[str | None, str], bytes]) -> list[dict[str, str]]:
    """Answer each request from ``pages`` (keyed by series and cursor); the requests made."""
    asked = []
    while (params := listing.next_request()) is not None:
        asked.append(params)
        listing.receive(pages[params.get("series_ticker"), params.get("cursor", "")])
    return asked


def test_follows_the_cursor_to_the_last_page_and_lists_each_market_once() -> None:
    listing = MarketListing(status="open", limit=2)
    asked = walk(
        listing, {(None, ""): page(["A", "B"], "c1"), (None, "c1"): page(["B", "C"], "c2"), (None, "c2"): page([])}
    )
    assert asked == [
        {"limit": "2", "status": "open"},
        {"limit": "2", "status": "open", "cursor": "c1"},
        {"limit": "2", "status": "open", "cursor": "c2"},
    ]
    assert listing.tickers == ["A", "B", "C"] and listing.pages == 3
    assert listing.next_request() is None


def test_walks_every_series_from_its_own_first_page() -> None:
    listing = MarketListing(status=None, series=["KXA", "KXB"])
    pages: dict[tuple[str | None, str], bytes] = {
        ("KXA", ""): page(["KXA-1"], "n"),
        ("KXA", "n"): page(["KXA-2"]),
        ("KXB", ""): page(["KXB-1"]),
    }
    asked = walk(listing, pages)
    assert [(p.get("series_ticker"), p.get("cursor")) for p in asked] == [("KXA", None), ("KXA", "n"), ("KXB", None)]
    assert all("status" not in p for p in asked)  # no status filter: every market
    assert listing.tickers == ["KXA-1", "KXA-2", "KXB-1"]


def test_entries_without_a_usable_ticker_are_skipped() -> None:
    listing = MarketListing()
    listing.receive(b'{"markets":[{"ticker":"A"},{"ticker":""},{"ticker":7},{},"x",{"ticker":"B"}],"cursor":null}')
    assert listing.tickers == ["A", "B"] and listing.next_request() is None


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"<html>502</html>", "not JSON"),
        (b'{"error":"x"', "not JSON"),
        (b"[1,2]", "not a page of markets"),
        (b'{"error":{"code":"x","message":"boom"}}', "not a page of markets"),
        (b"{}", "not a page of markets"),
        (b'{"markets":[],"cursor":0}', "cursor that is not a string (int)"),
        (b'{"markets":{"ticker":"A"}}', "not a page of markets"),
        (b'{"markets":[],"cursor":5}', "cursor that is not a string (int)"),
        (b'{"markets":' + b"[" * 300 + b"]" * 300 + b"}", "nested too deep"),
    ],
)
def test_a_body_that_is_not_a_page_is_refused_with_what_was_wrong(body: bytes, says: str) -> None:
    with pytest.raises(BadPage, match=says.replace("(", r"\(").replace(")", r"\)")):
        MarketListing().receive(body)


def test_a_cursor_that_never_ends_is_an_error_not_a_silent_truncation() -> None:
    listing = MarketListing(series=["KXA"], max_pages=3)
    for i in range(2):
        listing.receive(page([f"T{i}"], f"c{i}"))
    with pytest.raises(BadPage, match=r"series 'KXA' \(status open\) did not end after 3 pages"):
        listing.receive(page(["T2"], "c2"))


def test_a_cursor_that_comes_back_unchanged_is_an_error_at_once() -> None:
    listing = MarketListing()
    listing.receive(page(["A"], "same"))
    with pytest.raises(BadPage, match="same cursor again"):
        listing.receive(page(["B"], "same"))


def test_no_page_is_taken_after_the_walk_ended() -> None:
    listing = MarketListing()
    listing.receive(page(["A"]))
    with pytest.raises(BadPage, match="after the listing was complete"):
        listing.receive(page(["B"]))


def test_every_status_of_every_series_is_walked_with_the_extra_filters() -> None:
    listing = MarketListing(
        status=["unopened", "open"], series=["KXA"], params={"min_created_ts": 1700}, mve_filter="exclude"
    )
    body = b'{"markets":[{"ticker":"KXA-1","status":"initialized","event_ticker":"KXA-E","x":1}],"cursor":""}'
    asked = []
    while (params := listing.next_request()) is not None:
        asked.append(params)
        listing.receive(body)
    base = {"limit": "1000", "series_ticker": "KXA", "min_created_ts": "1700", "mve_filter": "exclude"}
    assert asked == [{**base, "status": "unopened"}, {**base, "status": "open"}]
    assert listing.markets == [{"ticker": "KXA-1", "status": "initialized", "event_ticker": "KXA-E"}]


@pytest.mark.parametrize(
    ("endpoint", "base"),
    [
        ("wss://external-api-ws.kalshi.com/trade-api/ws/v2", "https://external-api.kalshi.com/trade-api/v2"),
        ("wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2", "https://external-api.demo.kalshi.co/trade-api/v2"),
        ("wss://api.elections.kalshi.com/trade-api/ws/v2", "https://api.elections.kalshi.com/trade-api/v2"),
        ("ws://127.0.0.1:8765/trade-api/ws/v2", "http://127.0.0.1:8765/trade-api/v2"),
    ],
)
def test_rest_base_is_the_websockets_host_over_http(endpoint: str, base: str) -> None:
    assert rest_base_from_ws(endpoint) == base
