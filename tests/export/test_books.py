"""Property: books rebuilt by the export from random snapshot/delta streams — sub-penny prices,
fractional and signed sizes, deltas before any snapshot, levels driven negative — match an
independent exact model (``Fraction``s, written here), row by row: every delta's size after it,
every change of the top of book, and which rows came from a book that was not known."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ssmd_connector.export.run import Export, Options

from ..archives import T0_NS, rows, ts, write_archive

TICKERS = ("KXA-1", "KXB-2")
price = st.integers(1, 9999).map(lambda t: f"{t // 10000}.{t % 10000:04d}")  # sub-penny ticks
size = st.integers(1, 50_000).map(lambda c: f"{c // 100}.{c % 100:02d}")  # fractional contracts
signed = st.tuples(st.booleans(), size).map(lambda s: ("-" if s[0] else "") + s[1])
side = st.sampled_from(("yes", "no"))
snapshot = st.fixed_dictionaries(
    {"yes": st.lists(st.tuples(price, size), max_size=5), "no": st.lists(st.tuples(price, size), max_size=5)}
)
event = st.one_of(
    st.tuples(st.just("snapshot"), st.sampled_from(TICKERS), snapshot),
    st.tuples(st.just("delta"), st.sampled_from(TICKERS), st.tuples(side, price, signed)),
)

Top = tuple[Fraction | None, Fraction | None, Fraction | None, Fraction | None]


def _top(book: dict[tuple[str, Fraction], Fraction]) -> Top:
    out: list[Fraction | None] = []
    for s in ("yes", "no"):
        prices = [p for (sd, p) in book if sd == s]
        best = max(prices) if prices else None
        out += [best, book[(s, best)] if best is not None else None]
    return out[0], out[1], out[2], out[3]


def _frames(events: list[tuple[str, str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for i, (kind, ticker, body) in enumerate(events):
        ns = T0_NS + i * 1_000_000
        if kind == "snapshot":
            msg: dict[str, Any] = {"market_ticker": ticker, "market_id": ticker}
            for s in ("yes", "no"):
                levels = dict(body[s])  # one size per price, as Kalshi sends
                if levels:
                    msg[f"{s}_dollars_fp"] = [[p, q] for p, q in sorted(levels.items())]
        else:
            s, p, d = body
            msg = {"market_ticker": ticker, "market_id": ticker, "price_dollars": p, "delta_fp": d, "side": s}
        out.append((ns, {"type": f"orderbook_{kind}", "sid": 1, "seq": i + 1, "msg": msg}))
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(event, min_size=1, max_size=60))
def test_export_books_match_an_independent_exact_model(
    tmp_path_factory: Any, events: list[tuple[str, str, Any]]
) -> None:
    root = tmp_path_factory.mktemp("arch")
    out = tmp_path_factory.mktemp("out")
    write_archive(root, _frames(events))
    Export(root, out, Options(tables=frozenset({"book_deltas", "quotes"}))).run()

    books: dict[str, dict[tuple[str, Fraction], Fraction] | None] = dict.fromkeys(TICKERS)
    want_deltas: list[tuple[str, bool, Fraction | None]] = []
    want_quotes: list[tuple[str, bool, Top | None]] = []
    last_top: dict[str, Top | None] = dict.fromkeys(TICKERS)
    for kind, ticker, body in events:
        if kind == "snapshot":
            book = {(s, Fraction(p)): Fraction(q) for s in ("yes", "no") for p, q in dict(body[s]).items()}
            books[ticker] = book
            for s in ("yes", "no"):
                want_deltas += [(ticker, True, Fraction(q)) for p, q in sorted(dict(body[s]).items())]
            if not book:
                want_deltas.append((ticker, True, None))
            last_top[ticker] = _top(book)
            want_quotes.append((ticker, True, last_top[ticker]))
            continue
        s, p, d = body
        known = books[ticker]
        if known is None:
            want_deltas.append((ticker, False, None))
            continue
        book = known
        after = book.get((s, Fraction(p)), Fraction(0)) + Fraction(d)
        if after < 0:  # a desync: the book is no longer known (a marker row), and the delta not applied
            books[ticker] = None
            want_deltas += [(ticker, False, None), (ticker, False, None)]
            want_quotes.append((ticker, False, None))
            continue
        if after:
            book[(s, Fraction(p))] = after
        else:
            book.pop((s, Fraction(p)), None)
        want_deltas.append((ticker, True, after))
        if _top(book) != last_top[ticker]:
            last_top[ticker] = _top(book)
            want_quotes.append((ticker, True, last_top[ticker]))

    got_deltas = [
        (r["market"], bool(r["book_known"]), None if r["size_after"] is None else Fraction(r["size_after"]))
        for r in rows(out, "book_deltas")
    ]
    got_quotes = [
        (
            r["market"],
            bool(r["book_known"]),
            tuple(
                None if r[c] is None else Fraction(r[c]) for c in ("yes_bid", "yes_bid_size", "no_bid", "no_bid_size")
            )
            if r["book_known"]
            else None,
        )
        for r in rows(out, "quotes")
    ]
    assert got_deltas == want_deltas
    assert got_quotes == want_quotes
    for r in rows(out, "quotes"):  # the asks are the other side's bids, mirrored
        if r["book_known"] and r["no_bid"] is not None:
            assert r["yes_ask"] == 1 - r["no_bid"] and r["yes_ask_size"] == r["no_bid_size"]


def test_a_gap_in_the_ledger_makes_the_book_unknown_from_the_frame_that_revealed_it(tmp_path: Path) -> None:
    snap = {"market_ticker": "KXA-1", "market_id": "a", "yes_dollars_fp": [["0.4000", "10.00"]]}

    def delta(seq: int, q: str) -> dict[str, Any]:
        msg = {"market_ticker": "KXA-1", "market_id": "a", "price_dollars": "0.4000", "delta_fp": q, "side": "yes"}
        return {"type": "orderbook_delta", "sid": 3, "seq": seq, "msg": msg}

    frames = [
        (T0_NS, {"type": "orderbook_snapshot", "sid": 3, "seq": 1, "msg": snap}),
        (T0_NS + 1000, delta(2, "1.00")),
        (T0_NS + 2000, delta(5, "1.00")),  # seq 3 and 4 were lost
        (T0_NS + 3000, delta(6, "1.00")),
        (T0_NS + 4000, {"type": "orderbook_snapshot", "sid": 3, "seq": 7, "msg": snap}),
        (T0_NS + 5000, delta(8, "2.50")),
    ]

    gap = {
        "ts": ts(T0_NS + 2500),
        "event": "gap",
        "sid": 3,
        "channel": "orderbook_delta",
        "got": 5,
        "tickers": ["KXA-1"],
    }
    write_archive(tmp_path / "a", frames, [gap])
    Export(tmp_path / "a", tmp_path / "o", Options(tables=frozenset({"book_deltas", "quotes"}))).run()
    got = [(r["is_snapshot"], r["book_known"], r["size_after"]) for r in rows(tmp_path / "o", "book_deltas")]
    assert [(s, k, None if q is None else str(q)) for s, k, q in got] == [
        (True, True, "10.000000"),
        (False, True, "11.000000"),
        (False, False, None),  # the marker: the book is not known from the revealing frame
        (False, False, None),  # the delta after the gap is not applied to the book it skipped past
        (False, False, None),
        (True, True, "10.000000"),
        (False, True, "12.500000"),
    ]
    marker = rows(tmp_path / "o", "book_deltas")[2]
    assert (marker["side"], marker["price"], marker["is_snapshot"], marker["book_known"]) == (None, None, False, False)
    assert [r["book_known"] for r in rows(tmp_path / "o", "quotes")] == [True, True, False, True, True]


def test_a_gap_is_revealed_only_by_a_frame_of_its_own_markets_whatever_the_selection(tmp_path: Path) -> None:
    """Two connections both use sid 1: KXB-1's seq 5 on the other connection is not the frame that
    revealed the gap on KXA-1/KXC-1's sid 1; KXC-1's seq 5 is, and a ``--tickers KXA-1`` export marks
    KXA-1's rows exactly as the full export does."""

    def frame(kind: str, t: str, seq: int, **msg: Any) -> dict[str, Any]:
        return {"type": f"orderbook_{kind}", "sid": 1, "seq": seq, "msg": {"market_ticker": t, **msg}}

    def delta(t: str, seq: int) -> dict[str, Any]:
        return frame("delta", t, seq, price_dollars="0.40", delta_fp="1", side="yes")

    def snap(t: str) -> dict[str, Any]:
        return frame("snapshot", t, 1, yes_dollars_fp=[["0.40", "10"]])

    frames = [
        (T0_NS, snap("KXA-1")),
        (T0_NS + 100, snap("KXB-1")),
        (T0_NS + 200, snap("KXC-1")),
        (T0_NS + 1500, delta("KXB-1", 5)),  # the other connection's sid 1: reveals nothing
        (T0_NS + 1800, delta("KXA-1", 2)),
        (T0_NS + 2000, delta("KXC-1", 5)),  # revealed the gap (seq 3, 4 lost)
        (T0_NS + 2200, delta("KXA-1", 6)),
    ]
    gap = {"ts": ts(T0_NS + 2500), "event": "gap", "sid": 1, "channel": "orderbook_delta", "got": 5}
    write_archive(tmp_path / "a", frames, [{**gap, "tickers": ["KXA-1", "KXC-1"]}])

    def known(out: Path, **opts: Any) -> list[tuple[str, bool]]:
        Export(tmp_path / "a", out, Options(tables=frozenset({"book_deltas"}), **opts)).run()
        return [(r["market"], r["book_known"]) for r in rows(out, "book_deltas") if r["side"]]

    full = known(tmp_path / "full")
    assert full == [
        ("KXA-1", True),
        ("KXB-1", True),
        ("KXC-1", True),
        ("KXB-1", True),
        ("KXA-1", True),  # before the revealing frame: known
        ("KXC-1", False),
        ("KXA-1", False),
    ]
    assert known(tmp_path / "a-only", tickers=frozenset({"KXA-1"})) == [r for r in full if r[0] == "KXA-1"]
