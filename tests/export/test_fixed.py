"""The books' numbers (integer millionths): Kalshi's text read exactly — the quick reading of its
usual form agrees with the full one for any text at all — finer values refused, and the integers
written to Arrow as the decimals they stand for."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ssmd_connector.export import fixed
from ssmd_connector.export.fixed import _parsed, micros, to_arrow
from ssmd_connector.kalshi.book import BookError

_numberish = st.text(alphabet="0123456789.-+eE _٣", max_size=30)
_kalshi = st.tuples(st.booleans(), st.integers(0, 10**20), st.integers(0, 8), st.integers(0, 10**8)).map(
    lambda t: f"{'-' if t[0] else ''}{t[1]}.{str(t[3]).zfill(t[2])[: t[2]]}" if t[2] else f"{t[1]}"
)


def _outcome(read: object, text: str) -> tuple[str, object]:
    try:
        return "value", read(text)  # type: ignore[operator]
    except BookError as exc:
        return "refused", type(exc).__name__


@given(st.one_of(_numberish, _kalshi))
def test_the_quick_reading_agrees_with_the_full_one_for_any_text(text: str) -> None:
    fixed.MICROS.clear()
    assert _outcome(micros, text) == _outcome(_parsed, text)
    assert _outcome(micros, text) == _outcome(micros, text)  # (and again, from the cache)


@given(_kalshi)
def test_a_value_is_its_exact_millionths_or_refused_when_finer(text: str) -> None:
    exact = Decimal(text)
    in_range = not exact or abs(exact.adjusted()) <= 18  # (past it: refused by ``dec``, as out of range)
    if in_range and exact != exact.quantize(Decimal("0.000001")):
        with pytest.raises(BookError, match="is not a decimal that fits"):
            micros(text)
    elif in_range:
        assert Decimal(micros(text)) == exact * 10**6
    else:
        with pytest.raises(BookError, match="out of range"):
            micros(text)


def test_text_that_is_not_a_finite_decimal_is_refused() -> None:
    for text in ("", "-", ".", "abc", "NaN", "Infinity", "1e400", "0." + "1" * 70):
        with pytest.raises(BookError):
            micros(text)
    with pytest.raises(BookError):
        micros(0.5)  # (a float: never)


@given(st.lists(st.one_of(st.none(), st.integers(-(10**18) + 1, 10**18 - 1)), max_size=20))
def test_millionths_become_the_decimals_they_stand_for(values: list[int | None]) -> None:
    got = to_arrow(values, pa.decimal128(18, 6)).to_pylist()
    assert got == [None if v is None else Decimal(v).scaleb(-6) for v in values]


def test_a_value_past_the_columns_digits_is_an_overflow_never_a_wrong_number() -> None:
    for value in (10**18, -(10**18), 2**63, 10**30):
        with pytest.raises(OverflowError):
            to_arrow([1, value, None], pa.decimal128(18, 6))
