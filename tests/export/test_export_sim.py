"""Ground truth: the simulator recorded by the real recorder (zstd, sealed segments), exported with
``ssmd export`` as a user runs it, checked against the simulator's *true* books — every
``book_snapshots`` row is the true book at its time, every ``quotes`` row the true top of book —
and against the archive's own messages (trades, deltas, tickers, lifecycle); the output read
as-is by DuckDB and polars."""

from __future__ import annotations

import asyncio
import subprocess
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from ssmd_connector.archive.reading import Reader, archive_files
from ssmd_connector.sim import SimConfig, SimServer
from ssmd_connector.sim.market import ONE, Market, MarketEvent, MarketModel

from ..archives import levels, rows
from ..faults.harness import SSMD
from ..kalshi_helpers import KEY, KEY_ID, eventually, record

Book = dict[str, dict[Decimal, Decimal]]


class Witness(MarketModel):
    """The simulator's own model, keeping per market the true book after every snapshot it
    states and every delta it makes (the states the wire must reproduce, in order)."""

    truth: dict[str, list[tuple[str, Book]]]

    def _state(self, m: Market) -> Book:
        return {s: {Decimal(p) / ONE: Decimal(q) / 100 for p, q in m.side(s).items()} for s in ("yes", "no")}

    def snapshot_msg(self, ticker: str) -> dict[str, Any]:
        self.truth.setdefault(ticker, []).append(("snapshot", self._state(self.markets[ticker])))
        return super().snapshot_msg(ticker)

    def _delta(
        self, m: Market, ts: float, side: str | None = None, price: int | None = None, delta: int | None = None
    ) -> MarketEvent:
        event = super()._delta(m, ts, side, price, delta)
        self.truth.setdefault(m.ticker, []).append(("delta", self._state(m)))
        return event


def _top(book: Book, depth: int) -> dict[str, list[tuple[Decimal, Decimal]]]:
    return {s: sorted(book[s].items(), reverse=True)[:depth] for s in ("yes", "no")}


