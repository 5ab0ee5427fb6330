"""The exact order-book model: fixed-point values never pass through a float, the snapshot it
writes states the same book, and messages that are not what Kalshi documents are refused."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ssmd_connector.kalshi.book import BookError, OrderBook, no_prices

# sub-penny prices (deci-cents) and fractional sizes, as Kalshi's fixed-point strings
prices = st.integers(1, 9999).map(lambda t: Decimal(t) / 10000)
sizes = st.integers(-500, 500).map(lambda c: Decimal(c) / 100)
deltas = st.lists(st.tuples(st.sampled_from(["yes", "no"]), prices, sizes), max_size=60)


@given(deltas)
def test_deltas_accumulate_exactly_and_the_snapshot_states_the_same_book(
    changes: list[tuple[str, Decimal, Decimal]],
) -> None:
    book = OrderBook.from_snapshot({"market_id": "m", "yes_dollars_fp": [["0.0100", "1.50"]]})
    model: dict[tuple[str, Decimal], Decimal] = {("yes", Decimal("0.01")): Decimal("1.5")}
    for side, price, delta in changes:
        problem = book.apply_delta({"side": side, "price_dollars": str(price), "delta_fp": str(delta)})
        model[(side, price)] = model.get((side, price), Decimal(0)) + delta
        assert (problem is not None) == (model[(side, price)] < 0)
    expected = {k: v for k, v in model.items() if v != 0}
    assert {("yes", p): q for p, q in book.yes.items()} | {("no", p): q for p, q in book.no.items()} == expected
    again = OrderBook.from_snapshot(book.snapshot_msg("T"))
    assert (again.yes, again.no, again.market_id) == (book.yes, book.no, "m")


def test_best_top_and_an_omitted_side() -> None:
    book = OrderBook.from_snapshot({"yes_dollars_fp": [["0.4100", "3.00"], ["0.4250", "0.50"], ["0.3000", "0"]]})
    assert book.best("yes") == (Decimal("0.425"), Decimal("0.5"))
    assert book.best("no") is None
    assert book.top("yes", 5) == [(Decimal("0.425"), Decimal("0.5")), (Decimal("0.41"), Decimal("3"))]
    assert "no_dollars_fp" not in book.snapshot_msg("T")
    assert book.snapshot_msg("T")["yes_dollars_fp"] == [["0.4100", "3.00"], ["0.4250", "0.50"]]


def test_values_beyond_kalshis_usual_places_are_written_back_exactly() -> None:
    book = OrderBook.from_snapshot({"no_dollars_fp": [["0.12345", "1.005"]]})
    assert book.snapshot_msg("T")["no_dollars_fp"] == [["0.12345", "1.005"]]


def test_yes_priced_no_side_is_turned_back_into_no_prices() -> None:
    assert no_prices({"no_dollars_fp": [["0.6000", "2.00"]]})["no_dollars_fp"] == [["0.4000", "2.00"]]
    assert no_prices({"side": "no", "price_dollars": "0.6100", "delta_fp": "1"})["price_dollars"] == "0.3900"
    assert no_prices({"side": "yes", "price_dollars": "0.6100"})["price_dollars"] == "0.6100"


@pytest.mark.parametrize(
    ("msg", "says"),
    [
        ({"side": "up", "price_dollars": "0.5", "delta_fp": "1"}, "side"),
        ({"side": "yes", "price_dollars": 0.5, "delta_fp": "1"}, "decimal string"),
        ({"side": "yes", "price_dollars": "NaN", "delta_fp": "1"}, "finite"),
        ({"side": "yes", "price_dollars": "0.5", "delta_fp": "x"}, "not a decimal"),
    ],
)
def test_a_malformed_delta_is_refused_with_what_is_wrong(msg: dict[str, object], says: str) -> None:
    with pytest.raises(BookError, match=says):
        OrderBook().apply_delta(msg)


def test_a_malformed_snapshot_is_refused() -> None:
    with pytest.raises(BookError, match=r"\[price, size\]"):
        OrderBook.from_snapshot({"yes_dollars_fp": [["0.5"]]})


def test_a_number_no_price_could_be_is_refused_before_it_overflows() -> None:
    book = OrderBook.from_snapshot({"yes_dollars_fp": [["0.5000", "1.00"]]})
    for text in ("1e999999999", "1e-999999999"):
        with pytest.raises(BookError, match="out of range"):
            book.apply_delta({"side": "yes", "price_dollars": "0.5000", "delta_fp": text})
    assert book.yes == {Decimal("0.5"): Decimal("1")}


def test_change_returns_the_size_after_and_removes_a_level_at_exactly_zero() -> None:
    book = OrderBook.from_snapshot({"market_id": "m", "yes_dollars_fp": [["0.0105", "1.50"]]})
    assert book.change("yes", Decimal("0.0105"), Decimal("-0.75")) == Decimal("0.75")
    assert book.change("yes", Decimal("0.0105"), Decimal("-0.75")) == 0
    assert book.yes == {}
    assert book.change("no", Decimal("0.9"), Decimal("-1")) == Decimal(-1)  # kept: the desync stays visible
    assert book.no == {Decimal("0.9"): Decimal(-1)}
    with pytest.raises(BookError):
        book.change("maybe", Decimal("0.5"), Decimal(1))
