"""``--from``/``--to``: the window is ``[from, to)`` and self-contained — at ``--from`` every book's
state is written (snapshot rows, a ``window`` snapshot, a quote; an unknown book's marker), so
nothing before the window is needed; every row of the full export inside the window is there too."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from ssmd_connector.export.run import Export, Options

from ..archives import T0_NS, rows, ts, write_archive

S = 1_000_000_000


def _snap(t: str, yes: list[list[str]]) -> dict[str, Any]:
    return {"type": "orderbook_snapshot", "sid": 1, "msg": {"market_ticker": t, "yes_dollars_fp": yes}}


def _delta(t: str, price: str, change: str) -> dict[str, Any]:
    msg = {"market_ticker": t, "price_dollars": price, "delta_fp": change, "side": "yes"}
    return {"type": "orderbook_delta", "sid": 1, "msg": msg}


def test_the_window_is_from_inclusive_to_exclusive_and_self_contained(tmp_path: Path) -> None:
    frames = [
        (T0_NS + S // 10, _snap("KXA-1", [["0.40", "10"]])),
        (T0_NS + S // 5, _snap("KXB-1", [["0.30", "5"], ["0.35", "2"]])),
        (T0_NS + S // 4, _delta("KXC-1", "0.50", "1")),  # no snapshot yet: not known
        (T0_NS + S // 2, _delta("KXA-1", "0.45", "3")),  # a tick at T0 + 1 s writes KXA-1
        (T0_NS + 3 * S // 2, _delta("KXA-1", "0.45", "1")),  # a tick at T0 + 2 s would write it again
        (T0_NS + 5 * S // 2, _delta("KXA-1", "0.45", "1")),
    ]
    archive = write_archive(tmp_path / "a", frames)
    start, end = ts(T0_NS + S), ts(T0_NS + 2 * S)
    tables = frozenset({"book_deltas", "quotes", "book_snapshots"})
    assert Export(archive, tmp_path / "full", Options(tables=tables)).run().frames == 6
    read = Export(archive, tmp_path / "w", Options(start=start, end=end, tables=tables)).run().frames
    assert read == 5  # (the archive lines before --to: not the rest of the block read)

    def table(out: Path, name: str) -> list[tuple[Any, ...]]:
        return [tuple(str(v) for k, v in r.items() if k != "date") for r in rows(out, name)]

    snaps = [(r["ts"], r["market"], r["source"], r["yes_bids"]) for r in rows(tmp_path / "w", "book_snapshots")]
    at, until = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (start, end))
    assert [(m, s) for _, m, s, _ in snaps] == [("KXA-1", "window"), ("KXB-1", "window"), ("KXA-1", "interval")]
    assert all(t == at for t, *_ in snaps)  # the tick at exactly --from is in, the one at --to is not
    assert [[(str(lv["price"]), str(lv["size"])) for lv in s[3]] for s in snaps[:2]] == [
        [("0.450000", "3.000000"), ("0.400000", "10.000000")],
        [("0.350000", "2.000000"), ("0.300000", "5.000000")],
    ]
    quotes = [(r["market"], r["book_known"], r["yes_bid"]) for r in rows(tmp_path / "w", "quotes")]
    assert [(m, k, None if b is None else str(b)) for m, k, b in quotes] == [
        ("KXA-1", True, "0.450000"),
        ("KXB-1", True, "0.350000"),
        ("KXC-1", False, None),
        ("KXA-1", True, "0.450000"),  # the delta at T0 + 1.5 s (its size changed)
    ]
    deltas = [(r["market"], r["is_snapshot"], r["book_known"]) for r in rows(tmp_path / "w", "book_deltas")]
    assert deltas == [
        ("KXA-1", True, True),
        ("KXA-1", True, True),
        ("KXB-1", True, True),
        ("KXB-1", True, True),
        ("KXC-1", False, False),  # the marker of a book not known at --from
        ("KXA-1", False, True),
    ]
    for name in tables:  # every row of the full export inside the window is in the window's export
        window = table(tmp_path / "w", name)
        inside = [r for r in rows(tmp_path / "full", name) if at <= r["ts"] < until]
        assert all(tuple(str(v) for k, v in r.items() if k != "date") in window for r in inside), name


def test_rows_are_partitioned_by_their_own_receive_day(tmp_path: Path) -> None:
    """A snapshot tick (or the window's opening) due just before midnight is written when the next
    frame — the next day's — arrives; its row belongs to its own day's partition all the same."""
    midnight = T0_NS - T0_NS % (86_400 * S) + 86_400 * S
    trade = {"type": "trade", "sid": 2, "msg": {"market_ticker": "KXA-1", "yes_price_dollars": "0.4", "count_fp": "1"}}
    frames = [
        (midnight - 3 * S // 2, _snap("KXA-1", [["0.40", "10"]])),
        (midnight - 7 * S // 5, _delta("KXA-1", "0.40", "1")),  # a tick at midnight - 1 s
        (midnight + 3 * S, trade),
    ]
    archive = write_archive(tmp_path / "a", frames)
    tables = frozenset({"book_snapshots", "quotes", "book_deltas"})
    Export(archive, tmp_path / "o", Options(tables=tables)).run()
    Export(archive, tmp_path / "w", Options(start=ts(midnight - S // 2), tables=tables)).run()
    sources = []
    for out in (tmp_path / "o", tmp_path / "w"):
        for name in tables:
            for r in rows(out, name):
                assert str(r["date"]) == r["ts"].date().isoformat(), (out.name, name, r)
        sources += [r["source"] for r in rows(out, "book_snapshots")]
    assert sources == ["exchange", "interval", "window"]


def test_a_clock_stepped_back_across_midnight_leaves_every_row_in_its_own_days_partition(tmp_path: Path) -> None:
    """Receive times are the recorder's wall clock, which can be stepped back: lines of the 25th,
    then the 24th, then the 25th again, in one file (a segment). Every row is written to the
    partition of its own receive day — not to the day of the first and last rows of its batch."""
    midnight = T0_NS - T0_NS % (86_400 * S) + 86_400 * S
    trade = {"type": "trade", "sid": 2, "msg": {"market_ticker": "KXA-1", "yes_price_dollars": "0.4", "count_fp": "1"}}
    day = tmp_path / "a" / ts(midnight)[:10]
    day.mkdir(parents=True)
    times = [midnight + S, midnight - S // 10, midnight + 2 * S]
    (day / "kalshi.jsonl").write_text(
        "".join(f'{{"ts":"{ts(t)}","feed":"kalshi","data":{json.dumps(trade)}}}\n' for t in times)
    )
    Export(tmp_path / "a", tmp_path / "o", Options(tables=frozenset({"trades"}))).run()
    got = rows(tmp_path / "o", "trades")
    assert sorted((str(r["date"]), r["ts"].isoformat()) for r in got) == sorted(
        (r["ts"].date().isoformat(), r["ts"].isoformat()) for r in got
    )
    assert sorted(str(r["date"]) for r in got) == [ts(midnight - S)[:10], ts(midnight)[:10], ts(midnight)[:10]]


def test_the_readmes_book_depth_query_leaves_out_books_not_known_at_that_moment(tmp_path: Path) -> None:
    import duckdb  # noqa: PLC0415

    frames = [
        (T0_NS, _snap("KXA-1", [["0.40", "10"]])),
        (T0_NS + 1, _snap("KXB-1", [["0.40", "10"]])),
        (T0_NS + S // 2, _delta("KXA-1", "0.40", "1")),
        (T0_NS + S // 2 + 1, _delta("KXB-1", "0.40", "1")),
        (T0_NS + 3 * S // 2, _delta("KXA-1", "0.40", "1")),  # revealed the gap: KXA-1 not known from here
        (T0_NS + 3 * S, _delta("KXB-1", "0.40", "1")),
    ]
    gap = {"ts": ts(T0_NS + 3 * S // 2 + 1000), "event": "gap", "sid": 1, "channel": "orderbook_delta"}
    frames = [(ns, {**f, "seq": 5 if ns == T0_NS + 3 * S // 2 else 1}) for ns, f in frames]
    archive = write_archive(tmp_path / "a", frames, [{**gap, "got": 5, "tickers": ["KXA-1"]}])
    Export(archive, tmp_path / "o", Options()).run()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    query = "--" + readme.split("-- book depth at a moment")[1].split("```")[0]
    query = query.replace("datasets/", f"{tmp_path / 'o'}/")

    def depth(at_ns: int) -> list[tuple[str, str, str]]:
        at = ts(at_ns).replace("T", " ").replace("Z", "+00")
        rel = duckdb.sql(query.replace("2026-11-24 10:30:00+00", at))
        assert rel is not None
        return sorted((m, str(p), str(q)) for m, _, p, q in rel.fetchall())

    assert depth(T0_NS + S) == [("KXA-1", "0.400000", "11.000000"), ("KXB-1", "0.400000", "11.000000")]
    assert depth(T0_NS + 5 * S // 2) == [("KXB-1", "0.400000", "11.000000")]