async def test_export_equals_the_simulators_true_books_and_the_archive(tmp_path: Path) -> None:
    sim = SimServer(SimConfig(port=0, markets=12, rate=3000, seed=5, public_keys={KEY_ID: KEY.public_key()}))
    witness = Witness(12, 5)
    witness.truth = {}
    sim.model = witness
    await sim.start()
    try:
        tickers = witness.open_tickers[:4]
        channels = "  channels: [orderbook_delta, ticker, trade, market_lifecycle_v2]\n"
        session = await record(
            tmp_path,
            sim,
            channels + f"  markets: [{', '.join(tickers)}]\n",
            storage=", compression: zstd, rotation: 1m",
        )
        await eventually(lambda: session.recorder.runner.stats.messages > 6000, timeout=20, what="6,000 frames")
        await session.stop()
    finally:
        await sim.stop()
    files = archive_files(session.data)
    assert files and all(f.name.endswith(".jsonl.zst") for f in files)  # compressed, sealed segments

    # the archive, read independently (the project's plain reader, json)
    book_msgs: dict[str, list[tuple[str, str, dict[str, Any]]]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    trade_ids: list[str] = []
    reader = Reader()
    for path in files:
        for _, obj in reader.records(path):
            data = obj["data"]
            kind = data.get("type") if isinstance(data, dict) else None
            counts[str(kind)] += 1
            if kind in ("orderbook_snapshot", "orderbook_delta"):
                book_msgs[data["msg"]["market_ticker"]].append((obj["ts"], kind, data["msg"]))
            elif kind == "trade":
                trade_ids.append(data["msg"]["trade_id"])
    assert reader.problems == 0

    out = tmp_path / "out"
    cmd = [str(SSMD), "export", str(session.data), "--out", str(out), "--snapshot-every", "0.25", "--depth", "5"]
    done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    deltas, quotes, snaps = rows(out, "book_deltas"), rows(out, "quotes"), rows(out, "book_snapshots")
    assert sorted(r["trade_id"] for r in rows(out, "trades")) == sorted(trade_ids)
    assert len(rows(out, "tickers")) == counts["ticker"]
    assert len(rows(out, "lifecycle")) == counts["market_lifecycle_v2"]
    assert sum(not r["is_snapshot"] for r in deltas) == counts["orderbook_delta"]
    assert all(r["book_known"] for r in deltas) and all(r["book_known"] for r in quotes)
    checked_snaps = 0
    for ticker in tickers:
        msgs = book_msgs[ticker]
        truth = witness.truth[ticker]
        starts = [i for i, (kind, _) in enumerate(truth) if kind == "snapshot"]
        assert len(starts) == 1 and msgs[0][1] == "orderbook_snapshot"
        states = [book for _, book in truth[starts[0] :]][: len(msgs)]  # the true book after each message
        assert len(states) == len(msgs)
        # every delta's size after it is the true level size
        mine = [r for r in deltas if r["market"] == ticker and not r["is_snapshot"]]
        for r, (_, _, msg), state in zip(mine, msgs[1:], states[1:], strict=True):
            assert r["size_after"] == state[msg["side"]].get(Decimal(msg["price_dollars"]), Decimal(0))
        # quotes: the true top of book, every time it changed
        tops: list[tuple[Any, ...]] = []
        for state in states:
            top = tuple(x for s in ("yes", "no") for x in (max(state[s].items(), default=(None, None))))
            if not tops or top != tops[-1]:
                tops.append(top)
        got = [
            (r["yes_bid"], r["yes_bid_size"], r["no_bid"], r["no_bid_size"]) for r in quotes if r["market"] == ticker
        ]
        assert [tuple(x for x in q) for q in got] == tops
        # every snapshot row: the true book after the messages received before it
        stamps = [ts for ts, _, _ in msgs]
        exchange = iter(i + 1 for i, (_, kind, _) in enumerate(msgs) if kind == "orderbook_snapshot")
        for r in (r for r in snaps if r["market"] == ticker):
            at = r["ts"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            # an exchange row is its snapshot message (frames of one read share a stamp); an interval
            # row is the book after every message received before its instant
            n = next(exchange) if r["source"] == "exchange" else sum(1 for s in stamps if s < at)
            want = _top(states[n - 1], 5)
            assert (levels(r["yes_bids"]), levels(r["no_bids"])) == (want["yes"], want["no"]), (ticker, r["ts"])
            checked_snaps += 1
    assert checked_snaps > 4 * len(tickers)

    # readable as-is: DuckDB and polars see exact decimals and the partitions
    glob = str(out / "trades" / "*" / "*.parquet")
    total = sum((Decimal(r["count"]) for r in rows(out, "trades")), Decimal(0))
    query = f"SELECT sum(count), count(DISTINCT date) FROM read_parquet('{glob}', hive_partitioning=true)"
    assert duckdb.connect().execute(query).fetchone() == (total, len({r["date"] for r in rows(out, "trades")}))
    polars_sum = pl.scan_parquet(glob, hive_partitioning=True).select(pl.col("count").sum()).collect().item()
    assert Decimal(str(polars_sum)) == total
    for table in ("trades", "book_deltas", "book_snapshots", "quotes", "tickers", "lifecycle"):
        # every table's times (written as deltas) and rows, as pyarrow reads them
        pattern = str(out / table / "*" / "*.parquet")
        times = sorted(r["ts"] for r in rows(out, table))
        got = duckdb.connect().execute(f"SELECT ts FROM read_parquet('{pattern}') ORDER BY ts").fetchall()
        assert [row[0] for row in got] == times, table
        assert pl.scan_parquet(pattern).select(pl.col("ts").sort()).collect().to_series().to_list() == times, table
    assert f"{sum(counts.values()):,} archive lines" in done.stdout
